"""Timing helpers: warm-up, CUDA synchronisation, medians over repeats.

``time_call(fn)`` returns the median seconds per call of ``fn``, measured in blocks of
``inner`` calls so that sub-microsecond functions are timed above the clock's resolution. On a
CUDA device the blocks are timed with ``torch.cuda.Event`` after a synchronise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_s: float
    repeats: int
    inner: int
    spread: float  # (max - min) / median over the repeats

    def to_json(self) -> dict:
        return {
            "median_s": self.median_s,
            "repeats": self.repeats,
            "inner": self.inner,
            "spread": self.spread,
        }


def time_call(
    fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    repeats: int = 15,
    inner: int | None = None,
    warmup: int = 3,
    budget_s: float = 0.05,
) -> Timing:
    """Median seconds per call of ``fn`` over ``repeats`` blocks of ``inner`` calls.

    ``inner`` defaults to as many calls as fit in ``budget_s`` (at least one).
    """
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    if inner is None:
        start = time.perf_counter()
        fn()
        sync()
        once = max(time.perf_counter() - start, 1e-9)
        inner = max(1, min(100_000, int(budget_s / once)))
    samples = []
    for _ in range(repeats):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(inner):
                fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(begin.elapsed_time(end) / 1e3 / inner)
        else:
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - start) / inner)
    med = statistics.median(samples)
    return Timing(med, repeats, inner, (max(samples) - min(samples)) / med if med else 0.0)


def time_interleaved(
    fns: dict[str, Callable[[], object]], *, device: str | torch.device = "cpu", rounds: int = 5, **kw
) -> dict[str, Timing]:
    """Time several functions in alternating rounds, so drifts of the machine hit all alike.

    Each function's result is the median over rounds of its per-round median.
    """
    per: dict[str, list[Timing]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            per[name].append(time_call(fn, device=device, **kw))
    out = {}
    for name, ts in per.items():
        meds = [t.median_s for t in ts]
        med = statistics.median(meds)
        out[name] = Timing(
            med, sum(t.repeats for t in ts), ts[0].inner, (max(meds) - min(meds)) / med if med else 0.0
        )
    return out
