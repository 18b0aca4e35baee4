"""What every benchmark module shares: the run context and the result row.

A benchmark module exposes ``run(ctx: Context) -> list[Row]``; each row is one measurement with
the baseline it is compared against in the same run, so the ratio is meaningful on any machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Context:
    device: str = "cpu"
    quick: bool = False

    def pick(self, quick, full):
        """The quick-mode or full-size value of a setting."""
        return quick if self.quick else full


@dataclass
class Row:
    group: str  # which question this answers, e.g. "inactive hook point dispatch"
    name: str  # what was timed
    seconds: float  # median seconds per call
    baseline: str = ""  # the name of the row this one is compared against
    baseline_seconds: float | None = None
    sizes: dict = field(default_factory=dict)
    unit: str = "s/call"  # or e.g. "patches/s" when `seconds` holds a rate's inverse
    note: str = ""
    # rows timed in paired rounds (``timing.time_paired``): each round's seconds per call, and the
    # spread of the per-round ratios to the baseline (``Spread.to_json``: median, q1, q3, min, max,
    # rounds); the ratio is then that median, not seconds / baseline_seconds
    rounds_s: list[float] | None = None
    ratio_spread: dict | None = None

    @property
    def ratio(self) -> float | None:
        if self.ratio_spread is not None:
            return self.ratio_spread["median"]
        if not self.baseline_seconds:
            return None
        return self.seconds / self.baseline_seconds

    def to_json(self) -> dict:
        d = asdict(self)
        if self.rounds_s is None:  # rows timed otherwise keep the fields they always had
            del d["rounds_s"], d["ratio_spread"]
        d["ratio"] = self.ratio
        return d


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
