"""torch.compile: a compiled hooked model (no hooks, and with fixed hooks) vs a compiled raw model,
and what happens when hooks change after compiling (they must take effect, not be ignored).

The rows record the steady-state time per forward, and the time of the first call after a hook
is added (a guard fails and dynamo recompiles) with whether the hook's effect was seen.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Context, Row
from benchmarks.gpt import GPTConfig, pair
from benchmarks.timing import time_interleaved


def run(ctx: Context) -> list[Row]:
    cfg = (
        GPTConfig.tiny()
        if ctx.quick
        else GPTConfig(n_layers=4, d_model=256, n_heads=4, d_mlp=1024, d_vocab=4096, n_ctx=256)
    )
    batch, seq = (2, 32) if ctx.quick else (8, 128)
    raw, hk = pair(cfg, ctx.device)
    tokens = torch.randint(0, cfg.d_vocab, (batch, seq), device=ctx.device)
    size = dict(layers=cfg.n_layers, d_model=cfg.d_model, batch=batch, seq=seq)
    torch._dynamo.reset()
    c_raw, c_hk = torch.compile(raw), torch.compile(hk)
    with torch.no_grad():
        ref = raw(tokens)
        c_raw(tokens), c_hk(tokens)  # compile both
        scale = 2.0

        def double(act, hook):
            return act * scale

        t = time_interleaved(
            {"raw": lambda: c_raw(tokens), "hooked": lambda: c_hk(tokens)},
            device=ctx.device,
            rounds=ctx.pick(2, 5),
            repeats=ctx.pick(3, 10),
            budget_s=0.0,
        )
        # a hook added after compiling: the first call recompiles, and the hook must act
        handle = hk.add_hook("hook_embed", double)
        start = time.perf_counter()
        out = c_hk(tokens)
        _sync(ctx)
        recompile_s = time.perf_counter() - start
        took_effect = not torch.allclose(out, ref)
        fixed = time_interleaved(
            {"hooked+hook": lambda: c_hk(tokens)},
            device=ctx.device,
            rounds=ctx.pick(1, 3),
            repeats=ctx.pick(3, 10),
            budget_s=0.0,
        )
        handle.remove()
        back_to_plain = torch.allclose(c_hk(tokens), ref, atol=1e-5)
    if not (took_effect and back_to_plain):
        raise AssertionError(
            "torch.compile ignored a hook change: a hook added or removed after compiling had no effect"
        )
    base = t["raw"].median_s
    return [
        Row(
            "torch.compile",
            "compiled hooked model, no hooks",
            t["hooked"].median_s,
            "compiled raw",
            base,
            size,
        ),
        Row(
            "torch.compile",
            "compiled hooked model, one editing hook",
            fixed["hooked+hook"].median_s,
            "compiled raw",
            base,
            size,
        ),
        Row(
            "torch.compile",
            "first call after adding a hook (recompiles; the hook took effect)",
            recompile_s,
            "compiled raw",
            base,
            size,
            note=f"hook took effect: {took_effect}; removed again -> original output: {back_to_plain}",
        ),
    ]


def _sync(ctx: Context) -> None:
    if torch.device(ctx.device).type == "cuda":
        torch.cuda.synchronize()
