"""The interactive version of ``spotlight.png`` (``hooked run spotlight``) for the run's ``report.html``:
every plane's SRM curve (at most :data:`MAX_PLANES`, from ``srm.safetensors``) and the mean +- std over
planes (from ``result.json``); hover a point for the plane, angle and value."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from hooked.io import read_json, read_tensors
from hooked.views import View, series
from hooked.views.charts import lines_panel
from hooked.views.page import number

MAX_PLANES = 60
PI_TICKS = [(k * math.pi / 2, label) for k, label in enumerate(["0", "π/2", "π", "3π/2", "2π"])]


def srm_view(folder: Path) -> View:
    record = read_json(folder / "result.json")
    res = record["result"]
    srm = res["srm"]
    t = read_tensors(folder / "srm.safetensors")
    angles = t["angles"].double()
    theta = torch.cat([angles, torch.tensor([2 * math.pi], dtype=torch.float64)])
    values = t["counts"].double() / max(1, int(srm["n"]))
    values = torch.cat([values, values[:, :1]], dim=1)
    planes = t["planes"].tolist()
    reference = number(srm["isotropic_reference"])
    hl = [(reference, f"isotropic {reference:.3g}")]
    ylabel = "signed SRM" if srm.get("signed") else "SRM (fraction in cone)"
    shown = min(MAX_PLANES, values.shape[0])
    ensemble = [
        series(
            theta,
            values[k],
            name=f"plane {planes[k]}",
            mode="lines",
            color="#1f77b4",
            width=0.7,
            nolegend=True,
        )
        for k in range(shown)
    ]
    mean = [number(v) for v in srm["mean"]]
    std = [number(v) for v in srm["std"]]
    mean, std = mean + mean[:1], std + std[:1]
    verdict = res.get("alignment", {})
    note = f"verdict {verdict.get('verdict')} (z {number(verdict.get('z', 'nan')):+.2f})" if verdict else ""
    avg = series(
        theta,
        mean,
        name="mean ± std over planes",
        lo=[a - b for a, b in zip(mean, std)],
        hi=[a + b for a, b in zip(mean, std)],
        color="#d62728",
        size=2,
    )
    common = dict(xlabel="spotlight angle θ", ylabel=ylabel, xticks=PI_TICKS, hlines=hl, width=540)
    more = f" ({shown} of {values.shape[0]} shown)" if shown < values.shape[0] else ""
    return View(
        [
            lines_panel(ensemble, title=f"{values.shape[0]} planes{more}, ε={srm['epsilon']}", **common),
            lines_panel([avg], title="mean ± std", note=note, **common),
        ],
        f"spotlight resonance at {res.get('hook', record.get('hook', '?'))}: d={srm['dim']}, n={srm['n']}",
    )


def report_figures(folder: Path) -> dict[str, Callable[[], View]]:
    """The interactive figure of a ``hooked run spotlight`` folder."""
    folder = Path(folder)
    return {"spotlight.png": lambda: srm_view(folder)} if (folder / "spotlight.png").exists() else {}
