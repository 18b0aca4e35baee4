"""Timing helpers: warm-up, CUDA synchronisation, medians over repeats.

``time_call(fn)`` returns the median seconds per call of ``fn``, measured in blocks of
``inner`` calls so that sub-microsecond functions are timed above the clock's resolution. On a
CUDA device the blocks are timed with ``torch.cuda.Event`` after a synchronise.
"""

from __future__ import annotations

import gc
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


@dataclass
class Spread:
    """A ratio's middle and spread over rounds: the median, the quartiles and the extremes."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    rounds: int

    def to_json(self) -> dict:
        return {
            "median": self.median,
            "q1": self.q1,
            "q3": self.q3,
            "min": self.lo,
            "max": self.hi,
            "rounds": self.rounds,
        }

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        """The spread of ``values`` (quartiles by linear interpolation between the sorted values)."""
        if not values:
            raise ValueError("Spread.of: no values")
        v = sorted(values)
        if len(v) == 1:
            q1 = q3 = v[0]
        else:
            q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
        return cls(statistics.median(v), q1, q3, v[0], v[-1], len(v))


def paired_ratios(arm_s: list[float], base_s: list[float]) -> Spread:
    """The spread of ``arm / base`` taken round by round (both timed in the same round)."""
    if len(arm_s) != len(base_s):
        raise ValueError(f"paired_ratios: {len(arm_s)} rounds of the arm, {len(base_s)} of the base")
    return Spread.of([a / b for a, b in zip(arm_s, base_s)])


@dataclass
class Paired:
    """One arm of ``time_paired``: seconds per call and its ratio to the base arm, round by round."""

    median_s: float  # median over rounds of the round's seconds per call
    rounds_s: list[float]  # each round's seconds per call (the median of its repeats), in round order
    ratio: Spread  # of the per-round ratios to the base arm
    repeats: int  # calls timed in each round

    def to_json(self) -> dict:
        return {
            "median_s": self.median_s,
            "rounds_s": self.rounds_s,
            "ratio": self.ratio.to_json(),
            "repeats": self.repeats,
        }


def round_order(names: list[str], r: int) -> list[str]:
    """The order of round ``r``: the arms rotated by ``r`` (every arm takes every place in turn)
    and, every other cycle of ``len(names)`` rounds, reversed (so each arm also follows others)."""
    k = r % len(names)
    order = names[k:] + names[:k]
    return order[::-1] if (r // len(names)) % 2 else order


def time_paired(
    fns: dict[str, Callable[[], object]],
    *,
    base: str,
    rounds: int,
    repeats: int = 1,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    clock: Callable[[], float] = time.perf_counter,
    collect: bool = True,
) -> dict[str, Paired]:
    """Time arms in ``rounds`` rounds, each round every arm in turn (``round_order``: a rotating
    order, so that a drift of the machine or the state one arm leaves behind falls on every arm
    alike); each arm's ratio to ``base`` is taken within each round and summarised over rounds.

    ``warmup`` calls of each arm precede the first round; in a round each arm is called
    ``repeats`` times, each call timed on its own, and the round's value is their median.
    ``collect``: a full garbage collection before every timed call, so that no call pays for
    garbage an earlier arm left (the collector stays on during the call: an arm's own garbage is
    its cost). ``clock`` is the timer (seconds), replaceable for tests.
    """
    if base not in fns:
        raise ValueError(f"time_paired: base {base!r} is not one of the arms {list(fns)}")
    if rounds < 1 or repeats < 1:
        raise ValueError(f"time_paired: rounds and repeats must be >= 1, got {rounds}, {repeats}")
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync()
    per: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in round_order(names, r):
            fn, samples = fns[name], []
            for _ in range(repeats):
                if collect:
                    gc.collect()
                sync()
                start = clock()
                fn()
                sync()
                samples.append(clock() - start)
            per[name].append(statistics.median(samples))
    return {
        name: Paired(statistics.median(s), s, paired_ratios(s, per[base]), repeats) for name, s in per.items()
    }
