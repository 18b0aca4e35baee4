"""Interactive versions of the spotlight figures, for the run's ``report.html`` (from ``results.json``).

* ``srm_eps{e}.png``: the mean SRM over planes (band: +-1 std) against the spotlight angle, one panel
  per basis and a line per model; hover a point for the model, angle, value, verdict and the paper's
  claim.
* ``verdicts.png``: z of the axis harmonic per model x (epsilon, basis) on a diverging scale; hover for
  the verdict found and the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hooked.io import read_json
from hooked.views import View, heatmap, series
from hooked.views.charts import lines_panel
from hooked.views.page import number

PI_TICKS = [(k * math.pi / 2, label) for k, label in enumerate(["0", "π/2", "π", "3π/2", "2π"])]


def _results(folder: Path) -> dict[str, Any]:
    data = read_json(folder / "results.json")
    try:
        return data["results"]
    except (KeyError, TypeError):
        raise ValueError(f"{folder / 'results.json'}: no 'results' of a spotlight run") from None


def srm_curves(folder: Path, epsilon: str) -> View:
    """Mean +- std SRM curves at ``epsilon`` (the key in results.json), one panel per basis."""
    res = _results(folder)
    models = res["models"]
    bases = list(next(iter(models.values()))["srm"][epsilon])
    panels = []
    for basis in bases:
        curves, reference = [], None
        for name, m in models.items():
            cell = m["srm"][epsilon][basis]
            srm = cell["srm"]
            if "mean" not in srm:
                continue
            mean = [number(v) for v in srm["mean"]]
            std = [number(v) for v in srm["std"]]
            n = len(mean)
            theta = [2 * math.pi * k / n for k in range(n)] + [2 * math.pi]
            mean, std = mean + mean[:1], std + std[:1]  # the curve closes at 2 pi
            v = cell["verdict"]
            note = f"verdict {v['verdict']} (z {number(v['z']):+.2f}); paper: {cell['paper']}"
            curves.append(
                series(
                    theta,
                    mean,
                    name=f"{name}: {v['verdict']}",
                    lo=[a - b for a, b in zip(mean, std)],
                    hi=[a + b for a, b in zip(mean, std)],
                    tips=[note] * len(theta),
                    mode="lines+markers",
                    size=2,
                )
            )
            reference = srm.get("isotropic_reference", reference)
        hl = [(number(reference), f"isotropic {number(reference):.3g}")] if reference is not None else []
        panels.append(
            lines_panel(
                curves,
                title=f"{basis} basis",
                xlabel="spotlight angle θ",
                ylabel="SRM (fraction in cone)",
                xticks=PI_TICKS,
                hlines=hl,
                width=560,
            )
        )
    return View(panels, f"SRM at the bottleneck, ε={epsilon}: mean ± std over planes")


def verdicts(folder: Path) -> View:
    """z per model x (epsilon, basis): the verdict table as a grid."""
    res = _results(folder)
    table = res["table"]
    models = list(dict.fromkeys(r["model"] for r in table))
    cols = list(dict.fromkeys((r["epsilon"], r["basis"]) for r in table))
    cell = {(r["model"], r["epsilon"], r["basis"]): r for r in table}
    z = [[number(cell[(m, e, b)]["z"]) if (m, e, b) in cell else math.nan for e, b in cols] for m in models]
    tips = [
        [
            f"found {cell[(m, e, b)]['found']}, paper {cell[(m, e, b)]['paper']}"
            + (" (pre-registered)" if cell[(m, e, b)].get("preregistered") else " (exploratory)")
            if (m, e, b) in cell
            else "not run"
            for e, b in cols
        ]
        for m in models
    ]
    return heatmap(
        z,
        rows=models,
        cols=[f"ε={e:g} {b}" for e, b in cols],
        scale={"kind": "diverging", "max": 12.0},
        xlabel="epsilon, basis",
        ylabel="model",
        value_label="z of h4",
        tips=tips,
        note="|z| ≥ 3: the basis is preferred; colours saturate at |z| = 12 (hover for the exact z)",
        title="is the basis preferred? z of the axis harmonic against random bases",
    )


def report_figures(folder: Path) -> dict[str, Callable[[], View]]:
    """The interactive figures of a ``hooked repro spotlight`` folder, by the PNG each stands for."""
    folder = Path(folder)
    figures: dict[str, Callable[[], View]] = {}
    try:
        settings = _results(folder)["settings"]
        epsilons = list(settings["epsilons"]) + list(settings.get("explore_epsilons", []))
    except (OSError, ValueError, KeyError, TypeError):
        epsilons = []  # the report names the unreadable results.json
    for e in dict.fromkeys(epsilons):
        figures[f"srm_eps{e:g}.png"] = lambda e=e: srm_curves(folder, str(float(e)))
    figures["verdicts.png"] = lambda: verdicts(folder)
    return figures
