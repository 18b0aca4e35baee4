"""The interactive version of ``patching.png`` for the run's ``report.html`` (from ``patching.json``):
the restored fraction per residual stream x position, diverging around zero, the clean / corrupted
tokens on the columns; hover for the exact fraction and the patched logit difference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hooked.io import read_json
from hooked.views import View, patching_grid
from hooked.views.page import as_numpy


def patching(folder: Path) -> View:
    data = read_json(folder / "patching.json")
    restored = as_numpy(data["restored"], "restored")
    # byte-level BPE pieces as the PNG shows them: a leading space as "·", a newline as "\n"
    clean, corrupt = (
        [t.replace("Ġ", "·").replace("Ċ", "\\n") for t in data[k]] for k in ("clean_tokens", "corrupt_tokens")
    )
    cols = [c if c == k else f"{c} / {k}" for c, k in zip(clean, corrupt)]
    return patching_grid(
        restored,
        rows=data["labels"],
        cols=cols[: restored.shape[1]],
        title=(
            f"activation patching, clean -> corrupt: clean LD {data['clean_logit_diff']:.3g}, corrupt LD "
            f"{data['corrupt_logit_diff']:.3g}"
        ),
        xlabel="position (clean / corrupted token)",
        ylabel="residual stream",
        value_label="restored (patched - corrupt) / (clean - corrupt)",
    )


def report_figures(folder: Path) -> dict[str, Callable[[], View]]:
    """The interactive figures of a ``hooked repro lm`` folder (the stages that ran)."""
    folder = Path(folder)
    return {"patching.png": lambda: patching(folder)} if (folder / "patching.json").exists() else {}
