"""The README and every page under ``docs/`` work as written: their python blocks run, their links
resolve. The same rule is stated for writers in ``docs/README.md`` ("How the code on these pages is
tested").

Which blocks run:

* a fenced block whose fence starts a line and whose language is exactly ``python`` runs; blocks
  marked ``bash``, ``text``, any other language or none do not;
* a page's blocks run in their order, each in a fresh namespace (a block imports what it uses), with
  a fresh temporary folder as the working directory for the page; what the blocks register (models,
  analyses, reproductions) is unregistered after the page;
* a block right after a line ``<!-- slow -->`` runs only in the slow tier (``-m slow``), the others
  in the default suite. Blocks that load SmolLM2 or train for long are marked slow, and a block that
  loads SmolLM2 without the mark fails ``test_smollm2_blocks_are_slow``; quick examples use a tiny
  random Llama or the toy models. Everything runs offline, on a CPU;
* an HTML file a page writes must be a standalone page, and a page listed in ``WRITES`` must write
  those files.

Each page is one test per tier, parametrised by its path.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
SLOW_MARK = "<!-- slow -->"
BLOCK = re.compile(r"^(<!-- slow -->\n)?```python\n(.*?)^```", flags=re.S | re.M)
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)  # any fenced block, to keep code out of links
SMOLLM2 = re.compile(r"""\b(?:load|load_hf|resolve)\(\s*["']smollm2|\bsmollm2_135m\(""")
# pages whose blocks must leave these files in their folder
WRITES = {
    "docs/guide/views.md": {
        "attention.html",
        "patching.html",
        "logit_lens.html",
        "dla.html",
        "loss.html",
        "feature_17.html",
    },
}
# pages linked before they are written (a branch merged separately); none now
PENDING: set[str] = set()


def rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def python_blocks(page: Path, slow: bool | None = None) -> list[str]:
    """The python blocks of ``page``: all, or only the slow-marked (``slow=True``) or the others."""
    found = BLOCK.findall(page.read_text())
    return [code for mark, code in found if slow is None or bool(mark) == slow]


def pages_with(slow: bool) -> list[str]:
    return [rel(p) for p in PAGES if python_blocks(p, slow)]


def run_blocks(page: Path, blocks: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hooked import registry

    monkeypatch.chdir(tmp_path)
    before = {k: dict(v) for k, v in registry._REGISTRY.items()}
    try:
        for block in blocks:
            exec(compile(block, str(page), "exec"), {"__name__": "docs_example"})
    finally:
        for kind, entries in before.items():
            registry._REGISTRY[kind].clear()
            registry._REGISTRY[kind].update(entries)
    for html in tmp_path.rglob("*.html"):
        assert html.read_text().startswith("<!DOCTYPE html>"), f"{rel(page)} wrote {html.name}, not a page"


@pytest.mark.parametrize("name", pages_with(slow=False))
def test_page_python_blocks_run(name, tmp_path, monkeypatch):
    page = ROOT / name
    run_blocks(page, python_blocks(page, slow=False), tmp_path, monkeypatch)
    missing = WRITES.get(name, set()) - {p.name for p in tmp_path.rglob("*.html")}
    assert not missing, f"{name}: its blocks did not write {sorted(missing)}"


@pytest.mark.slow
@pytest.mark.parametrize("name", pages_with(slow=True))
def test_page_slow_python_blocks_run(name, tmp_path, monkeypatch):
    page = ROOT / name
    run_blocks(page, python_blocks(page, slow=True), tmp_path, monkeypatch)


def test_pages_are_found_and_run():
    """The rule reaches the pages it is meant for: the README, the guide, the views recipes."""
    fast, slow = pages_with(slow=False), pages_with(slow=True)
    assert {"README.md", "docs/guide/views.md", "docs/guide/real-lms.md"} <= set(fast)
    assert {"README.md", "docs/guide/views.md", "docs/guide/real-lms.md"} <= set(slow)


@pytest.mark.parametrize("name", [rel(p) for p in PAGES])
def test_slow_marks_precede_python_blocks(name):
    lines = (ROOT / name).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == SLOW_MARK:
            following = lines[i + 1] if i + 1 < len(lines) else ""
            assert following == "```python", (
                f"{name}:{i + 1}: {SLOW_MARK} must be right above a ```python line"
            )


@pytest.mark.parametrize("name", [rel(p) for p in PAGES])
def test_smollm2_blocks_are_slow(name):
    for code in python_blocks(ROOT / name, slow=False):
        found = SMOLLM2.search(code)
        assert not found, f"{name}: a block loads SmolLM2 ({found.group(0)!r}...) without {SLOW_MARK}"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if not heading:
            continue
        text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading.group(1)).strip().lower()
        slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN").replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("name", [rel(p) for p in PAGES])
def test_relative_links_resolve(name):
    page = ROOT / name
    text = FENCE.sub("", page.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        where = (
            file.relative_to(ROOT.resolve()).as_posix() if file.is_relative_to(ROOT.resolve()) else str(file)
        )
        if where in PENDING:
            continue
        assert file.exists(), f"{name}: link {target!r}: no {where}"
        if anchor:
            assert file.suffix == ".md", f"{name}: link {target!r}: an anchor into a file that is not a page"
            assert anchor in anchors(file), f"{name}: link {target!r}: {where} has no heading #{anchor}"


def test_readme_has_exactly_two_setup_commands():
    text = README.read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert [c.strip() for c in commands] == [
        "bash .ci/install && python3 -m hooked repro tms",
        "bash .ci/install && python3 -m pytest -q",
    ]
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = commands[1].strip()
    for part in test_command.split("&&"):
        assert part.strip().replace("python3 ", "") in ci.replace("python3 ", "")


def test_readme_fits_on_a_few_screens():
    assert len(README.read_text().splitlines()) <= 300
