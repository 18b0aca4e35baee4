"""``hooked repro weight-space``: the verdict against the paper's claim, and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from papers.weight_space.report import format_table, verdict

ENCODERS = ["flat", "stats", "transformer", "dws", "noninteractive", "interactive"]


def scores(task_id: dict, chance: float = 0.1) -> dict:
    task = {e: {"id": v, "ood": v / 2} for e, v in task_id.items()}
    task["chance"] = {"id": chance, "ood": chance}
    other = {e: {"id": 0.5, "ood": 0.5} for e in [*task_id, "chance"]}
    return {
        "task": task,
        "step": other,
        "return": other,
        "n_used": {t: {"train": 9, "id": 3, "ood": 2} for t in ("task", "step", "return")},
    }


def test_verdict_reads_the_claim_off_the_exact_task_scores():
    s = scores(
        {
            "flat": 0.2,
            "stats": 0.3,
            "transformer": 0.1,
            "dws": 0.25,
            "noninteractive": 0.5,
            "interactive": 0.6,
        }
    )
    v = verdict(s, "formal-languages", ENCODERS)["id"]
    assert v["every_probing_beats_every_mechanistic"] and v["interactive_is_best"] and v["any_above_chance"]
    assert v["best_mechanistic"] == "stats" and v["best_probing"] == "interactive"

    s = scores(
        {
            "flat": 0.2,
            "stats": 0.45,
            "transformer": 0.1,
            "dws": 0.25,
            "noninteractive": 0.5,
            "interactive": 0.4,
        }
    )
    v = verdict(s, "formal-languages", ENCODERS)["id"]
    assert not v["every_probing_beats_every_mechanistic"] and v["best_probing_beats_best_mechanistic"]
    assert not v["interactive_is_best"]

    s = scores({e: 0.0 for e in ENCODERS}, chance=0.0)
    v = verdict(s, "digits", ENCODERS)["ood"]
    assert (
        not v["best_probing_beats_best_mechanistic"]
        and not v["any_above_chance"]
        and "interactive_is_best" not in v
    )


def test_table_prints_every_encoder_and_the_claim():
    s = scores({"stats": 0.3, "interactive": 0.6})
    block = {
        "zoo": "Zoo(...)",
        "splits": {"train": 9},
        "downstream": s,
        "encoders": {
            "stats": {"family": "mechanistic", "emulation_tv": {"val": 0.1}},
            "interactive": {"family": "functionalist", "emulation_tv": {"val": 0.2}},
        },
        "verdict": verdict(s, "digits", ["stats", "interactive"]),
    }
    text = format_table("digits", block)
    assert "interactive" in text and "stats" in text and "chance" in text and "paper's claim" in text
    assert "every probing encoder beats every mechanistic one" in text


@pytest.mark.slow
def test_repro_runs_end_to_end_on_tiny_settings(tmp_path):
    from hooked import registry
    from hooked.io import RunDir
    from papers.weight_space.zoo import Zoo

    entry = registry.get("repro", "weight-space")
    run_dir = RunDir(tmp_path / "run")
    out = entry.call(
        run_dir,
        zoos=["languages", "digits"],
        runs=8,
        zoo_steps=4,
        max_n=3,
        encoder_steps=2,
        members=4,
        seqs=1,
        progress=False,
    )
    assert set(out["zoos"]) == {"languages", "digits"}
    for zoo_name, block in out["zoos"].items():
        assert set(block["encoders"]) == set(ENCODERS)
        assert "interactive (untrained)" in block["downstream"]["task"]
        zoo = Zoo.load(tmp_path / "run" / f"zoo-{zoo_name}")
        assert len(zoo) == 8 * len(zoo.meta["snapshots"]) and len(set(zoo.runs.tolist())) == 8
    saved = json.loads((tmp_path / "run" / "weight_space.json").read_text())
    assert saved["claim"] == out["claim"]
    assert (tmp_path / "run" / "weight_space.png").stat().st_size > 1000
    # the zoos are reusable
    again = entry.call(
        RunDir(tmp_path / "again"),
        zoos=["languages"],
        encoders=["stats"],
        encoder_steps=1,
        members=4,
        seqs=1,
        controls=False,
        zoo_dir=str(tmp_path / "run"),
        progress=False,
    )
    assert list(again["zoos"]["languages"]["encoders"]) == ["stats"]
    with pytest.raises(ValueError, match="unknown zoo/encoder"):
        entry.call(RunDir(tmp_path / "bad"), encoders=["nope"], progress=False)
