"""torch.distributed (gloo, 2 processes on the CPU): sweeps and activation stores over ranks equal
the single-process ones; ``torchrun -m hooked harvest`` end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hooked import distributed, store
from tests.multiproc import free_port, run_world
from tests.toys import MLPStack

pytestmark = pytest.mark.distributed  # every test here starts a gloo world of processes

ROOT = Path(__file__).resolve().parents[2]


def _square_plus_noise(i: int) -> dict:
    return {"i": i, "rank": distributed.rank(), "value": i * i + torch.rand(()).item()}


def _failing(i: int) -> int:
    if i == 3:
        raise ValueError("item three is bad")
    return i


def _sweep_job(n: int) -> dict:
    results = distributed.sweep(_square_plus_noise, range(n), seed=10)
    everywhere = distributed.sweep(_square_plus_noise, range(n), seed=10, gather="all")
    try:
        distributed.sweep(_failing, range(5))
        failure = "no error"
    except (RuntimeError, ValueError) as e:
        failure = str(e)
    return {"world": distributed.world_size(), "main": results, "all": everywhere, "failure": failure}


def _store_job(out: str) -> str:
    model = MLPStack(d=8)
    batches = list(torch.randn(37, 8, generator=torch.Generator().manual_seed(0)).split(4))
    hooks = ["blocks.1.hook_resid_pre", "hook_out"]
    return str(store.harvest(model, batches, hooks, out, shard_mb=0.0004, progress=False))


def test_sweep_shares_items_over_ranks_and_equals_one_process():
    one = _sweep_job(7)
    ranks = run_world(_sweep_job, 2, 7)
    assert one["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["main"] == ranks[0]["all"] == ranks[1]["all"] and ranks[1]["main"] is None
    strip = [{k: v for k, v in r.items() if k != "rank"} for r in ranks[0]["main"]]
    assert strip == [{k: v for k, v in r.items() if k != "rank"} for r in one["main"]]  # seeded per item
    assert [r["rank"] for r in ranks[0]["main"]] == [i % 2 for i in range(7)]  # round-robin
    assert [r["i"] for r in ranks[0]["main"]] == list(range(7))
    assert one["failure"] == "item three is bad"  # in one process: the item's own error
    assert all("item 3 (3) failed on rank 1: ValueError: item three is bad" in r["failure"] for r in ranks)


def test_world2_store_equals_world1_store_row_for_row(tmp_path):
    run_world(_store_job, 2, str(tmp_path / "w2"))
    _store_job(str(tmp_path / "w1"))
    m1, m2 = (
        store.read_manifest(tmp_path / "w1", verify=True),
        store.read_manifest(tmp_path / "w2", verify=True),
    )
    assert m2["world_size"] == 2 and len(m2["shards"]) == len(m1["shards"]) > 2
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]  # byte-identical shards
    a, b = store.open(tmp_path / "w1"), store.open(tmp_path / "w2")
    order = torch.argsort(b["row"][:])
    for c in a.column_names:
        assert torch.equal(a[c][:], b[c][:][order])
    assert not (tmp_path / "w2.partial").exists()


@pytest.mark.slow
def test_torchrun_harvest_command_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["--model", "toy-relu", "--hooks", "hook_hidden,hook_out", "--rows", "3000", "--batch-size", "100"]
    args += ["--shard-mb", "0.05", "--no-progress"]
    for world, name in ((2, "w2"), (1, "w1")):
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}"]
        launcher += ["--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "hooked", "harvest"]
        done = subprocess.run(
            [*launcher, *args, "--out", str(tmp_path / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    m1, m2 = store.read_manifest(tmp_path / "w1"), store.read_manifest(tmp_path / "w2")
    assert m1["rows"] == m2["rows"] == 3000 and m2["world_size"] == 2
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]


_EXIT_PROBE = """
import atexit, os, sys
import torch.distributed as dist
from hooked import distributed

# registered before init: atexit runs handlers last-in first-out, so this one runs after init's own
atexit.register(lambda: open(sys.argv[1] + "." + os.environ["RANK"], "w").write(str(dist.is_initialized())))
assert distributed.init() and dist.is_initialized()
distributed.barrier()
"""


@pytest.mark.slow
def test_a_launched_process_leaves_its_group_at_exit(tmp_path):
    # a gloo group left to interpreter teardown could abort rank 0 after its work ("terminate called
    # without an active exception"): init must destroy the group it made when the process exits
    script = tmp_path / "probe.py"
    script.write_text(_EXIT_PROBE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    launcher += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    done = subprocess.run(
        [*launcher, str(script), str(tmp_path / "left")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(tmp_path / f"left.{r}").read_text() for r in (0, 1)] == ["False", "False"]
