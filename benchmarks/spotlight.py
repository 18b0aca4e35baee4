"""Spotlight resonance throughput: the vectorised kernels against the per-plane loop of the definition.

Every row's ``seconds`` is the time per (sample x plane x angle) element, so rows with different
numbers of planes compare directly; the note gives the throughput and the time of one call.

* ``naive``: :func:`analyses.spotlight.naive_spotlight`, a Python loop over planes building the
  d x d rotations ``exp(theta G)`` (the paper's formulation), the baseline.
* ``dense``: the [samples, planes, angles] tensor of dot products, in chunks.
* ``arcs``: the default; each (sample, plane) becomes one arc of angles, counted with bincount.

Sizes: d = 64 with all 4032 ordered planes (the issue's "d = 64, all planes, on a CPU in
seconds"), and d = 768 with 20,000 sampled planes (the naive loop on 8 of them).
"""

from __future__ import annotations

import time

import torch

from analyses.spotlight import SpotlightCounter, make_planes, naive_spotlight
from benchmarks.common import Context, Row
from hooked.typecheck import disabled as typechecks_disabled


def _time(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    dev = ctx.device
    configs = ctx.pick(
        [(16, 500, None, 60, True)],
        [(64, 1000, None, 64, True), (768, 1000, 20_000, 8, False)],
    )
    R = 100
    repeats = ctx.pick(2, 3)
    for d, n, max_planes, naive_planes, with_dense in configs:
        g = torch.Generator().manual_seed(0)
        acts = (torch.randn(n, d, generator=g) * torch.linspace(0.2, 2.0, d)).to(dev)
        basis = torch.eye(d)
        planes = make_planes(d, "perm", max_planes, seed=0)
        P = planes.shape[0]
        group = f"SRM d={d}, {P} perm planes, {R} angles, {n} samples"
        sizes = dict(d=d, n=n, planes=P, angles=R)

        def count(method: str, which=planes) -> None:
            SpotlightCounter(basis, epsilon=0.5, n_angles=R, planes=which, method=method).add(acts)

        with typechecks_disabled():
            per: dict[str, tuple[float, int]] = {}
            subset = planes[:naive_planes]
            t = _time(lambda: naive_spotlight(acts.cpu(), basis, subset, epsilon=0.5, n_angles=R), 1)
            per["naive per-plane loop"] = (t, subset.shape[0])
            if with_dense:
                per["dense [n, planes, angles]"] = (_time(lambda: count("dense"), repeats), P)
            per["arcs (default)"] = (_time(lambda: count("arcs"), repeats), P)
        base = per["naive per-plane loop"]
        base_s = base[0] / (n * base[1] * R)
        for name, (t, p) in per.items():
            elem = t / (n * p * R)
            rows.append(
                Row(
                    group,
                    name,
                    elem,
                    "naive per-plane loop",
                    base_s,
                    sizes | {"planes_timed": p},
                    unit="s/(sample*plane*angle)",
                    note=f"{1 / elem:.3g} sample*plane*angles/s; {t:.3g} s for {p} planes",
                )
            )
    return rows
