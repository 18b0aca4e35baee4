"""The command line with a language model on disk (``--model FOLDER``) and texts (``--data``)."""

from __future__ import annotations

import pytest
import torch

from hooked import cli, lm
from hooked.io import read_json
from hooked.lm.loading.command_line import is_model_path, path_entry, text_data

LINES = [
    "the cat sat on the mat",
    "a dog ran to the house",
    "the big red car",
    "a small bird",
    "the fish is in the sea",
    "a tree",
    "the old road ran up the hill",
    "a sun and a moon",
]


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(LINES[:4]) + "\n\n" + "\n".join(LINES[4:]) + "\n")  # a blank line is skipped
    return path


def test_hooks_of_a_model_folder(tiny_folder, capsys):
    assert cli.main(["hooks", str(tiny_folder), "--backend", "wrap"]) == 0
    out = capsys.readouterr().out
    assert "model.layers.1.hook_in" in out and "[1, 8, 32]" in out  # the example prompt: 8 words


def test_an_analysis_reads_many_texts_as_padded_batches(tiny_folder, texts, tmp_path):
    from analyses.probes import ridge_probe_analysis

    labels = tmp_path / "labels.json"
    labels.write_text("[0, 1, 0, 1, 0, 1, 0, 1]")  # "the ..." or "a ...": the first token
    out = tmp_path / "run"
    hook = "model.layers.1.hook_in"
    argv = ["run", "ridge-probe", "--model", str(tiny_folder), "--model-backend", "wrap", "--hook", hook]
    argv += ["--data", str(texts), "--labels", str(labels), "--folds", "2", "--pool", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    record = read_json(out / "result.json")
    assert record["model_options"]["path"] == str(tiny_folder)
    result = record["result"]
    assert result["n"] == 8 and result["accuracy"] == 1.0  # the first token: a perfect probe
    model = lm.load(tiny_folder, backend="wrap")
    batches = text_data(model, texts, padded=True, batch_size=3)
    assert [b["input_ids"].shape[0] for b in batches] == [3, 3, 2] and "attention_mask" in batches[0]
    alone = ridge_probe_analysis(
        model, hook, [lm.to_tokens(model, t) for t in LINES], labels=str(labels), folds=2, pool="mean"
    )
    padded = ridge_probe_analysis(model, hook, batches, labels=str(labels), folds=2, pool="mean")
    assert padded == alone  # padded batches give what one text at a time gives


def test_an_analysis_that_reads_every_position_gets_no_padding(tiny_folder, texts, tmp_path):
    out = tmp_path / "run"
    argv = ["run", "spotlight", "--model", str(tiny_folder), "--model-backend", "wrap"]
    argv += [
        "--hook",
        "model.layers.1.hook_in",
        "--data",
        str(texts),
        "--null-bases",
        "0",
        "--max-planes",
        "20",
    ]
    assert cli.main(argv + ["--out", str(out)]) == 0
    counted = read_json(out / "result.json")["result"]
    tokens = sum(len(t.split()) for t in LINES)
    srm = counted["srm"]
    assert srm["n"] + srm.get("n_zero", 0) == tokens  # every real token is one sample, and nothing else


def test_command_line_errors(tiny_folder, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    argv = [
        "run",
        "ridge-probe",
        "--model",
        str(tiny_folder),
        "--model-backend",
        "wrap",
        "--hook",
        "hook_out",
    ]
    assert cli.main(argv + ["--data", str(empty)]) == 2
    assert "has no text" in capsys.readouterr().err
    assert cli.main(argv + ["--data", str(tmp_path / "missing.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert is_model_path(str(tmp_path / "model.gguf")) and not is_model_path("smollm2-135m")
    entry = path_entry(str(tiny_folder))
    assert [o.name for o in entry.options] == ["path", "backend", "dtype", "prompt"]
    model, tokens = entry.call(options={"path": str(tiny_folder), "backend": "wrap", "dtype": "bfloat16"})
    assert tokens.shape == (1, 8) and next(model.parameters()).dtype == torch.bfloat16
