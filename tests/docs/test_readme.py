"""The README's examples run as written (a block right after a ``<!-- slow -->`` line runs in
the slow test only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def python_blocks(slow: bool | None = None) -> list[str]:
    """The python blocks of the README: all, or only the slow-marked (``slow=True``) or the others."""
    found = re.findall(r"(<!-- slow -->\n)?```python\n(.*?)```", README.read_text(), flags=re.S)
    return [code for mark, code in found if slow is None or bool(mark) == slow]


def run_blocks(blocks: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert blocks, "README has no such python examples"
    from hooked import registry

    monkeypatch.chdir(tmp_path)
    before = {k: dict(v) for k, v in registry._REGISTRY.items()}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    finally:
        registry._REGISTRY.update(before)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    run_blocks(python_blocks(slow=False), tmp_path, monkeypatch)


@pytest.mark.slow
def test_readme_slow_python_examples_run(tmp_path, monkeypatch):
    run_blocks(python_blocks(slow=True), tmp_path, monkeypatch)


def test_readme_has_exactly_two_setup_commands():
    text = README.read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = commands[1].strip()
    for part in test_command.split("&&"):
        assert part.strip().replace("python3 ", "") in ci.replace("python3 ", "")
