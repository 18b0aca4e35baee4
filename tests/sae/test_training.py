"""Training dictionaries on activation stores: planted sparse features are recovered; a run killed
by SIGKILL and resumed ends identical to one never interrupted; two gloo processes give the one-
process result; several dictionaries train in one pass as they would alone; bad input stops with
an error that names the step, hook, argument or folder, and leaves the last checkpoint as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import hooked.sae as S
from hooked.store import StoreError
from tests.multiproc import run_world
from tests.sae.conftest import planted, write_store

FAST = dict(steps=400, batch_size=256, lr=1e-2, dead_tokens=5000, progress=False)


def best_cosine(sae, F):
    D = sae.W_dec.detach().float()
    D = D / D.norm(dim=1, keepdim=True)
    return (F @ D.T).max(dim=1).values.mean().item()


@pytest.mark.parametrize(
    "kind, width, steps", [("topk", 32, 400), pytest.param("batchtopk", 48, 800, marks=pytest.mark.slow)]
)
def test_planted_features_are_recovered(planted_store, kind, width, steps):
    path, X, F, _ = planted_store
    sae = S.train(path, "hook_x", kind=kind, width=width, k=3, **{**FAST, "steps": steps})
    assert best_cosine(sae, F) >= 0.9
    with torch.no_grad():  # it reconstructs the model's own (unscaled) activations
        x = X[:2000]
        ev = 1 - (sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        l0 = (sae.encode(x) > 0).float().sum(1).mean()
    assert ev > 0.8 and 2 <= l0 <= 3.5


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, extra", [("standard", dict(l1=1.0)), ("jumprelu", dict(l1=1.0, bandwidth=0.2))]
)
def test_planted_features_are_recovered_by_relu_and_jumprelu(planted_store, kind, extra):
    path, X, F, _ = planted_store
    sae = S.train(path, "hook_x", kind=kind, width=32, **{**FAST, "steps": 600}, **extra)
    assert best_cosine(sae, F) >= 0.9


@pytest.mark.slow
def test_a_transcoder_learns_the_map_between_two_hooks(planted_store):
    path, X, F, model = planted_store
    tc = S.train(path, "hook_x", hook_out="hook_y", kind="topk", width=32, k=3, **{**FAST, "steps": 800})
    assert isinstance(tc, S.Transcoder) and (tc.hook, tc.hook_out) == ("hook_x", "hook_y")
    with torch.no_grad():
        x = X[:2000]
        y = model(x)
        fvu = (tc(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    assert fvu < 0.2
    # its decoder rows are the planted features mapped through the model (rotated)
    mapped = F @ model.map.detach()
    mapped = mapped / mapped.norm(dim=1, keepdim=True)
    D = tc.W_dec.detach() / tc.W_dec.detach().norm(dim=1, keepdim=True)
    assert (mapped @ D.T).max(dim=1).values.mean() > 0.85


def test_metrics_checkpoints_and_the_run_folder(planted_store, tmp_path):
    path, X, F, _ = planted_store
    run = tmp_path / "run"
    sae = S.train(
        path, "hook_x", kind="topk", width=32, k=3, out=run, metrics_every=50, checkpoint_every=100, **FAST
    )
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(50, 401, 50))
    for key in (
        "mse",
        "explained_variance",
        "l0",
        "dead_fraction",
        "dense_fraction",
        "aux_loss",
        "lr",
        "tokens",
    ):
        assert key in lines[0]
    assert lines[-1]["explained_variance"] > lines[0]["explained_variance"]
    assert all(m["l0"] <= 3 for m in lines)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000300", "step-00000400"]
    assert json.loads((run / "run.json").read_text())["finished"] is True
    back = S.load(run)  # a run folder of one dictionary loads as that dictionary
    for (n, a), b in zip(sae.named_parameters(), back.parameters()):
        assert torch.equal(a, b), n
    # a finished run is returned as it is, without training again
    started = time.perf_counter()
    again = S.train(
        path, "hook_x", kind="topk", width=32, k=3, out=run, metrics_every=50, checkpoint_every=100, **FAST
    )
    assert time.perf_counter() - started < 2
    assert torch.equal(again.W_dec, sae.W_dec)


def _train_child(store: Path, run: Path) -> str:
    """A program that trains in ``run``, each step slowed by 20 ms (so that the test can kill it
    in the middle); the slowing changes no number."""
    return textwrap.dedent(
        f"""
        import time, torch
        torch.set_num_threads(1)
        import hooked.sae as S
        from hooked.sae import learner
        update = learner.Learner.update
        def slow(self, *a, **k):
            time.sleep(0.02)
            return update(self, *a, **k)
        learner.Learner.update = slow
        S.train({str(store)!r}, "hook_x", kind="batchtopk", width=32, k=3, steps=120, batch_size=128, lr=1e-2,
                dead_tokens=1000, out={str(run)!r}, checkpoint_every=10, metrics_every=5, progress=False)
        """
    )


RESUMED = dict(
    kind="batchtopk",
    width=32,
    k=3,
    steps=120,
    batch_size=128,
    lr=1e-2,
    dead_tokens=1000,
    checkpoint_every=10,
    metrics_every=5,
    progress=False,
)


@pytest.mark.slow
def test_a_run_killed_by_sigkill_resumes_to_the_same_dictionary(planted_store, tmp_path):
    path = planted_store[0]
    run = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", _train_child(path, run)],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if (run / "checkpoints" / "step-00000030").is_dir():
            break
        time.sleep(0.005)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not json.loads((run / "run.json").read_text())["finished"]
    killed_at = max(
        int(json.loads(line)["step"]) for line in (run / "metrics.jsonl").read_text().splitlines()
    )
    assert killed_at < 120

    resumed = S.train(path, "hook_x", out=run, **RESUMED)
    whole = S.train(path, "hook_x", out=tmp_path / "whole", **RESUMED)
    for (name, a), b in zip(resumed.named_parameters(), whole.parameters()):
        assert torch.equal(a, b), name
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()


def _world_train(store: str) -> dict[str, dict[str, torch.Tensor]]:
    saes = S.train(
        store,
        dictionaries=[
            {"name": "wide", "hook": "hook_x", "kind": "topk", "width": 1024, "k": 4},
            {"name": "batch", "hook": "hook_x", "kind": "batchtopk", "width": 32, "k": 3},
            {"name": "relu", "hook": "hook_x", "kind": "standard", "width": 32},
        ],
        steps=30,
        batch_size=256,
        lr=1e-2,
        dead_tokens=2000,
        progress=False,
    )
    return {n: {k: v.detach().clone() for k, v in s.state_dict().items()} for n, s in saes.items()}


WORLD_TOLERANCE = 1e-4  # absolute, on every parameter after 30 steps: float sums in another order


def test_two_processes_train_the_dictionaries_one_process_trains(planted_store):
    one = _world_train(str(planted_store[0]))
    two = run_world(_world_train, 2, str(planted_store[0]), timeout=300)
    for rank in two:
        for name, params in one.items():
            for key, value in params.items():
                torch.testing.assert_close(
                    rank[name][key], value, atol=WORLD_TOLERANCE, rtol=0, msg=f"{name}.{key}"
                )


def test_several_dictionaries_in_one_pass_train_as_they_would_alone(planted_store):
    path = planted_store[0]
    specs = [
        {"name": "a", "hook": "hook_x", "kind": "topk", "width": 32, "k": 3},
        {"name": "b", "hook": "hook_x", "kind": "topk", "width": 48, "k": 2},
        {"name": "c", "hook": "hook_y", "kind": "batchtopk", "width": 32, "k": 3},
    ]
    kw = dict(steps=60, batch_size=256, lr=1e-2, progress=False)
    together = S.train(path, dictionaries=specs, **kw)
    for spec in specs:
        alone = S.train(path, dictionaries=[spec], **kw)[spec["name"]]
        for (n, a), b in zip(alone.named_parameters(), together[spec["name"]].parameters()):
            assert torch.equal(a, b), (spec["name"], n)


# ---------------------------------------------------------------------- bad input
def test_bad_arguments_are_refused_before_any_work(planted_store, tmp_path):
    path = planted_store[0]
    with pytest.raises(StoreError, match="has no hook 'blocks.0.hook_resid_pre'; it holds hook_x, hook_y"):
        S.train(path, "blocks.0.hook_resid_pre", width=32, k=3, steps=5, progress=False)
    with pytest.raises(ValueError, match="width must be a positive integer, got 0"):
        S.train(path, "hook_x", width=0, k=3, steps=5, progress=False)
    with pytest.raises(ValueError, match="k=40 is larger than the width 32"):
        S.train(path, "hook_x", width=32, k=40, steps=5, progress=False)
    with pytest.raises(ValueError, match="k must be a positive integer, got -1"):
        S.train(path, "hook_x", width=32, k=-1, steps=5, progress=False)
    with pytest.raises(StoreError, match="fewer than one batch"):
        S.train(path, "hook_x", width=32, k=3, batch_size=100_000, progress=False)
    other = S.SAE(8, 32, "topk", k=3)
    with pytest.raises(ValueError, match="reads width 8 .* the store's rows at 'hook_x' have width 16"):
        S.train(path, "hook_x", width=32, k=3, steps=5, init=other, progress=False)
    with pytest.raises(ValueError, match="unknown setting 'widht'"):
        S.train(path, dictionaries=[{"hook": "hook_x", "widht": 3}], steps=5, progress=False)
    assert not any(tmp_path.iterdir())


def test_a_folder_of_another_run_is_refused(planted_store, tmp_path):
    path = planted_store[0]
    run = tmp_path / "run"
    S.train(path, "hook_x", width=32, k=3, steps=10, batch_size=256, out=run, progress=False)
    with pytest.raises(ValueError, match=r"holds another run \(other settings: dictionaries: .*\"k\": 3"):
        S.train(path, "hook_x", width=32, k=4, steps=10, batch_size=256, out=run, progress=False)
    S.train(path, "hook_x", width=32, k=4, steps=10, batch_size=256, out=run, progress=False, overwrite=True)
    assert S.load(run).k == 4
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no run.json"):
        S.train(path, "hook_x", width=32, k=3, steps=10, batch_size=256, out=stray, progress=False)
    assert (stray / "notes.txt").read_text() == "mine"


def test_nan_in_a_batch_stops_at_that_step_and_keeps_the_last_checkpoint(tmp_path):
    X, _ = planted(4096)
    X[::199] = float("nan")  # 0.5% of the rows: a batch of 16 holds one every dozen steps or so
    path, _ = write_store(tmp_path / "nan-store", X)
    run = tmp_path / "run"
    with pytest.raises(
        S.TrainingError, match=r"step (\d+): the batch read from the store at hook 'hook_x' holds NaN"
    ) as e:
        S.train(
            path,
            "hook_x",
            width=16,
            k=2,
            steps=200,
            batch_size=16,
            out=run,
            checkpoint_every=1,
            progress=False,
        )
    step = int(str(e.value).split()[1].rstrip(":"))
    assert step > 0  # (the seed puts the first NaN after some good steps)
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept[-1] == f"step-{step:08d}"  # every step before it was checkpointed; nothing after
    assert f"the last good checkpoint (step-{step:08d}) is kept in {run / 'checkpoints'}" in str(e.value)
    assert not json.loads((run / "run.json").read_text())["finished"]
    assert not (run / "sae").exists()


def test_the_command_line_trains_several_dictionaries(planted_store, tmp_path):
    from hooked.cli import main

    run = tmp_path / "cli"
    argv = [
        "sae",
        "train",
        "--store",
        str(planted_store[0]),
        "--hook",
        "hook_x",
        "--width",
        "32,48",
        "--k",
        "3",
        "--steps",
        "20",
        "--batch-size",
        "256",
        "--out",
        str(run),
        "--no-progress",
    ]
    assert main(argv) == 0
    found = S.dictionary_folders(run)
    assert sorted(found) == ["hook_x-topk-w32-k3", "hook_x-topk-w48-k3"]
    assert S.load(found["hook_x-topk-w48-k3"]).width == 48
    assert (
        main(
            [
                "sae",
                "train",
                "--store",
                str(planted_store[0]),
                "--hook",
                "hook_x",
                "--width",
                "32",
                "--k",
                "99",
                "--steps",
                "5",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
