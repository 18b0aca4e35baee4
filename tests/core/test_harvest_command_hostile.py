"""``hooked harvest`` tried as a hostile user would: a full disk, an output folder that cannot be
made, token ids that are floats, negative or outside the vocabulary, a line that is not UTF-8, a
FIFO as the data file, ranks given different ``--out``, a huge line of text. Each printed a Python
traceback, hung, or did more work than asked before (issue 22); now each is one line on stderr
and exit code 2 (bad input) or 1 (the disk or the model failed), or is right."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hooked import store
from hooked.cli import main
from hooked.io import write_tensors
from tests.multiproc import run_world

ROOT = Path(__file__).resolve().parents[2]
TOY = ["harvest", "--model", "toy-relu", "--hooks", "hook_hidden,hook_out", "--rows", "300", "--no-progress"]
LLAMA = ["harvest", "--model", "tiny-llama", "--hooks", "model.layers.0.hook_out", "--no-progress"]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("hooked")]
    assert len(lines) == 1, err  # one line (besides transformers' own progress bars)
    return lines[0]


def test_a_full_disk_is_one_line_and_exit_code_1(tmp_path, monkeypatch, capsys):
    real = os.write

    def full(fd, data):
        if ".tmp" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", full)
    assert main([*TOY, "--out", str(tmp_path / "s")]) == 1
    line = _error(capsys)
    assert line.startswith(f"hooked harvest: error: cannot write the store {tmp_path / 's'}: ")
    assert "No space left on device" in line


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    assert main([*TOY, "--out", str(tmp_path / "file" / "s")]) == 2  # before: NotADirectoryError
    assert "cannot create the folder" in _error(capsys)

    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", refused)  # an unwritable parent (the tests run as root)
    assert main([*TOY, "--out", str(tmp_path / "s")]) == 2
    assert "cannot create the folder" in (line := _error(capsys)) and "Permission denied" in line


@pytest.mark.parametrize(
    "ids, says",
    [
        (torch.rand(3, 5), "input_ids must be integer token ids, got float32"),
        (
            torch.tensor([[1, -2, 3]]),
            r"token ids must be in 0..63 \(the model's vocabulary\); found -2 at \[0, 1\]",
        ),
        (torch.tensor([[1, 2], [3, 64]]), r"token ids must be in 0..63 .*found 64 at \[1, 1\]"),
    ],
    ids=["floats", "negative", "out of the vocabulary"],
)
def test_token_ids_are_checked_before_the_model_runs(tmp_path, capsys, ids, says):
    write_tensors(tmp_path / "ids.safetensors", {"input_ids": ids})
    argv = [*LLAMA, "--data", str(tmp_path / "ids.safetensors"), "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    line = _error(capsys)
    assert line.startswith(f"hooked harvest: error: --data {tmp_path / 'ids.safetensors'}: input_ids")
    assert __import__("re").search(says, line), line
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


def test_inputs_the_model_cannot_take_are_one_line_and_exit_code_1(tmp_path, capsys):
    write_tensors(tmp_path / "x.safetensors", {"x": torch.randn(10, 7)})  # floats for a language model
    assert main([*LLAMA, "--data", str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "s")]) == 1
    assert "hooked harvest: error: the model failed: " in _error(capsys)


def test_two_names_of_one_hook_point_on_the_command_line(tmp_path, capsys):
    argv = [*LLAMA[:3], "--hooks", "model.embed_tokens.hook_out,hook_embed", "--rows", "12", "--per-sample"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "s")]) == 2  # before: stacked rows
    assert "are two names of one hook point" in _error(capsys)


def test_a_shard_size_that_is_not_a_number(tmp_path, capsys):
    assert main([*TOY, "--shard-mb", "nan", "--out", str(tmp_path / "s")]) == 2
    assert "--shard-mb must be a positive number of MiB, got nan" in _error(capsys)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tests.lm.conftest import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


def _text_argv(folder, data, out, length=8):
    return [
        "harvest", "--model", str(folder), "--model-backend", "wrap", "--hooks", "model.layers.0.hook_out",
        "--data", str(data), "--length", str(length), "--batch-size", "2", "--no-progress", "--out", str(out),
    ]  # fmt: skip


def test_a_line_that_is_not_utf8_is_named(tmp_path, tiny_folder, capsys):
    data = tmp_path / "texts.txt"
    data.write_bytes(b"the cat sat\na dog ran\nthe \xff\xfe mat\n")
    assert main(_text_argv(tiny_folder, data, tmp_path / "s")) == 2
    assert _error(capsys) == f"hooked harvest: error: --data {data}: line 3 is not UTF-8 text"


def test_a_huge_line_is_cut_before_it_is_tokenized(tmp_path, tiny_folder, monkeypatch, capsys):
    from hooked import lm

    lines = ["the cat sat on the mat", "the big red house " * 20_000, "a dog ran to the sea", "we"]
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(lines) + "\n")
    seen = []
    tokenize = lm.tokenize

    def spy(model, texts, **kwargs):
        seen.extend(len(t) for t in ([texts] if isinstance(texts, str) else texts))
        return tokenize(model, texts, **kwargs)

    monkeypatch.setattr(lm, "tokenize", spy)
    assert main(_text_argv(tiny_folder, data, tmp_path / "s")) == 0
    capsys.readouterr()
    assert max(seen) <= 8 * (8 + 16)  # the stated bound, 8 * (--length + 16) characters; not 360,000
    monkeypatch.undo()
    # the same rows as the whole lines tokenized and cut to 8 tokens
    model = lm.load(tiny_folder, backend="wrap")
    batches = [lm.tokenize(model, lines[i : i + 2], padding_side="right", max_length=8) for i in (0, 2)]
    want = store.harvest(model, batches, ["model.layers.0.hook_out"], tmp_path / "want", progress=False)
    got, ref = store.open(tmp_path / "s"), store.open(want)
    assert got.num_rows == ref.num_rows == 6 + 8 + 6 + 1
    for c in ref.column_names:
        assert torch.equal(got[c][:], ref[c][:])


_HARVEST_FIFO = """
import os, sys
from hooked.cli import main
os.mkfifo(sys.argv[1])
sys.exit(main(["harvest", "--model", "toy-relu", "--hooks", "hook_out", "--data", sys.argv[1],
               "--out", sys.argv[2], "--no-progress"]))
"""


def test_a_fifo_as_the_data_file_is_refused_not_waited_on(tmp_path):
    """In a subprocess: safetensors waited on the FIFO holding the GIL (no thread could run)."""
    fifo = tmp_path / "inputs.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _HARVEST_FIFO, str(fifo), str(tmp_path / "s")],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("hooked harvest blocked on a FIFO")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{fifo} is a FIFO; expected a regular file" in done.stderr


def _rank_with_its_own_out(folder: str) -> tuple[int, str]:
    from hooked import distributed

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main([*TOY, "--out", f"{folder}/rank{distributed.rank()}"])
    return rc, err.getvalue()


@pytest.mark.distributed
def test_ranks_given_different_out_folders_all_stop_with_one_line(tmp_path):
    results = run_world(_rank_with_its_own_out, 2, str(tmp_path), timeout=90)
    for rc, err in results:  # before: rank 1 failed on a missing file and rank 0 waited forever
        assert rc == 2 and "Traceback" not in err, err
        assert "the ranks were given different output folders (rank 0: " in err
    assert not list(tmp_path.iterdir())  # nothing was written
