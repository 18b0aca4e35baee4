"""The views' data and errors, without a browser: exact numbers, NaN kept as NaN, markup that cannot
escape its element, pages that need no network, and clear errors for bad input."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooked import ActivationCache, views
from hooked.errors import UnknownHookError
from hooked.views.page import array, runtime, script_json


def _payload(page: str) -> dict:
    data = re.search(r"<script type='application/json' id='[^']+'>(.*?)</script>", page, flags=re.S).group(1)
    return json.loads(data)


@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_json_arrays_keep_every_float32_exactly_and_name_non_finite_values(xs):
    t = torch.tensor(xs, dtype=torch.float32)
    enc = json.loads(script_json(array(t)))
    assert enc["shape"] == [len(xs)]
    for x, v in zip(t.tolist(), enc["v"]):
        if math.isnan(x):
            assert v == "NaN"
        elif math.isinf(x):
            assert v == ("inf" if x > 0 else "-inf")
        else:
            assert np.float32(v) == np.float32(x)


def test_float16_encoding_round_trips_with_nan_and_infinities():
    t = torch.tensor([[0.0, 0.5, 1.0], [math.nan, math.inf, -math.inf]])
    enc = array(t, encoding="f16")
    back = np.frombuffer(base64.b64decode(enc["f16"]), dtype="<f2").reshape(enc["shape"])
    assert back[0].tolist() == [0.0, 0.5, 1.0] and np.isnan(back[1, 0]) and back[1, 1] == np.inf
    assert back[1, 2] == -np.inf


def test_markup_in_the_data_cannot_end_the_script_element():
    hostile = "</script><script>alert(1)</script><!--"
    page = views.shaded_text([hostile, "&amp;"], [1.0, 2.0]).page()
    assert hostile not in page and "</script><script>alert" not in page
    assert _payload(page)["panels"][0]["rows"][0]["tokens"] == [hostile, "&amp;"]
    # exactly three script elements: the data, the drawing script and the call that draws
    assert len(re.findall(r"<script", page)) == 3 and "</script" not in runtime()


def test_pages_open_offline():
    page = views.heatmap(torch.eye(3)).page()
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=", page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page) and "import(" not in page
    # the only URL is SVG's namespace name, which is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert len(runtime()) < 40_000


def test_save_writes_a_page_atomically_and_wants_html(tmp_path):
    view = views.bars([1.0, -2.0], ["a", "b"])
    path = view.save(tmp_path / "v.html")
    assert path.read_text().startswith("<!DOCTYPE html>") and list(tmp_path.iterdir()) == [path]
    with pytest.raises(ValueError, match="should end in .html"):
        view.save(tmp_path / "v.png")
    assert "hookedViews.render(" in view._repr_html_()  # draws itself inside a notebook


def test_attention_reads_every_layer_of_a_cache_by_layer_number():
    T = 3
    pats = {
        f"model.layers.{i}.self_attn.hook_pattern": torch.full((1, 2, T, T), float(i)) for i in (10, 2, 0)
    }
    cache = ActivationCache({**pats, "model.layers.0.hook_in": torch.zeros(1, T, 4)})
    assert views.pattern_hooks(cache) == [f"model.layers.{i}.self_attn.hook_pattern" for i in (0, 2, 10)]
    panel = views.attention(cache, ["a", "b", "c"]).panels[0]
    w = np.frombuffer(base64.b64decode(panel["patterns"]["f16"]), dtype="<f2").reshape(
        panel["patterns"]["shape"]
    )
    assert w.shape == (3, 2, T, T) and w[:, 0, 0, 0].tolist() == [0.0, 2.0, 10.0]


def test_attention_errors_name_what_is_missing():
    cache = ActivationCache({"blocks.0.attn.hook_pattern": torch.zeros(1, 2, 3, 3)})
    with pytest.raises(UnknownHookError, match="blocks.1.attn.hook_pattern"):
        views.attention(
            cache, ["a", "b", "c"], hooks=["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
        )
    with pytest.raises(UnknownHookError, match="blocks.7.attn.hook_pattern"):
        views.attention({"x": torch.zeros(1)}, ["a"], hooks=["blocks.7.attn.hook_pattern"])
    with pytest.raises(ValueError, match="no attention pattern"):
        views.attention(ActivationCache({}), [])
    with pytest.raises(ValueError, match="2 tokens, but the patterns cover 3"):
        views.attention(cache, ["a", "b"])
    with pytest.raises(ValueError, match=r"\[batch, head, dest, src\]"):
        views.attention(ActivationCache({"blocks.0.attn.hook_pattern": torch.zeros(3, 3)}), ["a", "b", "c"])


def test_grid_lens_and_bars_check_their_shapes():
    with pytest.raises(ValueError, match="different shapes"):
        views.patching_grid(torch.zeros(3, 4), attribution=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="3 labels for 4"):
        views.patching_grid(torch.zeros(2, 4), cols=["a", "b", "c"])
    with pytest.raises(ValueError, match="2 tokens, but the logits cover 3"):
        views.logit_lens(torch.zeros(2, 3, 5), ["a", "b"], list("abcde"))
    with pytest.raises(ValueError, match="outside the vocabulary of 5"):
        views.logit_lens(torch.zeros(2, 3, 5), list("abc"), list("abcde"), diff=(1, 9))
    with pytest.raises(ValueError, match="2 rows of tokens but 1 rows of values"):
        views.shaded_text([["a"], ["b"]], [[1.0]])
    with pytest.raises(ValueError, match="row 0 has 2 tokens but 3 values"):
        views.shaded_text(["a", "b"], [1.0, 2.0, 3.0])


def test_patching_grid_scale_is_centred_on_zero_and_shared():
    exact = torch.tensor([[0.5, -2.0], [math.nan, 1.0]])
    view = views.patching_grid(exact, attribution=exact / 4)
    a, b = view.panels
    assert a["scale"] == b["scale"] == {"kind": "diverging", "max": 2.0}
    assert a["values"]["v"] == [0.5, -2.0, "NaN", 1.0]


def test_logit_lens_top_tokens_and_difference():
    logits = torch.tensor([[[0.0, 5.0, 1.0]], [[3.0, 0.0, 0.0]]])  # [layers 2, pos 1, vocab 3]
    panel = views.logit_lens(logits, ["x"], ["a", "b", "c"], k=2).panels[0]
    assert panel["text"] == [["b"], ["a"]]
    p = torch.softmax(logits, -1)
    assert panel["values"]["v"] == pytest.approx([float(p[0, 0, 1]), float(p[1, 0, 0])])
    assert panel["tips"][0][0].splitlines()[0].startswith("1. 'b'")
    diff = views.logit_lens(logits, ["x"], lambda ids: [f"t{i}" for i in ids], diff=(1, 0)).panels[0]
    assert diff["values"]["v"] == [5.0, -3.0] and diff["scale"]["kind"] == "diverging"
    assert "'t1' - 't0'" in diff["value_label"]


def test_feature_page_reads_the_schema_and_refuses_other_files(tmp_path):
    path = tmp_path / "features.json"
    path.write_text(json.dumps({"format": "something/2", "features": []}))
    with pytest.raises(ValueError, match=r"features.json: not a features file \(format 'something/2'"):
        views.feature_page(path)
    good = {
        "format": "hooked.sae.features/1",
        "features": [
            {"index": 3, "density": 0.5, "top_contexts": [{"tokens": ["a"], "activations": [1, 2]}]}
        ],
    }
    with pytest.raises(ValueError, match=r"features\[0\] \(feature 3\): top_contexts\[0\] needs as many"):
        views.feature_page(good)
    good["features"][0]["top_contexts"][0]["activations"] = [None]
    with pytest.raises(ValueError, match=r"feature\(s\) \[4\] are not in the file"):
        views.feature_page(good, 4)
    panels = views.feature_page(good, 3).panels
    text = next(p for p in panels if p["type"] == "text")
    assert text["rows"][0]["values"]["v"] == ["NaN"]  # null is missing, never 0


def test_a_browser_that_cannot_start_is_an_error_with_the_reason(monkeypatch):
    from tests.views import browser

    monkeypatch.setenv("HOOKED_CHROMEDRIVER", "/nonexistent/chromedriver")
    with pytest.raises(browser.BrowserUnavailable, match="did not start"):
        browser.start()


def test_importing_the_views_loads_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, hooked.views, hooked.views.report; "
        "heavy = ('matplotlib', 'transformers', 'transformer_lens', 'sklearn', 'hooked.lm'); "
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
