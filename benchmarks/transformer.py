"""A GPT-2-sized transformer, raw vs hooked (benchmarks/gpt.py), in the same run.

2. forward with no hooks attached;
3. ``run_with_cache`` of every hook point, and with a names filter of one hook;
4. an editing hook at every hook point (returns its input) vs no hooks.
GPT-2 small at batch 8 x 128 on a GPU; on a CPU batch 1 x 128 (full) or a tiny model (--quick).
"""

from __future__ import annotations

import torch

from benchmarks.common import Context, Row
from benchmarks.gpt import GPTConfig, pair
from benchmarks.timing import time_interleaved


def sizes(ctx: Context) -> tuple[GPTConfig, int, int]:
    if ctx.quick:
        return GPTConfig.tiny(), 2, 32
    if torch.device(ctx.device).type == "cuda":
        return GPTConfig.small(), 8, 128
    return GPTConfig.small(), 1, 128


def run(ctx: Context) -> list[Row]:
    cfg, batch, seq = sizes(ctx)
    raw, hk = pair(cfg, ctx.device)
    tokens = torch.randint(0, cfg.d_vocab, (batch, seq), device=ctx.device)
    n_points = len(hk.hook_dict)
    size = dict(layers=cfg.n_layers, d_model=cfg.d_model, batch=batch, seq=seq, hook_points=n_points)

    def identity(act, hook):
        return act

    every = [(lambda n: True, identity)]
    one = "blocks.0.hook_resid_post" if cfg.n_layers else None
    with torch.no_grad():
        assert torch.equal(raw(tokens), hk(tokens))
        fns = {
            "raw": lambda: raw(tokens),
            "hooked": lambda: hk(tokens),
            "cache_all": lambda: hk.run_with_cache(tokens),
            "cache_one": lambda: hk.run_with_cache(tokens, names_filter=one),
            "edit_all": lambda: hk.run_with_hooks(tokens, fwd_hooks=every),
        }
        rounds = ctx.pick(2, 5)
        repeats = ctx.pick(3, 5 if torch.device(ctx.device).type == "cpu" else 20)
        t = time_interleaved(fns, device=ctx.device, rounds=rounds, repeats=repeats, budget_s=0.0)
    base = t["raw"].median_s
    label = f"GPT-2-{'small' if cfg.d_model == 768 else 'tiny'} ({n_points} hook points)"
    return [
        Row("forward, no hooks attached", f"{label} hooked", t["hooked"].median_s, "raw", base, size),
        Row(
            "run_with_cache",
            f"{label}: cache every hook point",
            t["cache_all"].median_s,
            "raw forward",
            base,
            size,
        ),
        Row(
            "run_with_cache",
            f"{label}: cache one hook ({one})",
            t["cache_one"].median_s,
            "raw forward",
            base,
            size,
        ),
        Row(
            "editing hooks",
            f"{label}: identity edit at every hook point",
            t["edit_all"].median_s,
            "raw forward",
            base,
            size,
        ),
    ]
