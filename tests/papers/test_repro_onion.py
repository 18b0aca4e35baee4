"""``hooked repro onion``: the table, the verdict against the claim, and a tiny end-to-end run."""

from __future__ import annotations

import pytest

from hooked.io import RunDir, read_json
from papers.onion.report import paper_claim, size_table, verdict_text
from papers.onion.repro import onion


def row(size, model, uni, bi, on, seed=0):
    return {
        "size": size,
        "seed": seed,
        "model_steps": 10,
        "intervention_steps": 5,
        "model_valid_accuracy": model,
        "interventions": {"unigram": uni, "bigram": bi, "onion": on},
        "intervention_details": {m: {"steps": 5} for m in ("unigram", "bigram", "onion")},
    }


def test_table_and_verdict_follow_the_numbers():
    rows = [
        row(48, 0.9, 0.1, 0.2, 0.9),
        row(48, 0.9, 0.3, 0.2, 0.7, seed=1),
        row(512, 1.0, 0.95, 0.5, 0.2),
        row(128, 1.0, 0.5, 0.5, 0.5),
    ]
    table = size_table(rows, [48, 128, 512], probes=False)
    cell = table["cells"]["48"]["unigram"]
    assert cell["n"] == 2 and abs(cell["mean"] - 0.2) < 1e-9 and abs(cell["std"] - 0.1) < 1e-9
    verdict = verdict_text(table).splitlines()
    assert "N=48" in verdict[1] and verdict[1].endswith(": agrees")  # linear 0.25 < 0.5, onion 0.8 >= 0.8
    assert "no claim" in verdict[2]
    assert verdict[3].endswith(": agrees")  # linear 0.95 >= 0.8 at N=512
    rows[2]["interventions"]["unigram"] = 0.6
    assert (
        verdict_text(size_table(rows, [48, 128, 512], probes=False))
        .splitlines()[3]
        .endswith("does not agree")
    )
    assert paper_claim(64) != paper_claim(1024)


@pytest.mark.slow
def test_tiny_end_to_end_run_writes_results_and_resumes(tmp_path):
    run_dir = RunDir(tmp_path)
    kw = dict(
        sizes=(9,), steps=4, intervention_steps=2, probe_steps=2, batch_size=16, n_train=5000, progress=False
    )
    out = onion(run_dir, **kw)
    assert set(out["table"]["9"]) == {
        "model",
        "unigram",
        "bigram",
        "das",
        "onion",
        "linear probe",
        "mlp probe",
        "onion probe",
    }
    assert (tmp_path / "onion.png").exists() and (
        tmp_path / "models" / "gru-N9-seed0" / "model.safetensors"
    ).exists()
    saved = read_json(tmp_path / "gru-N9-seed0.json")
    assert saved["model_steps"] == 4 and 0.0 <= saved["interventions"]["onion"] <= 1.0
    again = onion(run_dir, **kw)  # every (size, seed) is reused, nothing retrained
    assert again["rows"][0]["interventions"] == out["rows"][0]["interventions"]
