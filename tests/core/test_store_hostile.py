"""Activation stores tried as a hostile user would: other data for a finished or interrupted store,
edited manifests and shards, out-of-range settings and arguments, failures part-way (an error in
the data or the model, an interrupt, a full disk) and what they leave behind.

Each case here gave a silently wrong answer, an internal traceback, a leak or a hang before
(issue 22); the tests say what each does now."""

from __future__ import annotations

import errno
import json
import os
import threading

import numpy as np
import pytest
import torch

import hooked
from hooked import store
from hooked.store import StoreError
from tests.toys import MLPStack

HOOKS = ["blocks.0.hook_resid_pre", "hook_out"]


def _batches(n: int = 8, rows: int = 5, d: int = 8, seed: int = 0) -> list[torch.Tensor]:
    return list(torch.randn(n * rows, d, generator=torch.Generator().manual_seed(seed)).split(rows))


def _reference(model, batches, hooks):
    with torch.no_grad():
        caches = [model.run_with_cache(b, names_filter=hooks)[1] for b in batches]
    return {h: torch.cat([c[h] for c in caches]) for h in hooks}


def _harvest(batches, out, **kwargs):
    kwargs = {"shard_mb": 0.0012, "progress": False, **kwargs}  # 3 batches of 5 rows per shard
    return store.harvest(MLPStack(d=8), batches, HOOKS, out, **kwargs)


