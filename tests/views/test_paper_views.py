"""The papers' interactive figures (TMS, spotlight, onion, the LM patching grid, ``hooked run
spotlight``), built by their ``report_figures`` from files in the formats the runs write, shown in
report pages in headless Chromium: hover adds what the PNG cannot say."""

from __future__ import annotations

import math

import pytest
import torch

from analyses.spotlight import spotlight
from analyses.spotlight.stream import spotlight_analysis
from hooked.io import write_json, write_tensors
from hooked.views.report import write_report
from papers.lm.prompt_patching import PatchingResult
from papers.lm.repro import LMRepro
from papers.onion.repro import onion
from papers.spotlight.repro import spotlight_repro
from papers.tms.repro import tms
from tests.views.browser import cells, hover_text, load, screenshot_is_blank


def _png(path):
    from PIL import Image

    Image.new("RGB", (40, 30), (120, 120, 120)).save(path)


def _report(folder, figures, names):
    for name in names:
        _png(folder / name)
    path, problems = write_report(folder, figures=figures)
    assert problems == []
    page = path.read_text()
    for name in names:
        assert f"{name} (interactive)" in page
    return path


def _tms_folder(d):
    gen = torch.Generator().manual_seed(0)
    write_json(d / "results.json", {"repro": "tms", "options": {}, "seconds": 1.0, "results": {}})
    write_json(d / "tms.json", {"n5_m2": {"best": [{"label": "2 orthogonal"}, {"label": "pentagon"}]}})
    W = torch.randn(2, 2, 5, generator=gen)
    W[1] = torch.stack(
        [torch.cos(torch.arange(5) * 2 * math.pi / 5), torch.sin(torch.arange(5) * 2 * math.pi / 5)]
    )
    write_tensors(
        d / "tms_hidden_n5_m2.safetensors",
        {"W": W, "importance": 0.9 ** torch.arange(5.0), "density": torch.tensor([1.0, 0.05])},
    )
    write_tensors(
        d / "n200_m20_dimensionality.safetensors",
        {
            "density": torch.tensor([1.0, 0.2, 0.05]),
            "D_star": torch.tensor([1.0, 0.6, 0.5]),
            "D_i": torch.rand(3, 200, generator=gen),
        },
    )
    phases = torch.tensor([[0, 2], [1, 3]])
    write_tensors(
        d / "phase.safetensors",
        {
            "densities": torch.tensor([1.0, 0.01]),
            "importances": torch.tensor([0.1, 10.0]),
            "phases": phases,
            "W": torch.randn(2, 2, 1, 2, generator=gen),
        },
    )
    return _report(
        d, tms.report_figures, ["tms_hidden_n5_m2.png", "tms_dimensionality.png", "tms_phase_diagram.png"]
    )


def _spotlight_folder(d):
    table, models = [], {}
    for name in ("relu", "linear"):
        srm = {}
        for e in (0.9, 0.5):
            per = {}
            for b in ("standard", "rotated"):
                z = "-inf" if (name, e, b) == ("relu", 0.9, "standard") else 4.0
                verdict = {"verdict": "aligned", "z": z}
                per[b] = {
                    "verdict": verdict,
                    "paper": "aligned",
                    "srm": {"isotropic_reference": 0.1, "mean": [0.1, 0.2, 0.3, 0.2], "std": [0.01] * 4},
                }
                table.append(
                    {
                        "model": name,
                        "epsilon": e,
                        "basis": b,
                        "found": "aligned",
                        "paper": "aligned",
                        "z": z,
                        "preregistered": e == 0.9,
                    }
                )
            srm[str(e)] = per
        models[name] = {"srm": srm}
    results = {"settings": {"epsilons": [0.9], "explore_epsilons": [0.5]}, "table": table, "models": models}
    write_json(d / "results.json", {"repro": "spotlight", "seconds": 1.0, "results": results})
    return _report(d, spotlight_repro.report_figures, ["srm_eps0.9.png", "srm_eps0.5.png", "verdicts.png"])


def _onion_folder(d):
    cell = {"mean": 0.5, "std": 0.1, "n": 2, "steps": [400]}
    table = {"16": {"model": cell, "onion": cell | {"mean": 0.9}}, "512": {"model": cell, "onion": cell}}
    write_json(d / "onion.json", {"settings": {"cell": "gru"}, "table": table})
    write_json(d / "results.json", {"repro": "onion", "results": {}})
    return _report(d, onion.report_figures, ["onion.png"])


