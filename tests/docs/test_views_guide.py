"""The recipes of ``docs/guide/views.md`` run as written (a block right after ``<!-- slow -->`` runs in
the slow test only), each one in a fresh namespace, in a temporary folder; every page they save opens
as a standalone HTML file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).parents[2] / "docs" / "guide" / "views.md"


def blocks(slow: bool) -> list[str]:
    found = re.findall(r"(<!-- slow -->\n)?```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return [code for mark, code in found if bool(mark) == slow]


def run(code: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert code, "the guide has no such python blocks"
    monkeypatch.chdir(tmp_path)
    for block in code:
        exec(compile(block, str(GUIDE), "exec"), {"__name__": "guide_example"})
    pages = list(tmp_path.glob("*.html"))
    assert pages and all(p.read_text().startswith("<!DOCTYPE html>") for p in pages)


def test_guide_recipes_run(tmp_path, monkeypatch):
    run(blocks(slow=False), tmp_path, monkeypatch)
    saved = {p.name for p in tmp_path.glob("*.html")}
    assert {"attention.html", "patching.html", "logit_lens.html", "dla.html", "loss.html", "feature_17.html"} <= saved


@pytest.mark.slow
def test_guide_slow_recipes_run(tmp_path, monkeypatch):
    run(blocks(slow=True), tmp_path, monkeypatch)
