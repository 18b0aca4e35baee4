"""The circuit view (interventions.circuits.show) in headless Chromium, and the circuit's PNG graph."""

from __future__ import annotations

import math

import numpy as np

from hooked.views import circuit_view, draw_circuit
from interventions.circuits import (
    edge_attribution_patching,
    faithfulness_curve,
    top_edges,
)
from tests.interventions.test_circuits import PLANTED, Planted, toy_data, toy_metric
from tests.views.browser import cells, open_view


def _toy():
    model = Planted()
    clean, corrupt = toy_data()
    scores = edge_attribution_patching(model, clean, corrupt, toy_metric)
    curve = faithfulness_curve(model, clean, corrupt, toy_metric, scores, [0, 1, 2, 3, 6])
    return model, scores, top_edges(scores, 3), curve


def test_circuit_view_shows_the_scores_the_circuit_and_the_curve(browser, tmp_path):
    model, scores, circuit, curve = _toy()
    root = open_view(browser, circuit_view(scores, circuit, curve), tmp_path / "circuit.html")
    grid = root.find_elements("css selector", "svg.hv-heatmap")[0]
    i, j = scores.senders.index("a"), scores.receivers.index("c")
    assert np.float32(float(cells(grid, i, j).get_attribute("data-v"))) == np.float32(scores["a", "c"])
    assert "hv-nonfinite" in cells(
        grid, scores.senders.index("c"), scores.receivers.index("a")
    ).get_attribute("class")
    bars = root.find_elements("css selector", "rect.hv-bar")
    assert len(bars) == 3
    labels = {
        t.get_attribute("data-label")
        for t in root.find_elements("css selector", "svg.hv-bars text.hv-ylabel")
    }
    assert labels == {f"{s} -> {r}" for s, r in PLANTED}
    points = root.find_elements("css selector", "svg.hv-chart circle.hv-point")
    ys = [float(p.get_attribute("data-y")) for p in points][:5]
    assert math.isclose(ys[3], 1.0, abs_tol=1e-4)  # the top 3 edges (the planted circuit) keep it all


def test_draw_circuit_writes_a_png_graph(tmp_path):
    model, _, circuit, _ = _toy()
    path = draw_circuit(tmp_path / "circuit.png", circuit, model.circuit_graph())
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
