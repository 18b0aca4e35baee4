"""Broken plugins are reported and skipped; results are never lost (``--out`` is checked before
the work starts, a finished run is replaced only with ``--overwrite``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hooked import cli, registry
from hooked.io import RunDir, read_json


@pytest.fixture
def counted(monkeypatch):
    """An analysis and a repro that count their calls (registered for one test)."""
    calls = {"analysis": 0, "repro": 0}

    def count_analysis(model, hook, data, *, k: int = 1):
        """Counts its calls."""
        calls["analysis"] += 1
        return {"k": k, "call": calls["analysis"]}

    def count_repro(run_dir, *, k: int = 1):
        """Counts its calls."""
        calls["repro"] += 1
        return {"k": k, "call": calls["repro"]}

    registry.register_analysis("test-counted")(count_analysis)
    registry.register_repro("test-counted")(count_repro)
    yield calls
    registry._REGISTRY["analysis"].pop("test-counted", None)
    registry._REGISTRY["repro"].pop("test-counted", None)


def run(out, *extra):
    return cli.main(
        ["run", "test-counted", "--model", "toy-relu", "--hook", "hook_hidden", "--out", str(out), *extra]
    )


# ---------------------------------------------------------------------- plugins
def test_a_plugin_that_raises_at_import_is_skipped(tmp_path, capsys):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text(
        "import hooked\n"
        "@hooked.register_analysis('test-half-registered')\n"
        "def f(model, hook, data):\n    return {}\n"
        "raise RuntimeError('boom at import')\n"
    )
    assert cli.main(["--plugin", str(bad), "models"]) == 0
    captured = capsys.readouterr()
    assert "toy-relu" in captured.out
    assert f"plugin {str(bad)!r} skipped: RuntimeError: boom at import" in captured.err
    assert "test-half-registered" not in registry.entries("analysis")  # nothing half-registered


@pytest.mark.parametrize(
    "spec", ["no_such_module_for_hooked_tests", "missing_plugin_file.py", "no/such/dir/p.py"]
)
def test_a_missing_plugin_is_skipped_for_every_command(spec, capsys):
    assert cli.main(["--plugin", spec, "models"]) == 0
    captured = capsys.readouterr()
    assert "toy-relu" in captured.out and f"plugin {spec!r} skipped" in captured.err


def test_hooked_plugins_naming_a_missing_module_does_not_break_the_cli(monkeypatch, capsys):
    monkeypatch.setenv("HOOKED_PLUGINS", "no_such_env_module_for_hooked_tests")
    assert cli.main(["analyses"]) == 0
    captured = capsys.readouterr()
    assert "spotlight" in captured.out and "no_such_env_module_for_hooked_tests" in captured.err


def test_strict_plugin_loading_raises():
    with pytest.raises(ModuleNotFoundError):
        registry.load_plugins(["no_such_strict_module_for_hooked_tests"], strict=True)


def test_a_plugin_cannot_take_a_built_in_name(tmp_path, capsys):
    plugin = tmp_path / "spot_plugin.py"
    plugin.write_text(
        "import hooked\n"
        "@hooked.register_analysis('spotlight')\n"
        "def mine(model, hook, data, *, k: int = 1):\n    return {'mine': k}\n"
    )
    assert cli.main(["--plugin", str(plugin), "analyses"]) == 0
    captured = capsys.readouterr()
    assert "spotlight" in captured.out and "skipped" in captured.err
    assert "analyses.spotlight.stream" in captured.err  # the message names the built-in
    assert registry.get("analysis", "spotlight").source == "analyses.spotlight.stream"


def test_a_built_in_name_is_protected_before_entry_points_load(monkeypatch):
    # whatever the order: a script registering 'spotlight' first must not break the built-in later
    monkeypatch.setattr(registry, "_REGISTRY", {k: {} for k in registry.KINDS})
    monkeypatch.setattr(registry, "_loaded_entry_points", False)

    def mine(model, hook, data):
        return {}

    with pytest.raises(ValueError, match="provided by the installed entry point"):
        registry.register_analysis("spotlight")(mine)
    registry.load_entry_points()
    assert registry.get("analysis", "spotlight").source == "analyses.spotlight.stream"


def test_a_broken_or_clashing_entry_point_is_skipped(monkeypatch):
    class EP:
        def __init__(self, name, value, obj):
            self.name, self.value, self._obj = name, value, obj

        def load(self):
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    def first(model, hook, data):
        return {}

    def second(model, hook, data):
        return {}

    eps = [
        EP("ep-broken", "pkg:broken", ImportError("no module named pkg")),
        EP("ep-twice", "pkg_a:first", first),
        EP("ep-twice", "pkg_b:second", second),
    ]
    monkeypatch.setattr(
        "importlib.metadata.entry_points", lambda group: eps if group == "hooked.analyses" else []
    )
    monkeypatch.setattr(registry, "_loaded_entry_points", False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            registry.load_entry_points()
        messages = [str(w.message) for w in caught if issubclass(w.category, registry.PluginWarning)]
        assert any("ep-broken" in m and "no module named pkg" in m for m in messages)
        assert any("ep-twice" in m and "already registered" in m for m in messages)
        assert registry._REGISTRY["analysis"]["ep-twice"].obj is first
    finally:
        for name in ("ep-broken", "ep-twice"):
            registry._REGISTRY["analysis"].pop(name, None)


def test_two_plugin_files_with_the_same_name_stay_apart(tmp_path):
    for folder, name in (("a", "test-same-stem-a"), ("b", "test-same-stem-b")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "plug.py").write_text(
            f"import hooked\n@hooked.register_analysis({name!r})\n"
            "def f(model, hook, data):\n    return {}\n"
        )
    try:
        registry.load_plugins([str(tmp_path / "a" / "plug.py"), str(tmp_path / "b" / "plug.py")], strict=True)
        a, b = registry.get("analysis", "test-same-stem-a"), registry.get("analysis", "test-same-stem-b")
        assert a.source != b.source
    finally:
        for name in ("test-same-stem-a", "test-same-stem-b"):
            registry._REGISTRY["analysis"].pop(name, None)


# ---------------------------------------------------------------------- --out
def test_a_finished_run_is_not_overwritten_without_overwrite(counted, tmp_path, capsys):
    out = tmp_path / "r"
    assert run(out, "--k", "1") == 0
    before = (out / "result.json").read_bytes()
    assert run(out, "--k", "2") == 2
    err = capsys.readouterr().err
    assert str(out) in err and "finished run" in err and "--overwrite" in err
    assert (out / "result.json").read_bytes() == before and counted["analysis"] == 1  # no work done
    assert run(out, "--k", "2", "--overwrite") == 0
    assert read_json(out / "result.json")["result"] == {"k": 2, "call": 2}


def test_an_interrupted_run_folder_is_reused(counted, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "plot.png").write_bytes(b"half")  # no result.json: not a finished run
    assert run(out) == 0 and read_json(out / "result.json")["result"]["k"] == 1


def test_out_empty_is_refused_not_the_current_folder(counted, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "test-counted", "--model", "toy-relu", "--hook", "hook_hidden", "--out", ""])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and counted["analysis"] == 0
    with pytest.raises(ValueError, match="empty"):
        RunDir.prepare("", finished="result.json")
    with pytest.raises(ValueError, match="empty"):
        RunDir("  ")


def test_out_at_a_file_is_refused_before_the_work(counted, tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert run(target) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert target.read_text() == "keep me" and counted["analysis"] == 0
    assert run(target / "below") == 2  # a folder under a file cannot be made
    assert counted["analysis"] == 0


def test_out_on_a_read_only_location_fails_before_the_work(counted, tmp_path, monkeypatch, capsys):
    import hooked.io

    real = hooked.io._create_temp

    def refuse(folder, prefix, mode=0o666):
        if "read_only" in str(folder):
            raise PermissionError(13, "Permission denied")
        return real(folder, prefix, mode)

    monkeypatch.setattr(hooked.io, "_create_temp", refuse)
    assert run(tmp_path / "read_only") == 2
    err = capsys.readouterr().err
    assert "cannot write into the run folder" in err and "Permission denied" in err
    assert counted["analysis"] == 0


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
def test_out_where_nothing_can_be_created(counted, capsys):
    assert run("/sys/hooked-test-run-folder") == 2  # sysfs refuses new entries, even to root
    assert "cannot create the run folder" in capsys.readouterr().err and counted["analysis"] == 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_folder(counted, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert run(ro) == 2 and counted["analysis"] == 0
    finally:
        ro.chmod(0o755)


def test_repro_out_finished_needs_overwrite_unless_it_resumes(counted, tmp_path, capsys):
    out = tmp_path / "rep"
    assert cli.main(["repro", "test-counted", "--out", str(out)]) == 0
    assert cli.main(["repro", "test-counted", "--out", str(out), "--k", "3"]) == 2
    assert "--overwrite" in capsys.readouterr().err and counted["repro"] == 1
    assert cli.main(["repro", "test-counted", "--out", str(out), "--k", "3", "--overwrite"]) == 0
    assert read_json(out / "results.json")["options"] == {"k": 3}
    registry.get("repro", "test-counted").obj.resumes = True  # a repro that resumes reuses the folder
    assert cli.main(["repro", "test-counted", "--out", str(out), "--k", "4"]) == 0
    assert counted["repro"] == 3


@settings(max_examples=40, deadline=None)
@given(
    name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), max_size=10),
    finished=st.booleans(),
    is_file=st.booleans(),
    overwrite=st.booleans(),
)
def test_run_folder_checks(tmp_path_factory, name, finished, is_file, overwrite):
    if not name.strip():
        with pytest.raises(ValueError, match="empty"):
            RunDir.prepare(name, finished="result.json")
        return
    if name in (".", ".."):
        return
    path = tmp_path_factory.mktemp("out") / name
    if is_file:
        path.write_text("data")
    elif finished:
        path.mkdir()
        (path / "result.json").write_text("{}")
    try:
        run_dir = RunDir.prepare(str(path), finished="result.json", overwrite=overwrite)
    except ValueError as e:
        assert str(path) in str(e)
        assert is_file or (finished and not overwrite)
        if is_file:
            assert path.read_text() == "data"
        else:
            assert (path / "result.json").read_text() == "{}"
    else:
        assert not is_file and (not finished or overwrite)
        assert run_dir.path == Path(path) and path.is_dir() and not (path / "result.json").exists()