# ---------------------------------------------------------------------- a finished store, other data
@pytest.mark.parametrize(
    "change, says",
    [
        (lambda b: b + _batches(2, seed=5), "more batches than .* \\(8; batch 8, counted from 0, is new\\)"),
        (lambda b: b[:6], "fewer batches \\(6\\) than"),
        (lambda b: b[:7], "fewer batches \\(7\\) than .* \\(8\\)"),
        (lambda b: [*b[:4], b[4] + 1e-3, *b[5:]], "inputs of shard 1 differ .* \\(batches 3 to 5"),
        (lambda b: [*b[:7], b[7].flip(0)], "inputs of shard 2 differ"),
    ],
    ids=["more batches", "fewer at a shard end", "fewer mid-shard", "a changed batch", "reordered rows"],
)
def test_a_finished_store_is_not_returned_for_other_data(tmp_path, change, says):
    batches = _batches()
    out = _harvest(batches, tmp_path / "s")
    assert len(store.read_manifest(out)["shards"]) == 3
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(StoreError, match=says):
        _harvest(change(batches), out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp  # the store is untouched
    assert _harvest(batches, out) == out  # the same data: still the finished store, nothing written


def test_a_change_anywhere_in_a_wide_input_is_seen(tmp_path):
    """Every input byte is hashed: one value past the first 65536 of a batch is a change."""
    batches = list(torch.randn(4 * 9000, 8, generator=torch.Generator().manual_seed(0)).split(9000))
    out = _harvest(batches, tmp_path / "s")
    changed = [b.clone() for b in batches]
    changed[2][-1, -1] += 1.0  # element 71999 of 72000
    with pytest.raises(StoreError, match="inputs of shard .* differ"):
        _harvest(changed, out)


# ---------------------------------------------------------------------- an interrupted run, other data
def _stop_after(batches, n, error=None):
    for i, b in enumerate(batches):
        if i == n:
            raise error or RuntimeError("the data source failed")
        yield b


def test_a_resumed_run_with_fewer_batches_is_refused_and_leaves_no_unlisted_shard(tmp_path):
    batches = _batches(12)
    out = tmp_path / "s"
    with pytest.raises(RuntimeError, match="data source failed"):
        _harvest(_stop_after(batches, 10), out)  # shards 0, 1, 2 finished
    with pytest.raises(StoreError, match=r"fewer batches \(6\) than .*s.partial .*shard 2 starts at batch 6"):
        _harvest(batches[:6], out)
    assert not out.exists()
    finished = _harvest(batches, out)  # the whole data again: resumes
    m = store.read_manifest(finished, verify=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *(s["file"] for s in m["shards"])]
    want = _reference(MLPStack(d=8), batches, HOOKS)
    assert torch.equal(store.open(out)["hook_out"][:], want["hook_out"])


def test_a_resumed_run_sees_a_change_in_a_skipped_wide_batch(tmp_path):
    batches = list(torch.randn(6 * 9000, 8, generator=torch.Generator().manual_seed(0)).split(9000))
    out = tmp_path / "s"
    with pytest.raises(RuntimeError):
        store.harvest(MLPStack(d=8), _stop_after(batches, 5), HOOKS, out, shard_mb=1e-6, progress=False)
    changed = [b.clone() for b in batches]
    changed[1][-1, -1] += 1.0
    with pytest.raises(StoreError, match=r"inputs of shard 1 differ .*s\.partial was made from \(batch 1,"):
        store.harvest(MLPStack(d=8), changed, HOOKS, out, shard_mb=1e-6, progress=False)


# ---------------------------------------------------------------------- float16 overflow
class Scaled(hooked.HookedModule):
    def __init__(self, scale: float):
        super().__init__()
        self.hook_big = hooked.HookPoint()
        self.scale = scale

    def forward(self, x):
        return self.hook_big(x * self.scale)


def test_float16_refuses_finite_values_it_would_store_as_inf(tmp_path):
    x = torch.ones(6, 3)
    x[4, 1] = 1e5 / 3e1  # times the scale: 1e5, past float16's 65504
    with pytest.raises(StoreError, match=r"'hook_big' has finite values up to 100000 .*row 4.*float16.*inf"):
        store.harvest(
            Scaled(30.0), [x[:3], x[3:]], ["hook_big"], tmp_path / "s", dtype="float16", progress=False
        )
    # the largest float16 rounds to itself; infinite values that the model gave are stored as they are
    y = torch.tensor([[65504.0 / 30.0, 1.0], [float("-inf"), float("nan")]])
    out = store.harvest(Scaled(30.0), [y], ["hook_big"], tmp_path / "t", dtype="float16", progress=False)
    got = next(store.iter_batches(out, 2, shuffle=False))["hook_big"]
    assert got.dtype == torch.float16 and torch.equal(
        got[0], torch.tensor([65504.0, 30.0], dtype=torch.float16)
    )
    assert got[1, 0] == float("-inf") and got[1, 1].isnan()
    big = torch.full((2, 2), 1e39, dtype=torch.float64)  # float64 to float32 overflows the same way
    with pytest.raises(StoreError, match="float32"):
        store.harvest(Scaled(1.0), [big], ["hook_big"], tmp_path / "u", dtype="float32", progress=False)


# ---------------------------------------------------------------------- arguments
def test_two_names_of_one_hook_point_are_refused(tmp_path):
    from hooked.lm import wrap_lm
    from hooked.models.lm import tiny_llama_hf

    model = wrap_lm(tiny_llama_hf(layers=1, d_model=16, vocab=32))
    ids = torch.randint(0, 32, (2, 5))
    # before: the cache stacked the two names, and per-sample rows were [2, 5, 16], silently
    for sequence in (False, None):
        with pytest.raises(ValueError, match="'model.embed_tokens.hook_out' and 'hook_embed' are two names"):
            store.harvest(
                model,
                [ids],
                ["model.embed_tokens.hook_out", "hook_embed"],
                tmp_path / "s",
                sequence=sequence,
                progress=False,
            )


@pytest.mark.parametrize(
    "kwargs, error, says",
    [
        ({"rows": float("nan")}, ValueError, "rows must be a positive integer"),  # before: every row
        ({"rows": True}, ValueError, "rows must be a positive integer"),  # before: one row
        ({"rows": 2.5}, ValueError, "rows must be a positive integer"),
        ({"shard_mb": float("nan")}, ValueError, "shard_mb must be a positive finite number"),
        ({"shard_mb": float("inf")}, ValueError, "shard_mb must be a positive finite number"),
        ({"record_mb": float("nan")}, ValueError, "record_mb must be a positive finite number"),
        ({"hooks": None}, TypeError, "hooks must be a hook name or a list"),
        ({"hooks": [3]}, TypeError, "hooks must be a hook name or a list"),
        ({"out": None}, TypeError, "harvest: out must be a store's folder"),
        ({"out": ""}, ValueError, "harvest: out is an empty path"),
        ({"sequence": "yes"}, TypeError, "sequence must be True or False"),
        ({"progress": "no"}, TypeError, "progress must be True or False"),
        ({"model_name": 7}, TypeError, "model_name must be a string"),
        ({"batches": torch.randn(10, 8)}, TypeError, "batches must be an iterable of batches .*Tensor"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, kwargs, error, says):
    args = {"batches": _batches(2), "hooks": HOOKS, "out": tmp_path / "s", **kwargs}
    args.setdefault("progress", False)
    with pytest.raises(error, match=says):
        store.harvest(MLPStack(d=8), args.pop("batches"), args.pop("hooks"), args.pop("out"), **args)
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


# ---------------------------------------------------------------------- failures part-way
def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _fail_in_data(batches, out):
    return _harvest(_stop_after(batches, 7), out, record_mb=1e-5)


def _interrupt_in_data(batches, out):
    return _harvest(_stop_after(batches, 7, KeyboardInterrupt()), out, record_mb=1e-5)


def _fail_in_model(batches, out):
    model = MLPStack(d=8)
    calls = []

    def fail_on_the_seventh_call(act, hook):  # call 1 is the probe; call 7 runs batch 5, in shard 1
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("the model failed")

    model.add_hook("hook_out", fail_on_the_seventh_call)
    return store.harvest(model, batches, HOOKS, out, shard_mb=0.0012, record_mb=1e-5, progress=False)


def _full_disk(batches, out, monkeypatch):
    real = os.write

    def write(fd, data):
        if ".tmp" in os.readlink(f"/proc/self/fd/{fd}") and write.calls > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        write.calls += 1
        return real(fd, data)

    write.calls = 0
    monkeypatch.setattr(os, "write", write)
    try:
        return _harvest(batches, out, record_mb=1e-5)
    finally:
        monkeypatch.setattr(os, "write", real)


@pytest.mark.parametrize(
    "fail, error",
    [
        (_fail_in_data, RuntimeError),
        (_interrupt_in_data, KeyboardInterrupt),
        (_fail_in_model, RuntimeError),
        (_full_disk, OSError),
    ],
    ids=["error in the data", "KeyboardInterrupt", "error in the model", "full disk"],
)
def test_a_failed_harvest_leaves_no_thread_file_or_lock_and_resumes_at_once(
    tmp_path, monkeypatch, fail, error
):
    batches = _batches(9)
    _harvest(batches[:1], tmp_path / "warm")  # imports and first-use set-up, outside the count
    threads, fds = set(threading.enumerate()), _open_fds()
    out = tmp_path / "s"
    args = (batches, out, monkeypatch) if fail is _full_disk else (batches, out)
    with pytest.raises(error) as failed:
        fail(*args)
    if error is OSError:
        assert failed.value.errno == errno.ENOSPC
    assert set(threading.enumerate()) == threads  # the writer and hashing threads ended
    assert _open_fds() == fds  # the shard's temporary file and the lock are closed
    partial = tmp_path / "s.partial"
    assert not list(partial.glob(".shard-*")) and not out.exists()  # nothing half-written kept
    # the same call again, in the same process, while the failure is still held: it resumes
    assert _harvest(batches, out) == out and failed.value is not None
    want = _reference(MLPStack(d=8), batches, HOOKS)
    ds = store.open(out, verify=True)
    assert all(torch.equal(ds[h][:], want[h]) for h in HOOKS)
    assert set(threading.enumerate()) == threads and _open_fds() == fds


# ---------------------------------------------------------------------- reading: edited manifests and shards
def _edit(out, change):
    m = json.loads((out / "manifest.json").read_text())
    change(m)
    (out / "manifest.json").write_text(json.dumps(m))


def _drop_last_row(m):  # the manifest claims one row fewer, consistently
    m["rows"] -= 1
    m["shards"][-1]["rows"] -= 1


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda m: m["hooks"]["hook_out"].update(shape=[2, 4]), "holds columns .*the manifest describes"),
        (lambda m: m["hooks"]["hook_out"].update(dtype="float64"), "holds columns .*the manifest describes"),
        (_drop_last_row, "holds 10 rows, the manifest says 9 rows"),
        (lambda m: m["hooks"]["hook_out"].update(shape=[0]), "positive integers"),
        (lambda m: m["hooks"]["hook_out"].update(dtype="complex64"), "one of float16"),
        (lambda m: m["shards"][0].update(rows=-1), "non-negative int"),
        (
            lambda m: m.update(columns=["row", "hook_out", "sequence", "blocks.0.hook_resid_pre"]),
            "id columns",
        ),
    ],
    ids=[
        "other shape",
        "other dtype",
        "fewer rows",
        "zero shape",
        "unknown dtype",
        "negative rows",
        "columns",
    ],
)
def test_every_reader_refuses_an_edited_manifest(tmp_path, change, says):
    out = _harvest(_batches(6, rows=5), tmp_path / "s", shard_mb=0.0008)  # 2 batches (10 rows) per shard
    _edit(out, change)
    for read in (
        store.open,
        lambda p: store.iter_batches(p, 4),
        lambda p: store.iter_batches(p, 4, shuffle=False),
    ):
        with pytest.raises(StoreError, match=says):
            read(out)


