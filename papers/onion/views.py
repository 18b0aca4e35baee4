"""The interactive version of ``onion.png`` for the run's ``report.html`` (from ``onion.json``):
accuracy against the state size per method, error bars over seeds; hover for mean, std, seeds and
training steps."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from hooked.io import read_json
from hooked.views import View, lines, series
from hooked.views.page import number

COLORS = {
    "model": "#000000",
    "unigram": "#1f77b4",
    "bigram": "#ff7f0e",
    "das": "#9467bd",
    "onion": "#d62728",
    "linear probe": "#1f77b4",
    "mlp probe": "#2ca02c",
    "onion probe": "#d62728",
}


def size_curves(folder: Path) -> View:
    data = read_json(folder / "onion.json")
    cells, cell_kind = data["table"], data.get("settings", {}).get("cell", "rnn")
    sizes = sorted(int(s) for s in cells)
    columns = list(dict.fromkeys(c for s in sizes for c in cells[str(s)]))
    curves = []
    for col in columns:
        pts = [(s, cells[str(s)][col]) for s in sizes if col in cells[str(s)]]
        tips = [
            f"seeds {c['n']}, training steps {', '.join(map(str, c.get('steps', []))) or '?'}" for _, c in pts
        ]
        curves.append(
            series(
                [math.log2(s) for s, _ in pts],
                [number(c["mean"]) for _, c in pts],
                err=[number(c["std"]) for _, c in pts],
                name="model (no intervention)" if col == "model" else col,
                tips=tips,
                color=COLORS.get(col),
                dash="5 3" if col == "model" else ("2 3" if "probe" in col else ""),
            )
        )
    return lines(
        curves,
        title="Repeat task: interventions at the final encoder state",
        xlabel=f"{cell_kind.upper()} state size N (log2)",
        ylabel="exact-match accuracy",
        xticks=[(math.log2(s), str(s)) for s in sizes],
        ylim=[-0.02, 1.02],
        width=620,
        height=380,
    )


def report_figures(folder: Path) -> dict[str, Callable[[], View]]:
    """The interactive figure of a ``hooked repro onion`` folder."""
    return {"onion.png": lambda: size_curves(Path(folder))}
