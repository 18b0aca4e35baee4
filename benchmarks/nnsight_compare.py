"""nnsight on the same models: an empty trace and a trace that saves every layer, against the
raw forward and against the hooked equivalent (``run_with_cache`` of every block's output).

Skipped (no rows) when nnsight is not installed.
"""

from __future__ import annotations

import torch

from benchmarks.common import Context, Row
from benchmarks.gpt import pair
from benchmarks.timing import time_interleaved
from benchmarks.transformer import sizes


def run(ctx: Context) -> list[Row]:
    try:
        from nnsight import NNsight
    except ImportError:
        return []
    cfg, batch, seq = sizes(ctx)
    raw, hk = pair(cfg, ctx.device)
    traced = NNsight(raw)
    tokens = torch.randint(0, cfg.d_vocab, (batch, seq), device=ctx.device)
    n = cfg.n_layers
    outputs = [f"blocks.{i}.hook_resid_post" for i in range(n)]
    size = dict(layers=n, d_model=cfg.d_model, batch=batch, seq=seq)

    with torch.no_grad():
        saved = nnsight_save_blocks(traced, tokens, n)
        _, cache = hk.run_with_cache(tokens, names_filter=outputs)
        assert all(torch.allclose(s, cache[o], atol=1e-5) for s, o in zip(saved, outputs))
        t = time_interleaved(
            {
                "raw": lambda: raw(tokens),
                "nnsight_empty": lambda: nnsight_empty(traced, tokens),
                "hooked": lambda: hk(tokens),
                "nnsight_save": lambda: nnsight_save_blocks(traced, tokens, n),
                "hooked_cache": lambda: hk.run_with_cache(tokens, names_filter=outputs),
            },
            device=ctx.device,
            rounds=ctx.pick(2, 5),
            repeats=ctx.pick(3, 5),
            budget_s=0.0,
        )
    base = t["raw"].median_s
    return [
        Row(
            "nnsight comparison",
            "nnsight: empty trace",
            t["nnsight_empty"].median_s,
            "raw forward",
            base,
            size,
        ),
        Row(
            "nnsight comparison", "hooked: forward, no hooks", t["hooked"].median_s, "raw forward", base, size
        ),
        Row(
            "nnsight comparison",
            f"nnsight: save {n} block outputs",
            t["nnsight_save"].median_s,
            "raw forward",
            base,
            size,
        ),
        Row(
            "nnsight comparison",
            f"hooked: run_with_cache of {n} block outputs",
            t["hooked_cache"].median_s,
            "raw forward",
            base,
            size,
        ),
    ]


def nnsight_empty(traced, tokens):
    with traced.trace(tokens):
        pass


def nnsight_save_blocks(traced, tokens, n: int) -> list:
    saved = []
    with traced.trace(tokens):
        for i in range(n):
            saved.append(traced.blocks[i].output.save())
    return saved
