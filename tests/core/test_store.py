"""Activation stores: what is written equals the model's activations, row for row; resuming;
validation; reading back as a ``datasets.Dataset`` and as shuffled batches; ``hooked harvest``."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch
from torch import nn

import hooked
from hooked import store
from hooked.store import StoreError
from tests.multiproc import context
from tests.toys import MLPStack


class SlowNet(hooked.HookedModule):
    """A small MLP whose forward sleeps (so a run can be killed in the middle) and counts calls."""

    def __init__(self, delay: float = 0.0, d: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.hook_hidden, self.hook_out = hooked.HookPoint(), hooked.HookPoint()
        self.delay, self.calls = delay, 0

    def forward(self, x):
        self.calls += 1
        time.sleep(self.delay)
        return self.hook_out(self.down(self.hook_hidden(torch.relu(self.up(x)))))


def slow_batches(n: int = 12, rows: int = 5, d: int = 6) -> list[torch.Tensor]:
    return list(torch.randn(n * rows, d, generator=torch.Generator().manual_seed(1)).split(rows))


def _reference(model, batches, hooks):
    with torch.no_grad():
        caches = [model.run_with_cache(b, names_filter=hooks)[1] for b in batches]
    return {h: torch.cat([c[h] for c in caches]) for h in hooks}


# ---------------------------------------------------------------------- what is written
def test_sample_rows_equal_the_cache_of_every_batch(tmp_path):
    model = MLPStack(d=8)
    batches = list(torch.randn(23, 8, generator=torch.Generator().manual_seed(0)).split(5))
    hooks = ["blocks.0.hook_resid_pre", "hook_out"]
    out = store.harvest(model, batches, hooks, tmp_path / "s", shard_mb=0.0005, progress=False)
    manifest = store.read_manifest(out, verify=True)
    assert manifest["rows"] == manifest["sequences"] == 23 and len(manifest["shards"]) > 1
    assert manifest["columns"] == ["row", "sequence", *hooks] and not manifest["sequence"]
    assert manifest["hooks"]["hook_out"] == {"shape": [8], "dtype": "float32"}
    ds = store.open(out)
    want = _reference(model, batches, hooks)
    for h in hooks:
        assert torch.equal(ds[h][:], want[h])
    assert torch.equal(ds["row"][:], torch.arange(23)) and torch.equal(ds["sequence"][:], torch.arange(23))
    assert not (tmp_path / "s.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [
        s["file"] for s in manifest["shards"]
    ]


def test_multi_axis_rows_keep_their_shape_on_hooked_module_and_wrap(tmp_path):
    from hooked.models.toy_relu import toy_relu_example

    model, x = toy_relu_example(n_features=5, d_hidden=3, n_instances=4, batch_size=40)
    out = store.harvest(model, x.split(16), ["hook_hidden"], tmp_path / "toy", progress=False)
    ds = store.open(out)
    assert ds["hook_hidden"][:].shape == (40, 4, 3)
    assert torch.equal(ds["hook_hidden"][:], model.run_with_cache(x)[1]["hook_hidden"])

    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    wrapped = hooked.wrap(net)
    x = torch.randn(9, 4)
    out = store.harvest(
        wrapped, [x[:4], x[4:]], ["1.hook_out"], tmp_path / "wrap", dtype="float16", progress=False
    )
    want = torch.tanh(net[0](x)).detach().half()  # the plain module
    streamed = next(store.iter_batches(out, 9, shuffle=False))["1.hook_out"]
    assert streamed.dtype == torch.float16 and torch.equal(streamed, want)
    assert torch.equal(store.open(out)["1.hook_out"][:], want.float())  # datasets' torch format: float32


def _tiny_llama():
    from hooked.lm import wrap_lm
    from hooked.models.lm import tiny_llama_hf

    return wrap_lm(tiny_llama_hf(layers=2, d_model=32, vocab=64)), tiny_llama_hf(
        layers=2, d_model=32, vocab=64
    )


def test_token_rows_skip_masked_positions_and_match_the_transformers_model(tmp_path):
    model, raw = _tiny_llama()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (6, 7), generator=g)
    mask = torch.ones(6, 7, dtype=torch.long)
    mask[1, 5:] = 0  # right padding
    mask[3, :2] = 0  # left padding
    mask[4] = 0  # nothing at all
    batches = [{"input_ids": ids[i : i + 3], "attention_mask": mask[i : i + 3]} for i in (0, 3)]
    hook = "model.layers.0.hook_out"
    out = store.harvest(model, batches, [hook], tmp_path / "s", progress=False)
    m = store.read_manifest(out)
    assert m["sequence"] and m["rows"] == int(mask.sum()) == 31 and m["sequences"] == 6
    ds = store.open(out)
    seq, pos = ds["sequence"][:], ds["position"][:]
    assert 4 not in seq.tolist()
    assert pos[seq == 1].tolist() == [0, 1, 2, 3, 4] and pos[seq == 3].tolist() == [0, 1, 2, 3, 4]
    # independent: the transformers model's own hidden states, at the unmasked positions
    with torch.no_grad():
        hidden = torch.cat(
            [raw(**b, output_hidden_states=True).hidden_states[1] for b in batches]
        )  # after layer 0
    want = hidden[mask.bool()]
    assert torch.allclose(ds[hook][:], want, atol=1e-5)


def test_row_limit_cuts_the_last_batch(tmp_path):
    model, _ = _tiny_llama()
    batches = list(torch.randint(0, 64, (8, 5), generator=torch.Generator().manual_seed(2)).split(3))
    out = store.harvest(model, batches, ["model.norm.hook_out"], tmp_path / "s", rows=17, progress=False)
    ds = store.open(out)
    assert ds.num_rows == 17 and store.read_manifest(out)["sequences"] == 4
    assert ds["sequence"][-1].item() == 3 and ds["position"][-1].item() == 1


def test_per_sample_rows_of_a_sequence_model_and_a_clear_layout_error(tmp_path):
    model, _ = _tiny_llama()
    ids = torch.randint(0, 64, (4, 5))
    out = store.harvest(model, [ids], ["model.norm.hook_out"], tmp_path / "s", sequence=False, progress=False)
    assert store.open(out)["model.norm.hook_out"][:].shape == (4, 5, 32)

    class Pattern(hooked.HookedModule):  # an attention-pattern-like activation [batch, head, pos, pos]
        def __init__(self):
            super().__init__()
            self.hook_pattern = hooked.HookPoint()

        def forward(self, ids):
            return self.hook_pattern(torch.zeros(ids.shape[0], 2, ids.shape[1], ids.shape[1]))

    with pytest.raises(ValueError, match=r"hook 'hook_pattern'.*\[batch, pos, \.\.\.\].*sequence=False"):
        store.harvest(Pattern(), [ids], ["hook_pattern"], tmp_path / "p", progress=False)


# ---------------------------------------------------------------------- resuming and refusing
def test_a_finished_store_is_kept_and_other_settings_are_refused(tmp_path):
    model, batches = SlowNet(), slow_batches(4)
    out = store.harvest(model, batches, ["hook_hidden"], tmp_path / "s", progress=False)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    model.calls = 0
    store.harvest(model, batches, ["hook_hidden"], out, progress=False)
    assert {
        p.name: p.stat().st_mtime_ns for p in out.iterdir()
    } == stamp and model.calls == 1  # the probe only
    with pytest.raises(StoreError, match=r"other settings(.|\n)*hooks: \['hook_hidden'\] -> \['hook_out'\]"):
        store.harvest(model, batches, ["hook_out"], out, progress=False)
    other = SlowNet()
    with torch.no_grad():
        other.up.weight[0, 0] += 1
    with pytest.raises(StoreError, match="model_fingerprint"):
        store.harvest(other, batches, ["hook_hidden"], out, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is not an activation store"):
        store.harvest(model, batches, ["hook_hidden"], tmp_path / "file", progress=False)


def _killed_run(out: str) -> None:
    """The harvest that the test kills (in a process forked from the tests' forkserver)."""
    hooks = ["hook_hidden", "hook_out"]
    store.harvest(SlowNet(delay=0.25), slow_batches(), hooks, out, shard_mb=1e-6, progress=False)


def test_a_run_killed_by_sigkill_resumes_and_redoes_only_the_unfinished_shard(tmp_path):
    out = tmp_path / "s"
    partial = tmp_path / "s.partial"
    proc = context(_killed_run).Process(target=_killed_run, args=(str(out),))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while len(list((partial / "progress").glob("*.json"))) < 3:
            assert proc.is_alive(), "the harvest ended before it could be killed"
            assert time.monotonic() < deadline, "the harvest wrote no shard in time"
            time.sleep(0.02)
        time.sleep(0.1)  # somewhere inside the next shard
    finally:
        proc.kill()  # SIGKILL
        proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert not out.exists() and partial.is_dir()  # never visible half-written
    finished = {p.name: p.stat().st_mtime_ns for p in partial.glob("shard-*.arrow")}
    n_done = len(list((partial / "progress").glob("*.json")))
    assert 3 <= n_done < 12 and len(finished) == n_done

    model = SlowNet()
    store.harvest(model, slow_batches(), ["hook_hidden", "hook_out"], out, shard_mb=1e-6, progress=False)
    assert model.calls == 1 + (12 - n_done)  # the probe, then only the shards that were not finished
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == finished  # finished shards untouched
    assert not partial.exists()
    ds = store.open(out, verify=True)
    want = _reference(SlowNet(), slow_batches(), ["hook_hidden", "hook_out"])
    assert torch.equal(ds["hook_hidden"][:], want["hook_hidden"]) and torch.equal(
        ds["hook_out"][:], want["hook_out"]
    )


def test_an_interrupted_run_refuses_other_settings_and_changed_data(tmp_path):
    batches = slow_batches(4)
    out = tmp_path / "s"
    with pytest.raises(RuntimeError, match="stop"):  # the data source fails during the third batch
        store.harvest(SlowNet(), _stop_after(batches, 3), ["hook_hidden"], out, shard_mb=1e-6, progress=False)
    assert not out.exists() and len(list((tmp_path / "s.partial" / "progress").glob("*.json"))) == 3
    with pytest.raises(StoreError, match=r"interrupted harvest made with other settings(.|\n)*hooks"):
        store.harvest(SlowNet(), batches, ["hook_out"], out, shard_mb=1e-6, progress=False)
    changed = [b.clone() for b in batches]
    changed[1][0, 0] += 1  # shard 1 was finished from other inputs
    with pytest.raises(StoreError, match="inputs of shard 1 differ"):
        store.harvest(SlowNet(), changed, ["hook_hidden"], out, shard_mb=1e-6, progress=False)
    model = SlowNet()
    store.harvest(model, batches, ["hook_hidden"], out, shard_mb=1e-6, progress=False)
    assert model.calls == 2 and store.open(out).num_rows == 20  # the probe and the one missing shard


def test_two_harvests_into_one_folder_at_once(tmp_path):
    """The second is refused while the first holds the folder's lock (``filelock``); the first's
    store is right, and the same call afterwards finds it finished."""
    out, batches = tmp_path / "s", slow_batches(6)
    first = threading.Thread(
        target=store.harvest,
        args=(SlowNet(delay=0.3), batches, ["hook_hidden"], out),
        kwargs={"shard_mb": 1e-6, "progress": False},
    )
    first.start()
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "s.partial" / "settings.json").is_file():
            assert time.monotonic() < deadline and first.is_alive()
            time.sleep(0.01)
        with pytest.raises(StoreError, match="another harvest is writing .*s.partial right now"):
            store.harvest(SlowNet(), batches, ["hook_hidden"], out, shard_mb=1e-6, progress=False)
    finally:
        first.join()
    model = SlowNet()
    assert store.harvest(model, batches, ["hook_hidden"], out, shard_mb=1e-6, progress=False) == out
    assert model.calls == 1  # the probe: finished, nothing written again
    want = _reference(SlowNet(), batches, ["hook_hidden"])["hook_hidden"]
    assert torch.equal(store.open(out, verify=True)["hook_hidden"][:], want)


