"""The superposition reproductions run end to end on tiny settings and write their results."""

from __future__ import annotations

import json

import pytest
import torch

from hooked.cli import main

TEXT = [
    "In January the lake froze and in February the ice was thick. Skaters came in March and April.",
    "The cat sat with the dog in May. A dog and a cat are animals that sleep in June.",
    "Mars and Venus are planets. Earth is a planet too, seen in July and August.",
    "Harvest comes in September and October. November is cold, December colder.",
] * 6


# settings small enough for a test, every stage of `hooked repro tms` still run (also tests/views)
TINY_TMS = (
    "--steps",
    "60",
    "--big-steps",
    "30",
    "--phase-steps",
    "30",
    "--phase-grid",
    "3",
    "--sparsities",
    "3",
    "--big-sparsities",
    "3",
    "--restarts",
    "2",
)


def test_repro_tms_tiny(tmp_path, capsys):
    out = tmp_path / "tms"
    args = [
        "repro",
        "tms",
        *TINY_TMS,
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "paper:" in text and "found:" in text and "n=5,m=2 sparsest" in text
    for name in (
        "tms_hidden_n5_m2.png",
        "tms_dimensionality.png",
        "tms_phase_diagram.png",
        "tms.json",
        "results.json",
    ):
        assert (out / name).is_file(), name
    res = json.loads((out / "tms.json").read_text())
    assert len(res["n5_m2"]["best"]) == 3 and len(res["phase"]["phases"]) == 3
    assert (out / "n5_m2" / "model.safetensors").is_file()


def test_repro_bows_synthetic_tiny(tmp_path, capsys):
    out = tmp_path / "syn"
    args = [
        "repro",
        "bows-synthetic",
        "--kinds",
        "circular,iid",
        "--latent-sizes",
        "2,3",
        "--weight-decays",
        "0,6",
        "--n-samples",
        "600",
        "--n-train",
        "512",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "circular/wd=6" in capsys.readouterr().out
    res = json.loads((out / "bows_synthetic.json").read_text())
    assert len(res["rows"]) == 2 * 2 * 2
    assert (out / "bows_synthetic_gram_circular.png").is_file() and (
        out / "bows_synthetic_summary.png"
    ).is_file()


def test_repro_bows_on_a_custom_corpus(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOOKED_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(TEXT):
        (corpus / f"{i:02d}.txt").write_text(doc)
    out = tmp_path / "bows"
    args = [
        "repro",
        "bows",
        "--corpus",
        str(corpus),
        "--vocab-size",
        "60",
        "--window",
        "2",
        "--latent",
        "6",
        "--weight-decays",
        "0,4",
        "--latent-sizes",
        "3,6",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--n-clusters",
        "4",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "months 12-cycle in W (wd=4)" in text and "constructive interference" in text
    res = json.loads((out / "bows.json").read_text())
    assert res["data"]["documents"] == len(TEXT) and len(res["models"]) == 2
    for name in ("bows_months_pca.png", "bows_months_corr.png", "bows_r2.png", "bows_gram_vs_latent.png"):
        assert (out / name).is_file(), name
    # a second run reads the windows from the cache
    assert main(args + ["--epochs", "1", "--overwrite"]) == 0  # the folder holds a finished run
    assert "from cache" in capsys.readouterr().out


def test_registered_analyses_run_from_the_command_line(tmp_path):
    for name in ("feature-dimensionality", "feature-geometry", "group-geometry", "interference"):
        out = tmp_path / name
        assert main(["run", name, "--model", "toy-relu", "--hook", "hook_hidden", "--out", str(out)]) == 0
        assert json.loads((out / "result.json").read_text())["analysis"] == name
    assert (tmp_path / "feature-geometry" / "hidden_space.png").is_file()


def test_tms_density_sweep_is_geometric_from_dense_to_sparse():
    from papers.tms.data import density_sweep

    p = density_sweep(4, 0.05)
    assert p[0] == 1 and p[-1] == pytest.approx(0.05)
    assert torch.allclose(p[1:] / p[:-1], torch.full((3,), 0.05 ** (1 / 3)))
    with pytest.raises(ValueError, match="min_density"):
        density_sweep(3, 0.0)