def test_a_shard_that_is_not_an_arrow_stream_is_a_clear_error(tmp_path):
    out = _harvest(_batches(6), tmp_path / "s")
    shard = out / "shard-00001.arrow"
    shard.write_bytes(shard.read_bytes()[:200] + bytes(shard.stat().st_size - 200))  # truncated, size kept
    with pytest.raises(StoreError, match="shard .*shard-00001.arrow is not a readable Arrow stream"):
        store.iter_batches(out, 4)
    with pytest.raises(StoreError, match="not a readable Arrow stream"):
        store.open(out)


def test_boolean_and_integer_activations_read_back(tmp_path):
    class Signs(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.hook_sign, self.hook_int = hooked.HookPoint(), hooked.HookPoint()

        def forward(self, x):
            self.hook_int(x.round().int())
            return self.hook_sign(x > 0)

    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(0)) * 3
    out = store.harvest(Signs(), x.split(4), ["hook_sign", "hook_int"], tmp_path / "s", progress=False)
    seen = list(store.iter_batches(out, 4, seed=1))
    rows = torch.cat([b["row"] for b in seen])
    assert torch.equal(torch.cat([b["hook_sign"] for b in seen]), (x > 0)[rows])
    assert torch.equal(torch.cat([b["hook_int"] for b in seen]), x.round().int()[rows])
    ordered = next(store.iter_batches(out, 9, shuffle=False))
    assert ordered["hook_sign"].dtype == torch.bool and torch.equal(ordered["hook_sign"], x > 0)


