"""The registry, plugins and the command line."""

from __future__ import annotations

import json

import pytest
import torch

from hooked import cli, registry
from hooked.io import RunDir, read_json, write_json

PLUGIN = '''
import hooked
import torch

@hooked.register_analysis("test-mean-norm")
def mean_norm(model, hook, data, *, top: int = 2, scale: float = 1.0, run_dir=None):
    """Mean activation norm at a hook.

    Args:
        top: how many largest norms to report.
        scale: multiply the norms by this.
    """
    _, cache = model.run_with_cache(data, names_filter=hook)
    norms = cache[hook].flatten(0, -2).norm(dim=-1) * scale
    if run_dir is not None:
        run_dir.json("norms.json", norms)
    return {"mean": norms.mean().item(), "top": norms.topk(top).values.tolist()}

@hooked.register_analysis
class CountZeros:
    """Fraction of exact zeros."""
    def __init__(self, *, threshold: float = 0.0):
        self.threshold = threshold
    def __call__(self, model, hook, data):
        _, cache = model.run_with_cache(data, names_filter=hook)
        return {"zeros": (cache[hook].abs() <= self.threshold).float().mean().item()}
'''


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN)
    registry.load_plugins([str(path)])
    yield path
    for name in ("test-mean-norm", "count-zeros"):
        registry._REGISTRY["analysis"].pop(name, None)


def test_user_analysis_appears_in_cli_and_runs(plugin, tmp_path, capsys):
    assert cli.main(["analyses"]) == 0
    listing = capsys.readouterr().out
    assert "test-mean-norm" in listing and "--top" in listing and "count-zeros" in listing

    out_dir = tmp_path / "run"
    code = cli.main(
        [
            "run",
            "test-mean-norm",
            "--model",
            "toy-relu",
            "--hook",
            "hook_hidden",
            "--top",
            "3",
            "--model-n-instances",
            "2",
            "--out",
            str(out_dir),
        ]
    )
    assert code == 0
    record = read_json(out_dir / "result.json")
    assert record["options"] == {"top": 3, "scale": 1.0}
    assert record["model_options"]["n_instances"] == 2
    assert len(record["result"]["top"]) == 3
    assert (out_dir / "norms.json").exists()

    code = cli.main(
        [
            "run",
            "count-zeros",
            "--model",
            "toy-relu",
            "--hook",
            "hook_out",
            "--threshold",
            "0",
            "--out",
            str(tmp_path / "r2"),
        ]
    )
    assert code == 0 and 0 <= read_json(tmp_path / "r2" / "result.json")["result"]["zeros"] <= 1


def test_option_help_comes_from_docstring(plugin):
    entry = registry.get("analysis", "test-mean-norm")
    opts = {o.name: o for o in entry.options}
    assert set(opts) == {"top", "scale"}
    assert opts["top"].type is int and opts["top"].help.startswith("how many")


def test_cli_errors_are_clear(plugin, capsys):
    assert cli.main(["run", "test-mean-norm", "--model", "toy-relu", "--hook", "hook_hiden"]) == 2
    assert "hook_hidden" in capsys.readouterr().err
    assert cli.main(["run", "test-mean-norn", "--model", "toy-relu", "--hook", "hook_hidden"]) == 2
    assert "test-mean-norm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "test-mean-norm", "--model", "toy-relu", "--hook", "hook_hidden", "--top", "many"])


def test_hooks_command_lists_shapes(capsys):
    assert cli.main(["hooks", "toy-relu", "--n-instances", "3", "--batch-size", "10"]) == 0
    out = capsys.readouterr().out
    assert "hook_hidden  [10, 3, 2]" in out and "hook_out     [10, 3, 5]" in out


def test_entry_point_plugins_register(monkeypatch):
    class FakeEP:
        name = "ep-analysis"
        value = "somepkg:fn"

        def load(self):
            def fn(model, hook, data, *, k: int = 1):
                """From an entry point."""
                return {"k": k}

            return fn

    def fake_entry_points(group):
        return [FakeEP()] if group == "hooked.analyses" else []

    monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_loaded_entry_points", False)
    try:
        registry.load_entry_points()
        entry = registry.get("analysis", "ep-analysis")
        assert entry.help == "From an entry point." and entry.options[0].name == "k"
    finally:
        registry._REGISTRY["analysis"].pop("ep-analysis", None)


def test_duplicate_names_are_refused():
    @registry.register_analysis("dup-test")
    def a(model, hook, data):
        return {}

    try:
        with pytest.raises(ValueError, match="already registered"):

            @registry.register_analysis("dup-test")
            def b(model, hook, data):
                return {}
    finally:
        registry._REGISTRY["analysis"].pop("dup-test", None)


def test_value_parsing():
    from typing import Literal

    def f(
        run_dir,
        *,
        sizes: list[int] = (1,),
        mode: Literal["a", "b"] = "a",
        p: float | None = None,
        flag: bool = False,
    ):
        pass

    opts = {o.name: o for o in registry.options_of(f, skip=1)}
    assert registry.parse_value(opts["sizes"], "48,64,128") == [48, 64, 128]
    assert registry.parse_value(opts["mode"], "b") == "b"
    with pytest.raises(ValueError):
        registry.parse_value(opts["mode"], "c")
    assert registry.parse_value(opts["p"], "none") is None and registry.parse_value(opts["p"], "0.5") == 0.5
    assert registry.parse_value(opts["flag"], "yes") is True


def test_run_dir_and_atomic_json(tmp_path):
    a = RunDir.create(tmp_path, "x")
    b = RunDir.create(tmp_path, "x")
    assert a.path != b.path and a.path.exists() and b.path.exists()
    write_json(a / "r.json", {"t": torch.arange(3), "f": float("nan")})
    assert json.loads((a / "r.json").read_text()) == {"t": [0, 1, 2], "f": "nan"}
    assert not [p for p in a.path.iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError, match="not valid JSON"):
        (a / "bad.json").write_text("{")
        read_json(a / "bad.json")


def test_written_files_get_the_usual_mode(tmp_path):
    import os
    import stat

    path = write_json(tmp_path / "r.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
