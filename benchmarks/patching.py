"""Activation patching throughput: every (layer, position) patch of the residual stream, batched
into few forwards (interventions.patching.patching_sweep) vs one forward per patch (the serial
pattern of TransformerLens's ``generic_activation_patch``). Reported as seconds per patch; the
batched row's ratio is batched / serial time per patch (below 1: faster).
"""

from __future__ import annotations

import torch

from benchmarks.common import Context, Row
from benchmarks.gpt import GPTConfig, pair
from benchmarks.timing import time_call
from interventions.patching import patching_sweep


def run(ctx: Context) -> list[Row]:
    cuda = torch.device(ctx.device).type == "cuda"
    if ctx.quick:
        cfg, seq, chunk = GPTConfig.tiny(), 8, None
    elif cuda:
        cfg, seq, chunk = GPTConfig.small(), 32, 128
    else:
        cfg, seq, chunk = (
            GPTConfig(n_layers=4, d_model=256, n_heads=4, d_mlp=1024, d_vocab=4096, n_ctx=256),
            16,
            None,
        )
    _, model = pair(cfg, ctx.device)
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, cfg.d_vocab, (1, seq), generator=g).to(ctx.device)
    source = torch.randint(0, cfg.d_vocab, (1, seq), generator=g).to(ctx.device)
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(cfg.n_layers)]
    answer = int(model(source)[0, -1].argmax())

    def metric(logits):
        return logits[:, -1, answer]

    def sweep(batched: bool):
        return patching_sweep(
            model, base, source, hooks, metric, positions=range(seq), batched=batched, chunk=chunk
        )

    batched, serial = sweep(True), sweep(False)
    assert torch.allclose(batched, serial, atol=1e-3, rtol=1e-3), "batched and serial patching disagree"
    n_patches = len(hooks) * seq
    tb = time_call(lambda: sweep(True), device=ctx.device, repeats=ctx.pick(3, 5), inner=1, warmup=1)
    ts = time_call(lambda: sweep(False), device=ctx.device, repeats=ctx.pick(2, 3), inner=1, warmup=1)
    size = dict(layers=cfg.n_layers, d_model=cfg.d_model, seq=seq, patches=n_patches, chunk=chunk)
    per_b, per_s = tb.median_s / n_patches, ts.median_s / n_patches
    return [
        Row(
            "activation patching",
            f"serial: one forward per patch ({1 / per_s:.0f} patches/s)",
            per_s,
            "",
            None,
            size,
            unit="s/patch",
        ),
        Row(
            "activation patching",
            f"batched sweep ({1 / per_b:.0f} patches/s, {per_s / per_b:.1f}x the serial rate)",
            per_b,
            "serial",
            per_s,
            size,
            unit="s/patch",
        ),
    ]
