"""``report.html``: written by every ``hooked run`` / ``hooked repro``, rebuilt by ``hooked report``,
opened offline in headless Chromium; missing and damaged files are named and the rest is built."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hooked import cli, registry, views
from hooked.io import read_json
from hooked.views.report import build_report
from papers.claims import claim
from tests.views.browser import cells, hover_text, load, screenshot_is_blank

HOSTILE = '<script>window.__pwned = 5</script> & "quotes"'
TOKENS = ["The", " Eiffel", " Tower", " is", " in", " the", " city", " of", HOSTILE]


def _png(path, color=(200, 30, 30)):
    from PIL import Image

    Image.new("RGB", (90, 60), color).save(path)


def _grid_view(folder):
    data = read_json(folder / "grid.json")
    return views.patching_grid(data["values"], cols=data["tokens"], rows=[f"L{i}" for i in range(6)])


@pytest.fixture
def repro(monkeypatch):
    """A reproduction that writes a PNG, a grid and a claims table, with an interactive figure."""

    def tiny_paper(run_dir, *, k: int = 2):
        """Writes a figure, a grid and claims."""
        g = torch.arange(6 * 9, dtype=torch.float32).reshape(6, 9) / 7 - 3
        run_dir.json("grid.json", {"values": g, "tokens": TOKENS})
        run_dir.json("extra.json", {"rows": [{"layer": i, "loss": 0.5 / (i + 1)} for i in range(3)]})
        _png(run_dir / "grid.png")
        _png(run_dir / "other.png", (20, 90, 200))
        rows = [claim("k small", "works", f"k={k}: works", True), claim("k large", "fails", "works", False)]
        return {"claims": rows, "note": HOSTILE, "k": k}

    tiny_paper.report_figures = lambda folder: {"grid.png": lambda: _grid_view(folder)}
    registry.register_repro("test-tiny-paper")(tiny_paper)
    yield
    registry._REGISTRY["repro"].pop("test-tiny-paper", None)


def _run(tmp_path, *extra):
    out = tmp_path / "run"
    assert cli.main(["repro", "test-tiny-paper", "--out", str(out), *extra]) == 0
    return out


def test_repro_writes_a_report_with_command_claims_figures_numbers_and_files(repro, tmp_path, capsys):
    out = _run(tmp_path, "--k", "3")
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    record = read_json(out / "results.json")
    assert record["command"] == ["hooked", "repro", "test-tiny-paper", "--out", str(out), "--k", "3"]
    assert {"hooked", "python", "torch"} <= set(record["versions"]) and record["started"]
    page = (out / "report.html").read_text()
    assert "hooked repro test-tiny-paper --out" in page and "1 of 2 claims agree" in page
    assert "class='agree-no'" in page and "grid.png (interactive)" in page and "src='other.png'" in page
    for name in ("results.json", "grid.json", "extra.json", "grid.png", "other.png"):
        assert f"href='{name}'" in page
    assert HOSTILE not in page and "&lt;script&gt;window.__pwned = 5&lt;/script&gt;" in page
    assert "id='problems'" not in page


def test_a_rerun_with_overwrite_replaces_the_report(repro, tmp_path):
    out = _run(tmp_path)
    assert "k=2: works" in (out / "report.html").read_text()
    assert cli.main(["repro", "test-tiny-paper", "--out", str(out), "--k", "5", "--overwrite"]) == 0
    assert "k=5: works" in (out / "report.html").read_text()


def test_hooked_run_writes_a_report_too(tmp_path):
    def mean_act(model, hook, data, *, top: int = 2):
        """Mean activation."""
        _, cache = model.run_with_cache(data, names_filter=hook)
        return {"mean": cache[hook].mean().item(), "top": top}

    registry.register_analysis("test-mean-act")(mean_act)
    try:
        out = tmp_path / "r"
        argv = ["run", "test-mean-act", "--model", "toy-relu", "--hook", "hook_hidden", "--out", str(out)]
        assert cli.main(argv) == 0
    finally:
        registry._REGISTRY["analysis"].pop("test-mean-act", None)
    record = read_json(out / "result.json")
    assert record["command"] == ["hooked", *argv] and record["result"]["top"] == 2
    page = (out / "report.html").read_text()
    assert "hooked run test-mean-act" in page and "hook_hidden" in page and "toy-relu" in page


def test_report_names_missing_and_damaged_files_and_builds_the_rest(repro, tmp_path, capsys):
    out = _run(tmp_path)
    capsys.readouterr()
    (out / "grid.json").unlink()  # the interactive figure's data
    (out / "extra.json").write_text('{"rows": [1, 2')  # cut off
    data = (out / "other.png").read_bytes()
    (out / "other.png").write_bytes(data[: len(data) // 2])  # a truncated image
    assert cli.main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "grid.json" in err and "extra.json: damaged, not valid JSON" in err
    assert "other.png: damaged, a truncated PNG image" in err
    page = (out / "report.html").read_text()
    assert page.count("<li>") == 3 and "1 of 2 claims agree" in page
    assert "src='grid.png'" in page and "src='other.png'" not in page  # the PNG stands in for the view
    assert "href='other.png'" in page  # still linked, for whoever wants to look
    (out / "results.json").unlink()
    assert cli.main(["report", str(out)]) == 1
    assert "no result.json or results.json" in capsys.readouterr().err
    assert "src='grid.png'" in (out / "report.html").read_text()


def test_report_of_a_run_made_before_report_pages(tmp_path):
    # the record of an older run: no command, versions or start time
    (tmp_path / "results.json").write_text(
        json.dumps({"repro": "tms", "options": {"steps": 3}, "seconds": 125.0})
    )
    page, problems = build_report(tmp_path)
    assert problems == []
    assert page.count("not recorded (a run made before report pages)") == 2  # command, versions
    assert "2.1 min (125 s)" in page and "hooked repro tms" in page


def test_hooked_report_on_a_missing_folder(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    assert "no run folder at" in capsys.readouterr().err


def test_report_page_in_the_browser(repro, browser, tmp_path):
    out = _run(tmp_path)
    errs = load(browser, out / "report.html")
    assert not errs, errs
    blank, why = screenshot_is_blank(browser)
    assert not blank, why
    assert browser.execute_script("return window.__pwned") is None
    note = browser.find_element("xpath", "//td[contains(., 'window.__pwned')]")
    assert note.get_attribute("textContent") == HOSTILE  # shown as text
    rows = browser.find_elements("css selector", "table.claims tr")
    assert [r.get_attribute("class") for r in rows[1:]] == ["agree-yes", "agree-no"]
    grid = browser.find_element("css selector", "figure.interactive svg.hv-heatmap")
    saved = read_json(out / "grid.json")
    cell = cells(grid, 3, 5)
    assert np.float32(float(cell.get_attribute("data-v"))) == np.float32(saved["values"][3][5])
    assert [
        t.get_attribute("data-label") for t in grid.find_elements("css selector", "text.hv-xlabel")
    ] == TOKENS
    assert "L3" in hover_text(browser, cell)
    images = browser.find_elements("css selector", "img")
    loaded = [
        browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in images
    ]
    assert len(images) == 2 and all(w == 90 for w in loaded)  # other.png, and grid.png behind the view
    links = {a.get_attribute("textContent") for a in browser.find_elements("css selector", "table.files a")}
    assert {"results.json", "grid.json", "extra.json", "grid.png", "other.png"} <= links


def test_damaged_run_folder_page_in_the_browser(repro, browser, tmp_path):
    out = _run(tmp_path)
    shutil.copy(out / "grid.png", out / "copy.png")
    (out / "copy.png").write_bytes(b"not a png at all")
    (out / "grid.json").write_text("{")
    cli.main(["report", str(out)])
    assert not load(browser, out / "report.html")
    problems = browser.find_element("css selector", "#problems").text
    assert "copy.png: damaged, not a PNG image" in problems and "grid.json" in problems
    assert len(browser.find_elements("css selector", "table.claims tr")) == 3
