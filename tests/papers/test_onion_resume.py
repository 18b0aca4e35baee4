"""``repro onion`` resumes only work done with the same settings, says what it reuses, and refuses
(before any work) a run folder holding work done with other settings unless ``--overwrite``."""

from __future__ import annotations

import pytest
import torch

from hooked import checkpoint, cli
from hooked.errors import OptionError
from hooked.io import RunDir, read_json, write_json
from papers.onion.repeat import RepeatModel
from papers.onion.repro import onion
from papers.onion.training import MODEL_SETTINGS, prepare_resume

SETTINGS = dict(
    cell="gru",
    methods=("unigram", "onion"),
    steps=4,
    intervention_steps=2,
    probe_steps=2,
    batch_size=16,
    no_input=False,
    n_train=5000,
    probes=True,
)


def finished_piece(run_dir: RunDir, size: int = 9, seed: int = 0, **changes) -> None:
    """What a finished run with SETTINGS (plus ``changes``) leaves for one (size, seed)."""
    s = {**SETTINGS, **changes}
    model_settings = {k: s[k] for k in MODEL_SETTINGS if k in s} | {"size": size, "seed": seed}
    tag = f"{s['cell']}-N{size}-seed{seed}"
    torch.manual_seed(0)
    model = RepeatModel(s["cell"], size, no_input=s["no_input"])
    checkpoint.save(model, run_dir / "models" / tag, meta={"steps": s["steps"], "settings": model_settings})
    row = {
        **model_settings,
        "settings": model_settings,
        "model_steps": s["steps"],
        "model_valid_accuracy": 0.5,
        "model_valid9_accuracy": 0.5,
        "interventions": {m: 0.25 for m in s["methods"]},
        "intervention_details": {m: {"steps": s["intervention_steps"]} for m in s["methods"]},
        "probes": {"linear probe": 0.5},
        "probe_steps": s["probe_steps"],
    }
    write_json(run_dir / f"{tag}.json", row)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("changed", "says"),
    [
        (dict(no_input=True), "no_input False (now True)"),
        (dict(batch_size=32), "batch_size 16 (now 32)"),
        (dict(n_train=6000), "n_train 5000 (now 6000)"),
        (dict(steps=2), "trained 4 steps (now --steps 2)"),
        (dict(intervention_steps=500), "unigram intervention: 2 steps (now --intervention-steps 500)"),
        (dict(probe_steps=7), "probes: 2 steps (now --probe-steps 7)"),
    ],
)
def test_other_settings_are_refused_before_any_work(tmp_path, changed, says):
    run_dir = RunDir(tmp_path)
    finished_piece(run_dir)
    before = snapshot(tmp_path)
    kw = {k: v for k, v in {**SETTINGS, **changed}.items() if k != "cell"}
    with pytest.raises(ValueError, match="holds work done with other settings") as e:
        onion(run_dir, sizes=(9,), progress=False, **kw)
    assert says in str(e.value) and "--overwrite" in str(e.value)
    assert snapshot(tmp_path) == before  # nothing touched


