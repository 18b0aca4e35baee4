"""``hooked.checkpoint`` tried as a hostile user would: files that are not regular files (a FIFO
blocked the loader forever), configs nested too deeply (a RecursionError) or too large, and
arguments of the wrong type. Each gave a hang or an internal traceback before (issue 22)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hooked import checkpoint
from hooked.io import read_json, read_tensors
from hooked.models.toy_relu import ToyReLU

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def saved(tmp_path):
    return checkpoint.save(ToyReLU(5, 2, 1, seed=0), tmp_path / "ck")


def _returns_within(fn, seconds: float = 20.0):
    """``fn()``'s exception or result, from a thread, failing the test if it blocks longer."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return t, box


def _unblock(fifo) -> None:
    """Let a reader blocked on ``fifo`` go (open it for writing once, and close it)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


_LOAD_BOTH = """
import sys
from hooked import checkpoint
for folder in sys.argv[1:]:
    try:
        checkpoint.load(folder)
        print("loaded")
    except ValueError as e:
        print(e)
"""


def test_a_fifo_in_place_of_a_file_is_refused_not_waited_on(tmp_path):
    """In a subprocess: the weights were read by safetensors, which waited on a FIFO holding the
    GIL, so that no thread of the process could run again."""
    folders = []
    for which in ("config.json", "model.safetensors"):
        folder = checkpoint.save(ToyReLU(5, 2, 1, seed=0), tmp_path / which)
        (folder / which).unlink()
        os.mkfifo(folder / which)
        folders.append(str(folder))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_BOTH, *folders], capture_output=True, text=True, timeout=60, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail("checkpoint.load blocked on a FIFO")
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stderr[-2000:]
    for which, line in zip(("config.json", "model.safetensors"), lines):
        assert line.endswith(f"{which} is a FIFO; expected a regular file")


def test_the_readers_refuse_a_fifo_and_a_folder(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    for read in (read_json, read_tensors):
        thread, box = _returns_within(lambda read=read: read(tmp_path / "pipe"))
        _unblock(tmp_path / "pipe")
        assert not thread.is_alive() and "is a FIFO" in str(box.get("error"))
        with pytest.raises(ValueError, match="folder is a folder, not a file"):
            read(tmp_path / "folder")


def test_a_config_nested_too_deeply_is_a_clear_error(saved):
    info = json.loads((saved / "config.json").read_text())
    text = json.dumps(info).replace('"meta": {}', '"meta": ' + "[" * 100_000 + "]" * 100_000)
    (saved / "config.json").write_text(text)
    with pytest.raises(
        ValueError, match="config.json nests its JSON values too deeply"
    ):  # before: RecursionError
        checkpoint.load(saved)
    text = json.dumps(info).replace('"meta": {}', '"meta": ' + "[" * 200 + "]" * 200)
    (saved / "config.json").write_text(text)
    with pytest.raises(ValueError, match="more than 64 levels deep"):
        checkpoint.load(saved)
    info["meta"] = {"a": [[1, 2], {"b": [3]}]}  # nesting of an ordinary size loads
    (saved / "config.json").write_text(json.dumps(info))
    assert isinstance(checkpoint.load(saved), ToyReLU)


def test_a_huge_config_is_not_read(saved):
    with open(saved / "config.json", "ab") as f:
        f.truncate(64 * 2**20 + 1)  # checkpoint.MAX_CONFIG_BYTES + 1
    with pytest.raises(ValueError, match="config.json is larger than"):
        checkpoint.load(saved)


def test_a_folder_in_place_of_the_config_and_paths_of_the_wrong_type(saved, tmp_path):
    (saved / "config.json").unlink()
    (saved / "config.json").mkdir()
    with pytest.raises(ValueError, match="config.json is a folder, not a file"):  # before: IsADirectoryError
        checkpoint.load(saved)
    with pytest.raises(TypeError, match="expected a checkpoint folder's path, got NoneType"):
        checkpoint.load(None)
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        checkpoint.load(tmp_path / "nothing")