def test_a_run_stopped_between_its_manifest_and_its_rename_is_finished_by_the_next(tmp_path, monkeypatch):
    out, batches = tmp_path / "s", slow_batches(4)
    rename = os.rename

    def fail_once(src, dst):
        monkeypatch.setattr(os, "rename", rename)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "rename", fail_once)
    with pytest.raises(StoreError, match="could not rename"):
        store.harvest(SlowNet(), batches, ["hook_hidden"], out, shard_mb=1e-6, progress=False)
    assert not out.exists() and (tmp_path / "s.partial" / "manifest.json").is_file()
    model = SlowNet()
    store.harvest(model, batches, ["hook_hidden"], out, shard_mb=1e-6, progress=False)
    assert model.calls == 1 and not (tmp_path / "s.partial").exists()
    m = store.read_manifest(out, verify=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *(s["file"] for s in m["shards"])]


def _stop_after(batches, n):
    for i, b in enumerate(batches):
        if i == n:
            raise RuntimeError("stop")
        yield b


# ---------------------------------------------------------------------- reading back
def test_files_read_back_are_validated(tmp_path):
    out = store.harvest(
        SlowNet(), slow_batches(3), ["hook_hidden"], tmp_path / "s", shard_mb=1e-6, progress=False
    )
    shard = out / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    store.read_manifest(out)  # sizes agree
    with pytest.raises(StoreError, match="does not match its sha256"):
        store.open(out, verify=True)
    shard.write_bytes(bytes(data[:-8]))
    with pytest.raises(StoreError, match="shard-00001.arrow has .* bytes"):
        store.open(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["rows"] = "many"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="'rows' must be a int"):
        store.read_manifest(out)
    with pytest.raises(StoreError, match="not an activation store"):
        store.open(tmp_path)


