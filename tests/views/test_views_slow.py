"""Slow checks on real runs: SmolLM2's attention view (every one of its 30 x 9 heads on a 16-token
prompt) is small and draws in under 2 s in headless Chromium; the reproductions' report pages, from
tiny real runs, have every interactive figure and no problem."""

from __future__ import annotations

import statistics

import pytest

from hooked import cli, views
from hooked.io import read_json
from tests.papers.test_superposition_repro import TINY_TMS
from tests.views.browser import cells, hover_text, load, screenshot_is_blank

PROMPT = "The Eiffel Tower is in the city of Paris, which is the capital of"  # 16 SmolLM2 tokens

pytestmark = pytest.mark.slow


def page_timing(browser, path, rounds: int = 3) -> tuple[float, float]:
    """Median over ``rounds`` loads: time to the load event (parse + draw), and the drawing alone (ms)."""
    loads, draws = [], []
    for _ in range(rounds):
        assert not load(browser, path)
        loads.append(
            browser.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
        )
        draws.append(browser.execute_script("return hookedViews.renderMs"))
    return statistics.median(loads), statistics.median(draws)


@pytest.mark.smollm2
def test_smollm2_attention_view_is_small_and_draws_in_under_two_seconds(browser, tmp_path):
    from hooked import lm

    model = lm.load("smollm2-135m", backend="wrap")
    ids = lm.to_tokens(model, PROMPT)
    assert ids.shape == (1, 16)
    tokens = [model.tokenizer.decode([i]) for i in ids[0].tolist()]
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    view = views.attention(cache, tokens)
    path = view.save(tmp_path / "attention.html")
    size = path.stat().st_size
    total, draw = page_timing(browser, path)
    print(
        f"\nSmolLM2 attention view (30 x 9 heads, 16 tokens): {size / 1e3:.0f} kB, "
        f"load {total:.0f} ms, draw {draw:.0f} ms"
    )
    assert size < 400_000 and total < 2000
    assert len(browser.find_elements("css selector", "canvas.hv-thumb")) == 270
    thumb = browser.find_element("css selector", "canvas.hv-thumb[data-layer='29'][data-head='8']")
    thumb.click()
    main = browser.find_element("css selector", ".hv-attn-main")
    pattern = cache["blocks.29.attn.hook_pattern"][0, 8]
    for r, c in ((15, 0), (15, 15), (7, 3)):
        assert float(cells(main, r, c).get_attribute("data-v")) == pytest.approx(
            float(pattern[r, c]), abs=1e-3
        )
    assert not screenshot_is_blank(browser)[0]

    grid = views.patching_grid(pattern.new_tensor(range(31 * 9)).reshape(31, 9) / 100, cols=tokens[:9])
    grid_size = grid.save(tmp_path / "grid.html").stat().st_size
    print(f"31 x 9 patching grid: {grid_size / 1e3:.0f} kB")
    assert grid_size < 60_000


def _repro(tmp_path, name, *args):
    out = tmp_path / name
    assert cli.main(["repro", name, "--no-progress", "--out", str(out), *args]) == 0
    page = (out / "report.html").read_text()
    assert "id='problems'" not in page
    return out, page


def test_tms_report_from_a_tiny_run(browser, tmp_path):
    out, page = _repro(tmp_path, "tms", *TINY_TMS)
    assert page.count("(interactive)") == 3 and "The paper vs this run" in page
    assert not load(browser, out / "report.html")
    figs = browser.find_elements("css selector", "figure.interactive")
    phases = read_json(out / "tms.json")["phase"]["phases"]
    cell = cells(figs[2], 0, 0)  # top row: the highest importance
    assert cell.get_attribute("data-v") == str(phases[-1][0]) and "phase:" in hover_text(browser, cell)


def test_spotlight_and_onion_reports_from_tiny_runs(browser, tmp_path):
    out, page = _repro(
        tmp_path,
        "spotlight",
        "--activations",
        "relu,linear",
        "--rotated",
        "tanh",
        "--epochs",
        "2",
        "--epsilons",
        "0.9",
        "--explore-epsilons",
        "0.5",
        "--null-bases",
        "4",
        "--n-angles",
        "16",
    )
    assert page.count("(interactive)") == 3
    assert not load(browser, out / "report.html")
    out, page = _repro(
        tmp_path,
        "onion",
        "--sizes",
        "9",
        "--steps",
        "4",
        "--intervention-steps",
        "2",
        "--probe-steps",
        "2",
        "--batch-size",
        "16",
        "--n-train",
        "5000",
    )
    assert page.count("(interactive)") == 1
    assert not load(browser, out / "report.html")
