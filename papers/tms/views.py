"""Interactive versions of the TMS figures, for the run's ``report.html`` (built from the run folder's files).

* ``tms_hidden_n5_m2.png``: each feature's direction in the 2-d hidden space per sparsity; hover a
  feature for its index, importance, norm and angle (``tms_hidden_n5_m2.safetensors``).
* ``tms_dimensionality.png``: D* and every feature's D_i against 1/(1-S); hover a dot for the feature
  and its D_i (``n200_m20_dimensionality.safetensors``).
* ``tms_phase_diagram.png``: the phase per (density, relative importance) cell; hover for the phase and
  the trained weights (``phase.safetensors``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from hooked.io import read_json, read_tensors
from hooked.views import View, heatmap, lines, series
from hooked.views.charts import lines_panel

# the PNG's palette (analyses/superposition/plots.py: phase_figure)
PHASE_COLORS = ["#bdbdbd", "#4c72b0", "#dd8452", "#ffffff"]
PHASE_SHORT = ["not repr.", "dedicated", "superpos.", "neither"]


def _viridis(t: float) -> str:
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    c = [round(a + f * (b - a)) for a, b in zip(stops[i], stops[i + 1])]
    return "#{:02x}{:02x}{:02x}".format(*c)


def hidden_space(folder: Path, n: int = 5, m: int = 2) -> View:
    """One panel per sparsity: feature directions W_i in the hidden plane (best restart)."""
    t = read_tensors(folder / f"tms_hidden_n{n}_m{m}.safetensors")
    W, importance, density = t["W"].double(), t["importance"].double(), t["density"].double()
    best = read_json(folder / "tms.json")[f"n{n}_m{m}"]["best"]
    panels = []
    colors = [_viridis(0.9 * i / max(1, n - 1)) for i in range(n)]
    for k in range(W.shape[0]):
        w = W[k]
        norms = w.norm(dim=0)
        tips = [
            f"feature {i}, importance {float(importance[i]):.3g}\n|W_i| = {float(norms[i]):.4g}, angle "
            f"{math.degrees(math.atan2(float(w[1, i]), float(w[0, i]))):.1f} deg"
            for i in range(n)
        ]
        label = best[k]["label"] if k < len(best) else ""
        s = series(
            w[0], w[1], mode="markers", tips=tips, colors=colors, from_origin=True, size=4, color="#444"
        )
        panels.append(
            lines_panel(
                [s], title=f"1-S = {float(density[k]):.3g}: {label}", equal=True, circle=True, height=230
            )
        )
    return View(
        panels,
        f"n={n}, m={m}: feature directions in the hidden space "
        "(colour: feature index, darker = more important)",
    )


def dimensionality(folder: Path) -> View:
    """D* (line) and each feature's D_i (dots) against 1/(1-S), with the reference fractions."""
    from analyses.superposition.geometry import REFERENCE_FRACTIONS

    t = read_tensors(folder / "n200_m20_dimensionality.safetensors")
    x = (1 / t["density"].double()).tolist()
    D = t["D_i"].double()
    k, n = D.shape
    dots = series(
        [x[i] for i in range(k) for _ in range(n)],
        D.flatten(),
        name="D_i (each feature)",
        mode="markers",
        tips=[f"feature {j} at 1-S = {1 / x[i]:.3g}" for i in range(k) for j in range(n)],
        size=2.2,
        opacity=0.4,
    )
    star = series(x, t["D_star"].double(), name="D* = m / ||W||_F^2", color="#000000")
    return lines(
        [dots, star],
        title="n=200, m=20: dimensions per feature",
        xlabel="1 / (1 - S)",
        ylabel="dimensions per feature",
        xlog=True,
        hlines=[(float(f), str(f)) for f in REFERENCE_FRACTIONS],
        width=640,
        height=380,
    )


def phase_diagram(folder: Path) -> View:
    """The n = 2, m = 1 phase diagram; hover a cell for its phase and trained weights."""
    from analyses.superposition.phase import PHASE_NAMES

    t = read_tensors(folder / "phase.safetensors")
    phases, W = t["phases"], t["W"].double()
    dens, imp = t["densities"].double(), t["importances"].double()
    order = list(range(len(imp)))[::-1]  # highest importance at the top, as in the PNG
    tips = [
        [
            f"phase: {PHASE_NAMES[int(phases[r, c])]}\nW = [{W[r, c, 0, 0]:.3g}, {W[r, c, 0, 1]:.3g}]"
            for c in range(len(dens))
        ]
        for r in order
    ]
    return heatmap(
        phases[order].double(),
        rows=[f"{float(imp[r]):.3g}" for r in order],
        cols=[f"{float(d):.3g}" for d in dens],
        scale={"kind": "categorical", "colors": PHASE_COLORS, "names": [PHASE_NAMES[i] for i in range(4)]},
        xlabel="feature density 1 - S",
        ylabel="relative importance",
        value_label="phase code",
        text=[[PHASE_SHORT[int(phases[r, c])] for c in range(len(dens))] for r in order],
        tips=tips,
        cell_w=70,
        cell_h=24,
        title="n=2, m=1 phase diagram",
    )


def report_figures(folder: Path) -> dict[str, Callable[[], View]]:
    """The interactive figures of a ``hooked repro tms`` folder, by the PNG each stands for."""
    folder = Path(folder)
    return {
        "tms_hidden_n5_m2.png": lambda: hidden_space(folder),
        "tms_dimensionality.png": lambda: dimensionality(folder),
        "tms_phase_diagram.png": lambda: phase_diagram(folder),
    }