def test_shuffled_batches_cover_every_row_once_in_constant_memory(tmp_path):
    model, x = MLPStack(d=8), torch.randn(103, 8)
    hooks = ["blocks.1.hook_mlp_out", "hook_out"]
    out = store.harvest(model, x.split(10), hooks, tmp_path / "s", record_mb=0.001, progress=False)
    want = _reference(model, x.split(10), hooks)
    seen = []
    for b in store.iter_batches(out, 16, seed=3):
        assert torch.equal(b["hook_out"], want["hook_out"][b["row"]])
        assert torch.equal(b["blocks.1.hook_mlp_out"], want["blocks.1.hook_mlp_out"][b["row"]])
        seen.append(b["row"])
    rows = torch.cat(seen)
    assert sorted(rows.tolist()) == list(range(103)) and not torch.equal(rows, torch.arange(103))
    again = torch.cat([b["row"] for b in store.iter_batches(store.open(out), 16, seed=3, columns=["row"])])
    assert torch.equal(again, rows)  # the same seed, the same order; a Dataset from open() works too
    ordered = list(store.iter_batches(out, 16, shuffle=False, drop_last=True, columns=["row", "hook_out"]))
    assert len(ordered) == 6 and torch.equal(torch.cat([b["row"] for b in ordered]), torch.arange(96))
    assert torch.equal(torch.cat([b["hook_out"] for b in ordered]), want["hook_out"][:96])
    with pytest.raises(StoreError, match="no column 'hook_x'"):
        next(store.iter_batches(out, 4, columns=["hook_x"]))


