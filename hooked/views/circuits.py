"""Pictures of circuits: an offline HTML view of edge scores and faithfulness, and a PNG graph.

They read the results of :mod:`interventions.circuits` by their attributes (an ``EdgeScores``:
``senders``, ``receivers``, ``scores``, ``what``; a ``Circuit``: ``edges``, ``what``, ``nodes(graph)``),
so this package, which sits on the core, imports nothing above it.

* :func:`circuit_view`: a :class:`hooked.views.View` (offline HTML, hover for exact values) made of
  the views' own charts: the senders x receivers score grid (non-edges hatched), the circuit's
  edges as bars, and the faithfulness curve against the number of edges kept.
* :func:`draw_circuit`: the circuit as a graph image (PNG, matplotlib): nodes in rows by their rank
  in the model (embeddings at the bottom, logits on top), one arrow per edge, red for a positive
  score and blue for a negative one, wider for a larger ``|score|``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hooked.circuit_graph import Graph
from hooked.io import save_figure
from hooked.views.charts import bars_panel, heatmap_panel, lines_panel, series
from hooked.views.page import View


def circuit_view(
    scores: Any,
    circuit: Any = None,
    curve: Mapping[str, Sequence[float]] | None = None,
    *,
    title: str = "circuit",
) -> View:
    """Scores of every edge, the circuit's edges and the faithfulness curve, as one view."""
    panels = [
        heatmap_panel(
            scores.scores,
            rows=scores.senders,
            cols=scores.receivers,
            title=f"edge scores ({scores.what})" if scores.what else "edge scores",
            xlabel="receiver",
            ylabel="sender",
            value_label="score",
            note="hatched: not an edge (the sender does not run before the receiver)",
        )
    ]
    if circuit is not None and circuit.edges:
        panels.append(
            bars_panel(
                [v for _, _, v in circuit.edges],
                [f"{s} -> {r}" for s, r, _ in circuit.edges],
                title=f"circuit: {len(circuit.edges)} edges ({circuit.what})",
                value_label="score",
            )
        )
    if curve is not None:
        data = [series(curve["n"], curve["faithfulness"], name="metric(circuit) / metric(full model)")]
        if "normalized" in curve:
            data.append(
                series(curve["n"], curve["normalized"], name="(circuit - corrupt) / (clean - corrupt)")
            )
        panels.append(
            lines_panel(
                data,
                title="faithfulness against edges kept",
                xlabel="edges kept (top n by |score|)",
                ylabel="faithfulness",
                hlines=[(1.0, "full model")],
            )
        )
    return View(panels, title)


def draw_circuit(path: str | os.PathLike, circuit: Any, graph: Graph, *, title: str = "") -> Path:
    """Write the circuit as a PNG graph (see the module docstring); returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rank: dict[str, int] = {s.name: s.rank for s in graph.senders}
    for r in graph.receivers:
        rank.setdefault(r.node, r.rank)
    nodes = circuit.nodes(graph)
    rows: dict[int, list[str]] = {}
    for n in nodes:
        rows.setdefault(rank[n], []).append(n)
    levels = sorted(rows)
    pos = {}
    for y, level in enumerate(levels):
        names = rows[level]
        for x, n in enumerate(names):
            pos[n] = ((x + 1) / (len(names) + 1), y)
    width = max((len(v) for v in rows.values()), default=1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * width), max(3.0, 0.9 * len(levels))))
    top = max((abs(v) for _, _, v in circuit.edges), default=1.0) or 1.0
    for s, r, v in circuit.edges:
        node = graph.receiver(r).node
        (x0, y0), (x1, y1) = pos[s], pos[node]
        kind = r[len(node) :].strip("<>") if r != node else ""
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops=dict(
                arrowstyle="-|>",
                color="tab:red" if v >= 0 else "tab:blue",
                lw=0.5 + 3.5 * abs(v) / top,
                alpha=0.8,
                shrinkA=12,
                shrinkB=12,
                connectionstyle="arc3,rad=0.08",
            ),
        )
        if kind:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, kind, fontsize=7, color="0.3")
    for n, (x, y) in pos.items():
        ax.text(
            x, y, n, ha="center", va="center", fontsize=8, bbox=dict(boxstyle="round", fc="white", ec="0.4")
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(levels) - 0.4)
    ax.axis("off")
    ax.set_title(title or circuit.what or "circuit", fontsize=10)
    return save_figure(path, fig)
