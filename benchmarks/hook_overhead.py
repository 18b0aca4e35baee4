"""Hook overhead: an inactive hook point's dispatch cost and whole forwards with hook points.

1. Nanoseconds per call of ``hooked.HookPoint`` with nothing attached, against TransformerLens's
   ``HookPoint``, ``nn.Identity`` and a bare function call.
2. Forward of ToyReLU and of a residual MLP stack, written once with hook points (all inactive)
   and once without, timed in the same run.
"""

from __future__ import annotations

import statistics
import timeit

import torch
from torch import nn

import hooked
from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved
from hooked.models import ToyReLU
from hooked.typecheck import disabled as typechecks_disabled


def run(ctx: Context) -> list[Row]:
    return dispatch(ctx) + forwards(ctx)


def dispatch(ctx: Context) -> list[Row]:
    """Per-call cost, timed as the statement ``f(x)`` (no wrapper around the call)."""
    x = torch.zeros(4, device=ctx.device)
    fns = {
        "bare function": (lambda a: a),
        "nn.Identity": nn.Identity(),
        "hooked.HookPoint": hooked.HookPoint(),
    }
    try:
        from transformer_lens.hook_points import HookPoint as TLHookPoint

        fns["transformer_lens HookPoint"] = TLHookPoint()
    except ImportError:
        pass
    number = ctx.pick(20_000, 200_000)
    per: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(ctx.pick(3, 9)):  # interleaved rounds
        for name, f in fns.items():
            per[name].append(timeit.timeit("f(x)", globals={"f": f, "x": x}, number=number) / number)
    med = {k: statistics.median(v) for k, v in per.items()}
    return [
        Row(
            "inactive hook point dispatch",
            name,
            t,
            "nn.Identity",
            med["nn.Identity"],
            {"calls": number},
            note="no hook attached",
        )
        for name, t in med.items()
    ]


class RawToyReLU(nn.Module):
    """ToyReLU's forward without hook points (the uninstrumented reference)."""

    def __init__(self, model: ToyReLU):
        super().__init__()
        self.W, self.b = model.W, model.b

    def forward(self, x):
        h = torch.einsum("ihf,bif->bih", self.W, x)
        return torch.relu(torch.einsum("ihf,bih->bif", self.W, h) + self.b)


class MLPStack(nn.Module):
    """Residual MLP blocks; ``hooks=True`` places four hook points per block."""

    def __init__(self, d: int, n_layers: int, hooks: bool):
        super().__init__()
        self.layers = nn.ModuleList(MLPBlock(d, hooks) for _ in range(n_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class HookedMLPStack(hooked.HookedModule, MLPStack):
    pass


class MLPBlock(nn.Module):
    def __init__(self, d: int, hooks: bool):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)
        make = hooked.HookPoint if hooks else nn.Identity
        self.hook_resid_pre, self.hook_pre, self.hook_post, self.hook_out = (make() for _ in range(4))
        self.hooks = hooks

    def forward(self, x):
        if self.hooks:
            x = self.hook_resid_pre(x)
            pre = self.hook_pre(self.up(self.ln(x)))
            post = self.hook_post(torch.relu(pre))
            return x + self.hook_out(self.down(post))
        return x + self.down(torch.relu(self.up(self.ln(x))))


def forwards(ctx: Context) -> list[Row]:
    rows = []
    dev = ctx.device
    with torch.no_grad():
        # ToyReLU: many instances, tiny matrices (dispatch-bound: the worst case for overhead)
        n, m, inst, batch = ctx.pick((20, 5, 8, 256), (200, 20, 16, 1024))
        toy = ToyReLU(n, m, inst, seed=0).to(dev)
        raw_toy = RawToyReLU(toy)
        x = torch.rand(batch, inst, n, device=dev)
        sizes = dict(n_features=n, d_hidden=m, n_instances=inst, batch=batch)

        def unchecked():
            with typechecks_disabled():
                return toy(x)

        t = time_interleaved(
            {"raw": lambda: raw_toy(x), "hooked": lambda: toy(x), "unchecked": unchecked},
            device=dev,
            rounds=ctx.pick(2, 5),
            repeats=ctx.pick(5, 15),
        )
        rows.append(
            Row(
                "forward, no hooks attached",
                "ToyReLU hooked (3 hook points)",
                t["unchecked"].median_s,
                "ToyReLU raw",
                t["raw"].median_s,
                sizes,
                note="shape checks off",
            )
        )
        rows.append(
            Row(
                "forward, no hooks attached",
                "ToyReLU hooked + jaxtyping shape checks",
                t["hooked"].median_s,
                "ToyReLU raw",
                t["raw"].median_s,
                sizes,
                note="the default",
            )
        )

        for d, n_layers, batch in ctx.pick([(32, 4, 8)], [(64, 8, 8), (512, 8, 64)]):
            raw = MLPStack(d, n_layers, hooks=False).to(dev)
            hk = HookedMLPStack(d, n_layers, hooks=True).to(dev)
            hk.load_state_dict(raw.state_dict())
            x = torch.randn(batch, d, device=dev)
            assert torch.equal(raw(x), hk(x))
            t = time_interleaved(
                {"raw": lambda: raw(x), "hooked": lambda: hk(x)},
                device=dev,
                rounds=ctx.pick(2, 5),
                repeats=ctx.pick(5, 15),
            )
            n_points = len(hk.hook_dict)
            sizes = dict(d=d, layers=n_layers, batch=batch, hook_points=n_points)
            rows.append(
                Row(
                    "forward, no hooks attached",
                    f"MLP stack d={d} x {n_layers}, batch {batch}, hooked ({n_points} hook points)",
                    t["hooked"].median_s,
                    f"MLP stack d={d} raw",
                    t["raw"].median_s,
                    sizes,
                )
            )
    return rows