def test_the_command_line_refuses_too(tmp_path, capsys):
    finished_piece(RunDir(tmp_path))
    write_json(tmp_path / "results.json", {"repro": "onion"})
    before = snapshot(tmp_path)
    argv = ["repro", "onion", "--out", str(tmp_path), "--sizes", "9", "--methods", "unigram,onion"]
    argv += ["--steps", "4", "--intervention-steps", "2", "--probe-steps", "2", "--batch-size", "16"]
    argv += ["--n-train", "5000", "--no-input", "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no_input False (now True)" in err and snapshot(tmp_path) == before


def test_overwrite_redoes_only_the_pieces_that_differ(tmp_path, capsys):
    run_dir = RunDir(tmp_path, overwrite=True)
    finished_piece(run_dir, size=9)
    finished_piece(run_dir, size=12, no_input=True)
    settings = {**SETTINGS, "intervention_steps": 3}
    prepare_resume(run_dir, (9, 12), 1, settings)
    out = capsys.readouterr().out
    assert (
        not (tmp_path / "models" / "gru-N12-seed0").exists()
        and not (tmp_path / "gru-N12-seed0.json").exists()
    )
    row = read_json(tmp_path / "gru-N9-seed0.json")  # the model and probes fit: only the interventions go
    assert row["interventions"] == {} and row["probes"] == {"linear probe": 0.5}
    assert (tmp_path / "models" / "gru-N9-seed0" / "model.safetensors").exists()
    assert "gru-N12-seed0: redoing the model" in out and "gru-N9-seed0: redoing unigram, onion" in out
    assert "reusing gru-N9-seed0 model (4 steps); gru-N9-seed0 probes (2 steps)" in out


def test_same_settings_say_what_is_reused(tmp_path, capsys):
    run_dir = RunDir(tmp_path)
    finished_piece(run_dir)
    before = snapshot(tmp_path)
    prepare_resume(run_dir, (9,), 1, dict(SETTINGS))
    out = capsys.readouterr().out
    assert "reusing gru-N9-seed0 model (4 steps); gru-N9-seed0 interventions unigram, onion (2 steps)" in out
    assert "probes (2 steps)" in out and snapshot(tmp_path) == before
    prepare_resume(run_dir, (9,), 1, {**SETTINGS, "steps": 10})  # more steps: trained on, pieces redone
    assert "gru-N9-seed0 model (4 steps, trained on to 10)" in capsys.readouterr().out


def test_old_or_orphaned_pieces_are_not_trusted(tmp_path):
    run_dir = RunDir(tmp_path)
    finished_piece(run_dir)
    row = read_json(tmp_path / "gru-N9-seed0.json")
    del row["settings"]
    write_json(tmp_path / "gru-N9-seed0.json", row)
    with pytest.raises(ValueError, match="settings are not recorded"):
        prepare_resume(run_dir, (9,), 1, dict(SETTINGS))
    finished_piece(run_dir)
    import shutil

    shutil.rmtree(tmp_path / "models")
    with pytest.raises(ValueError, match="model checkpoint .* is missing"):
        prepare_resume(run_dir, (9,), 1, dict(SETTINGS))


@pytest.mark.parametrize(
    ("options", "option"),
    [
        (dict(sizes=()), "sizes"),
        (dict(sizes=(48, -1)), "sizes"),
        (dict(sizes=(4,)), "sizes"),
        (dict(batch_size=15), "batch_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(seeds=0), "seeds"),
        (dict(steps=-1), "steps"),
        (dict(intervention_steps=0), "intervention_steps"),
        (dict(methods=("unigram", "nope")), "methods"),
    ],
)
def test_bad_options_are_refused_naming_them(tmp_path, options, option):
    with pytest.raises(OptionError) as e:
        onion(RunDir(tmp_path), progress=False, **options)
    assert e.value.option == option
    assert list(tmp_path.iterdir()) == []


def test_a_device_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(ValueError, match="device 'foo'"):
        onion(RunDir(tmp_path), device="foo", progress=False)


@pytest.mark.slow
def test_a_resumed_run_reports_what_it_ran(tmp_path):
    run_dir = RunDir(tmp_path)
    kw = dict(sizes=(9,), steps=4, intervention_steps=2, probe_steps=2, batch_size=16, n_train=5000)
    onion(run_dir, methods=("unigram",), progress=False, **kw)
    with pytest.raises(ValueError, match="other settings"):
        onion(run_dir, methods=("unigram",), no_input=True, progress=False, **kw)
    out = onion(RunDir(tmp_path, overwrite=True), methods=("unigram",), no_input=True, progress=False, **kw)
    row = read_json(tmp_path / "gru-N9-seed0.json")
    assert out["settings"]["no_input"] is True and row["settings"]["no_input"] is True
    assert (
        checkpoint.read_config(tmp_path / "models" / "gru-N9-seed0")["meta"]["settings"]["no_input"] is True
    )
    assert checkpoint.load(tmp_path / "models" / "gru-N9-seed0").config["no_input"] is True


def test_a_model_saved_before_the_repeat_model_moved_still_resumes(tmp_path):
    # run folders written while the model was hooked.models.repeat name that class in their config
    run_dir = RunDir(tmp_path)
    settings = {**SETTINGS, "n_train": 500, "probes": False}
    finished_piece(run_dir, **settings)
    model_dir = tmp_path / "models" / "gru-N9-seed0"
    info = read_json(model_dir / "config.json")
    assert info["class"] == "papers.onion.repeat:RepeatModel"
    write_json(model_dir / "config.json", {**info, "class": "hooked.models.repeat:RepeatModel"})
    before = snapshot(tmp_path / "models")
    onion(run_dir, sizes=(9,), progress=False, **{k: v for k, v in settings.items() if k != "cell"})
    assert snapshot(tmp_path / "models") == before  # reused as it was, not retrained
    assert read_json(tmp_path / "gru-N9-seed0.json")["interventions"] == {"unigram": 0.25, "onion": 0.25}
