"""Per-step hooks on a GRU: what the fused-segment design costs against the fused kernel.

Forward time of ``HookedGRU`` with no hook, an editing hook at 1 and at 3 steps (fused segments
between them), an editing hook at every step (unrolled cells), and a read-only hook at every step
(fused, then handed over), against the raw ``nn.GRU`` and a Python loop over ``nn.GRUCell`` (what
per-step hooks cost without the design), at sequence lengths 9 and 256.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved
from hooked import at_step, read_only
from hooked.models.rnn import HookedGRU


def _edit(h, hook):
    return h * 1.0


def _read(h, hook):
    return None


def run(ctx: Context) -> list[Row]:
    dev = ctx.device
    batch, d = ctx.pick((16, 64), (32, 128))
    rows = []
    with torch.no_grad():
        torch.manual_seed(0)
        raw = nn.GRU(d, d, batch_first=True).to(dev)
        hk = HookedGRU(d, d).to(dev)
        hk.load_state_dict(raw.state_dict())
        cell = nn.GRUCell(d, d).to(dev)
        cell.weight_ih.copy_(raw.weight_ih_l0)
        cell.weight_hh.copy_(raw.weight_hh_l0)
        cell.bias_ih.copy_(raw.bias_ih_l0)
        cell.bias_hh.copy_(raw.bias_hh_l0)
        for steps in ctx.pick((9, 64), (9, 256)):
            x = torch.randn(batch, steps, d, device=dev)

            def unrolled():
                h = x.new_zeros(batch, d)
                outs = []
                for t in range(steps):
                    h = cell(x[:, t], h)
                    outs.append(h)
                return torch.stack(outs, 1)

            mid = steps // 2
            three = sorted({1, mid, steps - 2})
            fns = {
                "nn.GRU (fused kernel)": lambda: raw(x),
                "HookedGRU, no hook": lambda: hk(x),
                "HookedGRU, edit at 1 step": lambda: hk.run_with_hooks(
                    x, fwd_hooks=[("hook_h_l0", at_step(mid, _edit))]
                ),
                "HookedGRU, edit at 3 steps": lambda: hk.run_with_hooks(
                    x, fwd_hooks=[("hook_h_l0", at_step(three, _edit))]
                ),
                "HookedGRU, edit at every step": lambda: hk.run_with_hooks(
                    x, fwd_hooks=[("hook_h_l0", _edit)]
                ),
                "HookedGRU, read every step (run_with_cache)": lambda: hk.run_with_cache(
                    x, names_filter="hook_h_l0"
                ),
                "HookedGRU, read every step (read_only hook)": lambda: hk.run_with_hooks(
                    x, fwd_hooks=[("hook_h_l0", read_only(_read))]
                ),
                "unrolled nn.GRUCell loop": unrolled,
            }
            assert torch.allclose(fns["HookedGRU, edit at every step"]()[0], raw(x)[0], atol=1e-5)
            t = time_interleaved(fns, device=dev, rounds=ctx.pick(2, 5), repeats=ctx.pick(3, 9))
            base = t["nn.GRU (fused kernel)"].median_s
            sizes = dict(batch=batch, hidden=d, seq_len=steps)
            for name, timing in t.items():
                rows.append(
                    Row(
                        f"GRU forward with per-step hooks, seq len {steps}",
                        name,
                        timing.median_s,
                        "nn.GRU (fused kernel)",
                        base,
                        dict(sizes),
                    )
                )
    return rows