# ---------------------------------------------------------------------- the command line
def test_harvest_command_with_the_models_sampler_and_with_a_data_file(tmp_path, capsys):
    from hooked.cli import main
    from hooked.io import write_tensors

    args = ["harvest", "--model", "toy-relu", "--hooks", "hook_hidden,hook_out", "--rows", "300"]
    assert main([*args, "--out", str(tmp_path / "toy"), "--batch-size", "64", "--no-progress"]) == 0
    m = store.read_manifest(tmp_path / "toy")
    assert m["rows"] == 300 and m["model"]["name"] == "toy-relu" and not m["sequence"]
    from hooked.models.toy_relu import toy_relu_example

    model, _ = toy_relu_example()
    x = torch.cat([model.input_sampler(64, g) for g in [torch.Generator().manual_seed(0)] for _ in range(5)])[
        :300
    ]
    assert torch.equal(store.open(tmp_path / "toy")["hook_out"][:], model.run_with_cache(x)[1]["hook_out"])

    ids = torch.randint(0, 64, (5, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(5, 6, dtype=torch.long)
    mask[0, 4:] = 0
    write_tensors(tmp_path / "inputs.safetensors", {"input_ids": ids, "attention_mask": mask})
    argv = ["harvest", "--model", "tiny-llama", "--hooks", "model.layers.0.hook_out", "--no-progress"]
    argv += [
        "--data",
        str(tmp_path / "inputs.safetensors"),
        "--batch-size",
        "2",
        "--out",
        str(tmp_path / "lm"),
    ]
    assert main(argv) == 0
    ds = store.open(tmp_path / "lm")
    assert ds.num_rows == 28 and ds["position"][:4].tolist() == [0, 1, 2, 3] and ds["sequence"][4].item() == 1
    assert (
        main(["harvest", "--model", "toy-relu", "--hooks", "hook_hidden", "--out", str(tmp_path / "x")]) == 2
    )
    assert "--rows N" in capsys.readouterr().err