def _lm_folder(d):
    grid = torch.linspace(-0.5, 1.5, 4 * 3).reshape(4, 3)
    result = PatchingResult(
        grid,
        2.0,
        -1.0,
        ["h0", "h1", "h2", "h3"],
        ["pre 0", "pre 1", "pre 2", "final"],
        ["A", "<b>x", "C"],
        ["A", "y", "C"],
    )
    write_json(d / "patching.json", result)
    write_json(d / "results.json", {"repro": "lm", "results": {}})
    return _report(d, LMRepro.report_figures, ["patching.png"]), result


def _analysis_folder(d):
    acts = torch.randn(200, 3, generator=torch.Generator().manual_seed(1))
    res = spotlight(acts, epsilon=0.5, n_angles=16)
    write_tensors(d / "srm.safetensors", res.tensors())
    write_json(
        d / "result.json",
        {
            "analysis": "spotlight",
            "hook": "h",
            "result": {"hook": "h", "srm": res, "alignment": {"verdict": "isotropic", "z": 0.5}},
        },
    )
    return _report(d, spotlight_analysis.report_figures, ["spotlight.png"])


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = {}
    for name, make in (
        ("tms", _tms_folder),
        ("spotlight", _spotlight_folder),
        ("onion", _onion_folder),
        ("run", _analysis_folder),
    ):
        d = tmp_path_factory.mktemp(name)
        out[name] = make(d)
    d = tmp_path_factory.mktemp("lm")
    out["lm"], out["lm_result"] = _lm_folder(d)
    return out


def _open(browser, path):
    errs = load(browser, path)
    assert not errs, errs
    assert browser.execute_script("return hookedViews.errors.length") == 0
    assert not screenshot_is_blank(browser)[0]
    return browser.find_element("css selector", "figure.interactive")


def test_tms_figures(browser, pages):
    _open(browser, pages["tms"])
    figs = browser.find_elements("css selector", "figure.interactive")
    assert len(figs) == 3
    point = figs[0].find_elements("css selector", "circle.hv-point")[5 + 2]  # pentagon, feature 2
    assert "feature 2, importance 0.81" in point.get_attribute(
        "data-tip"
    ) and "angle 144.0 deg" in point.get_attribute("data-tip")
    assert len(figs[1].find_elements("css selector", "circle.hv-point")) == 3 * 200 + 3
    # highest importance on top: row 0 is importance 10, column 1 density 0.01 -> phase 3 (neither)
    cell = cells(figs[2], 0, 1)
    assert cell.get_attribute("data-v") == "3" and "phase: neither represented" in hover_text(browser, cell)


def test_spotlight_figures(browser, pages):
    _open(browser, pages["spotlight"])
    figs = browser.find_elements("css selector", "figure.interactive")
    assert len(figs) == 3
    pts = figs[0].find_elements("css selector", "circle.hv-point")
    assert len(pts) == 2 * 2 * 5  # 2 bases x 2 models x 4 angles and the closing one
    assert "verdict aligned (z +4.00); paper: aligned" in pts[-1].get_attribute("data-tip")
    z = cells(figs[2], 0, 0)  # relu, eps 0.9 standard: z = -inf, hatched, not a colour
    assert z.get_attribute("data-v") == "-inf" and "hv-nonfinite" in z.get_attribute("class")


def test_onion_lm_and_analysis_figures(browser, pages):
    fig = _open(browser, pages["onion"])
    pts = fig.find_elements("css selector", "circle.hv-point")
    assert [p.get_attribute("data-y") for p in pts] == ["0.5", "0.5", "0.9", "0.5"]
    assert "seeds 2, training steps 400" in pts[2].get_attribute("data-tip")
    fig = _open(browser, pages["lm"])
    restored = pages["lm_result"].restored
    assert float(cells(fig, 2, 1).get_attribute("data-v")) == pytest.approx(float(restored[2, 1]), rel=1e-6)
    labels = [t.get_attribute("data-label") for t in fig.find_elements("css selector", "text.hv-xlabel")]
    assert labels == ["A", "<b>x / y", "C"]
    fig = _open(browser, pages["run"])
    assert len(fig.find_elements("css selector", "svg.hv-chart")) == 2
