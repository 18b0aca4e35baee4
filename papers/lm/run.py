"""What every stage of ``hooked repro lm`` gets: the loaded model, the run folder and the options.

A stage is a plain function ``fn(ctx: LMRun) -> dict`` (a JSON-able summary); :mod:`papers.lm.repro`
lists the stages in the order they may run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from hooked.io import RunDir


@dataclass
class LMRun:
    """The loaded model, the run folder and the command's options (a :class:`papers.lm.repro.LMRepro`)."""

    model: Any
    run_dir: RunDir
    options: Any
    quick: bool = False
    notes: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def int_list(text: str, option: str) -> list[int]:
    """``"2,14,26"`` -> ``[2, 14, 26]``, with an error naming the option."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"--{option.replace('_', '-')}: expected comma-separated integers, got {text!r}"
        ) from None