@pytest.mark.parametrize(
    "kwargs, error, says",
    [
        ({"batch_size": "8"}, ValueError, "batch_size must be a positive integer, got '8'"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer, got 2.5"),
        ({"batch_size": True}, ValueError, "batch_size must be a positive integer, got True"),
        ({"columns": []}, ValueError, "columns is empty"),  # before: batches of {}
        ({"columns": ["row", "row"]}, ValueError, "named twice"),
        ({"columns": [1]}, TypeError, "columns must be a column name or a list"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"seed": None}, TypeError, "seed must be an integer"),
        ({"shuffle": "no"}, TypeError, "shuffle must be True or False"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_reader_arguments_are_checked_and_named(tmp_path, kwargs, error, says):
    out = _harvest(_batches(2), tmp_path / "s")
    with pytest.raises(error, match=says):
        next(store.iter_batches(out, **{"batch_size": 4, **kwargs}))


def test_one_column_by_name_and_stores_given_as_the_wrong_type(tmp_path):
    out = _harvest(_batches(2), tmp_path / "s")
    batch = next(store.iter_batches(out, 10, columns="row", shuffle=False))  # before: "no column 'r'"
    assert list(batch) == ["row"] and torch.equal(batch["row"], torch.arange(10))
    for read, name in ((store.open, "open"), (store.read_manifest, "read_manifest")):
        for bad in (None, 5):
            with pytest.raises(TypeError, match=f"{name}: store must be a store's folder"):
                read(bad)
    with pytest.raises(TypeError, match="expected an activation store's folder or the Dataset"):
        store.iter_batches(np.zeros(3))


# ---------------------------------------------------------------------- more inputs
def test_batches_without_rows_anywhere(tmp_path):
    model, x = MLPStack(d=8), torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    want = _reference(model, [x], HOOKS)
    for name, batches in (
        ("middle", [x[:5], x[5:5], x[5:]]),
        ("first", [x[:0], x]),
    ):  # before: a reshape error
        out = store.harvest(model, batches, HOOKS, tmp_path / name, progress=False)
        assert store.read_manifest(out)["rows"] == 10
        ds = store.open(out)
        assert all(torch.equal(ds[h][:], want[h]) for h in HOOKS)


def _rank_data_job(out: str) -> str:
    """Rank 1 is given other values in batch 4 than rank 0 (a data loader seeded per rank)."""
    from hooked import distributed

    batches = _batches(8)
    if distributed.rank() == 1:
        batches[4] = batches[4] + 1
    try:
        _harvest(batches, out)
    except StoreError as e:
        return str(e)
    return "finished"


@pytest.mark.distributed
def test_ranks_given_other_data_refuse_to_finish_the_store(tmp_path):
    from tests.multiproc import run_world

    said = run_world(_rank_data_job, 2, str(tmp_path / "s"))
    # before: each rank wrote its own shards from its own data, and the store finished
    assert "rank 1 read other data than rank 0 (from shard 1, batch 3 on)" in said[0], said
    assert "rank 0 read other data than rank 1 (from shard 1, batch 3 on)" in said[1], said
    assert not (tmp_path / "s").exists()
