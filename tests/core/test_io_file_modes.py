"""Files written atomically get the mode the user's umask gives new files, and ``hooked.io`` never
changes the process umask (not even to read it)."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hooked.io as hio


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@settings(max_examples=30, deadline=None)
@given(umask=st.integers(0, 0o777))
def test_written_files_follow_the_umask(tmp_path_factory, umask):
    folder = tmp_path_factory.mktemp("modes")
    old = os.umask(umask)
    try:
        assert hio.current_umask() == umask
        path = hio.write_json(folder / "r.json", {"a": 1})
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_io_never_touches_the_process_umask(monkeypatch, tmp_path):
    tree = ast.parse(Path(hio.__file__).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "umask"]
    assert not calls  # not at import, not anywhere

    def forbidden(*args):
        raise AssertionError("os.umask was called")

    monkeypatch.setattr(os, "umask", forbidden)
    hio.write_json(tmp_path / "a.json", {"a": 1})
    hio.current_umask()
    hio.RunDir.prepare(tmp_path / "run", finished="result.json")


def test_current_umask_without_proc(monkeypatch):
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    expected = os.umask(0o022)
    os.umask(expected)
    assert hio.current_umask() == expected
