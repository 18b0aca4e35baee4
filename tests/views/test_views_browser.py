"""Each view, opened from a file URL in headless Chromium, as a person would see it: no JavaScript errors,
the elements that carry the data hold the right values, hover text is there, the page is not blank,
and tokens with markup in them show as text and run nothing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hooked import ActivationCache, views
from hooked.io import write_json
from tests.views.browser import cells, hover_text, load, open_view

HOSTILE = [
    "<b>",
    "<script>window.__pwned = 1</script>",
    " \"q\" & 's'",
    "<img src=x onerror='window.__pwned=2'>",
]
TOKENS = ["The", " Eiffel", " Tower", " is", " in", " the", " city", " of"] + HOSTILE  # 12 tokens


def _f16(x: float) -> float:
    return float(np.float16(x))


def _clipped(tok: str, n: int) -> str:
    """A label as drawn: at most ``n`` characters, the last an ellipsis when cut (the full text is in
    data-label and the hover text)."""
    return tok if len(tok) <= n else tok[: n - 1] + "\u2026"


def _labels(root, kind: str) -> tuple[list[str], list[str]]:
    found = root.find_elements("css selector", f"text.hv-{kind}label")
    return [t.get_attribute("data-label") for t in found], [t.get_attribute("textContent") for t in found]


def test_patching_grid_cell_holds_the_number_in_the_json(browser, tmp_path):
    g = torch.randn(31, 9, generator=torch.Generator().manual_seed(0))
    g[3, 5] = 0.123456789
    g[0, 0], g[1, 1], g[2, 2] = math.nan, math.inf, -math.inf
    write_json(tmp_path / "patching.json", {"restored": g, "tokens": TOKENS[:9]})
    saved = json.loads((tmp_path / "patching.json").read_text())
    view = views.patching_grid(
        saved["restored"], cols=saved["tokens"], rows=[f"pre {i}" for i in range(31)], attribution=g * 0.5
    )
    root = open_view(browser, view, tmp_path / "grid.html")
    exact, attribution = root.find_elements("css selector", "svg.hv-heatmap")
    cell = cells(exact, row=3, col=5)
    assert np.float32(float(cell.get_attribute("data-v"))) == np.float32(saved["restored"][3][5])
    shown = browser.execute_script(
        "return Array.from(arguments[0].querySelectorAll('text.hv-cell-text')).map(t => t.textContent)", exact
    )
    flat = [float(v) for row in saved["restored"] for v in row]
    words = {math.nan: "NaN", math.inf: "+inf", -math.inf: "-inf"}
    # two significant digits of the largest |value| (here in [1, 10): two decimals), never cut off
    assert 1 <= max(abs(v) for v in flat if math.isfinite(v)) < 10
    want = [words.get(v, "NaN" if v != v else f"{0 if abs(v) < 0.005 else v:.2f}") for v in flat]
    assert shown == want and shown[3 * 9 + 5] == "0.12"
    # the token labels are the prompt's tokens, in order, shown as text (markup included)
    full, drawn = _labels(exact, "x")
    assert full == TOKENS[:9] and drawn == [_clipped(t, 18) for t in TOKENS[:9]]
    assert _labels(exact, "y") == ([f"pre {i}" for i in range(31)],) * 2
    tip = browser.execute_script("return arguments[0].getAttribute('data-tip')", cell)
    assert "pre 3" in tip and TOKENS[5] in tip and "0.12345679" in tip
    shown = hover_text(browser, cell)
    assert "0.12345679" in shown and "pre 3" in shown
    # the attribution grid, beside it, on the same scale
    assert np.isclose(float(cells(attribution, 3, 5).get_attribute("data-v")), 0.123456789 / 2, rtol=1e-6)
    # NaN and infinities: hatched and labelled, never a colour of the scale
    for r, word in ((0, "NaN"), (1, "+inf"), (2, "-inf")):
        c = cells(exact, r, r)
        assert c.get_attribute("fill").startswith("url(#") and "hv-nonfinite" in c.get_attribute("class")
        assert c.get_attribute("data-v") == {"NaN": "NaN", "+inf": "+inf", "-inf": "-inf"}[word]
    real = browser.execute_script(
        "return Array.from(arguments[0].querySelectorAll('rect.hv-cell:not(.hv-nonfinite)'))"
        ".map(r => r.getAttribute('fill'))",
        exact,
    )
    assert len(real) == 31 * 9 - 3 and all(f.startswith("rgb(") for f in real)
    assert "NaN / \u00b1inf (3)" in root.text


def test_attention_view_shows_the_chosen_heads_weights(browser, tmp_path):
    T = len(TOKENS)
    gen = torch.Generator().manual_seed(1)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    patterns = torch.softmax(torch.randn(2, 4, 5, T, T, generator=gen).masked_fill(causal, -torch.inf), -1)
    cache = ActivationCache({f"blocks.{i}.attn.hook_pattern": patterns[:, i] for i in range(4)})
    view = views.attention(cache, TOKENS, batch=1)
    root = open_view(browser, view, tmp_path / "attn.html")
    thumbs = root.find_elements("css selector", "canvas.hv-thumb")
    assert len(thumbs) == 4 * 5
    thumb = root.find_element("css selector", "canvas.hv-thumb[data-layer='2'][data-head='4']")
    thumb.click()
    main = root.find_element("css selector", ".hv-attn-main")
    assert (main.get_attribute("data-layer"), main.get_attribute("data-head")) == ("2", "4")
    assert "hv-selected" in thumb.get_attribute("class")
    expected = patterns[1, 2, 4]
    grid = browser.execute_script(
        "return Array.from(arguments[0].querySelectorAll('rect.hv-cell')).map("
        "r => [+r.dataset.row, +r.dataset.col, r.dataset.v])",
        main,
    )
    assert len(grid) == T * T
    for r, c, v in grid:
        assert float(v) == pytest.approx(_f16(float(expected[r, c])), abs=1e-7), (r, c)
    full, drawn = _labels(main, "y")
    assert full == TOKENS and drawn == [_clipped(t, 26) for t in TOKENS]
    assert _labels(main, "x")[0] == TOKENS
    cell = cells(main, 9, 2)
    lines = hover_text(browser, cell).splitlines()
    assert lines[:2] == [f"destination 9: {TOKENS[9]}", f"source 2: {TOKENS[2]}"]
    assert lines[2].startswith("weight: ") and float(lines[2][8:]) == pytest.approx(
        float(expected[9, 2]), abs=1e-3
    )
    assert browser.execute_script("return window.__pwned") is None


def test_logit_lens_cells_are_the_top_tokens_with_the_top_five_on_hover(browser, tmp_path):
    vocab = [f"w{i}" for i in range(50)] + ["<script>window.__pwned=3</script>"]
    logits = torch.randn(4, len(TOKENS), len(vocab), generator=torch.Generator().manual_seed(2))
    logits[2, 5, 50] = 30.0  # the script token wins at layer 2, position 5
    view = views.logit_lens(logits[:, None], TOKENS, vocab, layers=["0_pre", "1_pre", "2_pre", "final_post"])
    root = open_view(browser, view, tmp_path / "lens.html")
    svg = root.find_element("css selector", "svg.hv-heatmap")
    top = logits.argmax(-1)
    texts = svg.find_elements("css selector", "text.hv-cell-text")
    assert len(texts) == 4 * len(TOKENS)
    shown = [t.get_attribute("textContent") for t in texts]
    want = [vocab[i] for i in top.flatten().tolist()]
    assert [s.rstrip("\u2026") for s in shown] == [w[: len(s.rstrip("\u2026"))] for w, s in zip(want, shown)]
    cell = cells(svg, 2, 5)
    p = torch.softmax(logits[2, 5], -1)
    assert float(cell.get_attribute("data-v")) == pytest.approx(float(p.max()), rel=1e-6)
    tip = cell.get_attribute("data-tip")
    for rank, i in enumerate(p.topk(5).indices.tolist(), 1):
        assert f"{rank}. {vocab[i]!r}" in tip
    assert browser.execute_script("return window.__pwned") is None


def test_shaded_text_feature_page_and_bars(browser, tmp_path):
    values = torch.linspace(-1, 2, len(TOKENS))
    values[3] = math.nan
    text = views.shaded_text(TOKENS, values, title="loss difference")
    features = {
        "format": "hooked.sae.features/1",
        "hook": "model.layers.6.hook_out",
        "model": "smollm2-135m",
        "n_tokens": 1000,
        "features": [
            {
                "index": 17,
                "density": None,
                "max_activation": 7.5,
                "histogram": {"edges": [0.0, 1.0, 2.0, 4.0], "counts": [5, None, 2]},
                "top_contexts": [
                    {
                        "tokens": ["The", " month", " of", " May"],
                        "activations": [0.0, 0.1, None, 7.5],
                        "max_position": 3,
                    },
                    {"tokens": HOSTILE, "activations": [1.0, 2.0, 3.0, 0.5], "max_position": 2},
                ],
                "promoted": [{"token": " June", "logit": 1.23}, {"token": "<i>", "logit": 0.5}],
                "suppressed": [{"token": " the", "logit": -0.9}],
            }
        ],
    }
    write_json(tmp_path / "features.json", features)
    dla = views.logit_attribution(torch.tensor([0.5, -1.25, math.inf]), ["embed", "0_attn_out", "0_mlp_out"])
    page = text + views.feature_page(tmp_path / "features.json", 17) + dla
    root = open_view(browser, page, tmp_path / "text.html")
    rows = root.find_elements("css selector", ".hv-text-row")
    first = rows[0].find_elements("css selector", "span.hv-tok")
    assert [s.get_attribute("textContent") for s in first] == TOKENS
    assert float(first[0].get_attribute("data-v")) == pytest.approx(-1.0)
    assert "hv-nonfinite" in first[3].get_attribute("class") and first[3].get_attribute("data-v") == "NaN"
    assert hover_text(browser, first[1]).splitlines()[0] == f"token 1: {TOKENS[1]}"
    # the feature's contexts: a missing activation is NaN, not 0
    may = rows[1].find_elements("css selector", "span.hv-tok")
    assert [s.get_attribute("textContent") for s in may] == ["The", " month", " of", " May"]
    assert may[2].get_attribute("data-v") == "NaN" and may[3].get_attribute("data-v") == "7.5"
    hostile = rows[2].find_elements("css selector", "span.hv-tok")
    assert [s.get_attribute("textContent") for s in hostile] == HOSTILE
    stats = root.find_element("css selector", "table.hv-stats").text
    assert "17" in stats and "NaN" in stats and "model.layers.6.hook_out" in stats
    hist = root.find_elements("css selector", "svg.hv-histogram rect.hv-bar")
    assert [b.get_attribute("data-v") for b in hist] == ["5", "NaN", "2"]
    bars = root.find_elements("css selector", "svg.hv-bars rect.hv-bar")
    assert [b.get_attribute("data-v") for b in bars] == ["1.23", "0.5", "-0.9", "0.5", "-1.25", "+inf"]
    assert "hv-nonfinite" in bars[-1].get_attribute("class")
    assert _labels(root.find_elements("css selector", "svg.hv-bars")[0], "y")[0] == [" June", "<i>"]
    assert browser.execute_script("return window.__pwned") is None


def test_charts_and_empty_views_draw_without_errors(browser, tmp_path):
    empty = views.attention(torch.zeros(0, 0, 0, 0), [])
    chart = views.lines(
        [
            views.series(
                [1, 2, 3, 4], [0.5, math.nan, 2.0, 1.0], name="curve", lo=[0, 0, 1, 0], hi=[1, 1, 3, 2]
            )
        ],
        xlabel="x",
        ylabel="y",
        hlines=[(1.0, "reference")],
    )
    heads = views.head_attribution(torch.randn(3, 4, generator=torch.Generator().manual_seed(3)))
    root = open_view(browser, empty + chart + heads, tmp_path / "charts.html")
    assert "no attention patterns" in root.text
    points = root.find_elements("css selector", "svg.hv-chart circle.hv-point")
    assert [p.get_attribute("data-y") for p in points] == ["0.5", "2", "1"]
    assert "1 point(s) NaN/\u00b1inf, not drawn" in root.text
    assert len(root.find_elements("css selector", "rect.hv-bar")) == 12  # top 20 of 12 heads


def test_notebook_fragments_draw_themselves_once_each(browser, tmp_path):
    # what Jupyter inserts for two outputs (nbconvert's HTML keeps them as they are): each fragment carries
    # the script, which defines itself once and draws its own view
    a = views.bars([1.0, -1.0], ["a", "b"], title="first")
    b = views.shaded_text(["x", "y"], [0.5, 1.0], title="second")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>" + a._repr_html_() + b._repr_html_()
    )
    (tmp_path / "notebook.html").write_text(page + "</body></html>")
    assert not load(browser, tmp_path / "notebook.html")
    titles = [t.text for t in browser.find_elements("css selector", "div.hv-view .hv-title")]
    assert titles == ["first", "second"]
    assert browser.execute_script("return hookedViews.rendered") == 2
