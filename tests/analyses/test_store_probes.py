"""Ridge probes read their features from an activation store (``hooked.store``) as from the model."""

from __future__ import annotations

import pytest
import torch

from analyses.probes import hook_features, layer_probes, ridge_probe_analysis, store_features
from hooked import store
from hooked.io import write_json
from tests.toys import MLPStack


def _tiny_llama():
    from hooked.lm import wrap_lm
    from hooked.models.lm import tiny_llama_hf

    return wrap_lm(tiny_llama_hf(layers=2, d_model=32, vocab=64))


def test_token_store_pools_per_sequence_like_the_model_run(tmp_path):
    model = _tiny_llama()
    ids = torch.randint(0, 64, (10, 6), generator=torch.Generator().manual_seed(0))
    hooks = ["model.layers.0.hook_out", "model.norm.hook_out"]
    out = store.harvest(model, ids.split(4), hooks, tmp_path / "s", record_mb=0.004, progress=False)
    got = store_features(out, hooks, pools=["last", "mean", 2], chunk_rows=7)  # chunks cut sequences
    want = hook_features(model, ids, hooks, pools=["last", "mean", 2], batch_size=4)
    for p in want:
        assert got[p].shape == (2, 10, 32)
        torch.testing.assert_close(got[p], want[p], atol=1e-6, rtol=1e-5)
    via_dataset = hook_features(None, store.open(out), hooks, pools=["last"])
    assert torch.equal(via_dataset["last"], got["last"])


def test_padded_sequences_pool_over_their_real_tokens_only(tmp_path):
    model = _tiny_llama()
    ids = torch.randint(0, 64, (4, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 3:] = 0
    mask[2, :2] = 0  # left padding
    hook = "model.layers.1.hook_out"
    out = store.harvest(
        model, [{"input_ids": ids, "attention_mask": mask}], [hook], tmp_path / "s", progress=False
    )
    got = store_features(out, [hook], pools=["last", "mean", 0])
    _, cache = model.run_with_cache(input_ids=ids, attention_mask=mask, names_filter=[hook])
    act = cache[hook]
    real = mask.bool()
    last = torch.stack([act[i, real[i].nonzero().max()] for i in range(4)])  # hand-written per row
    mean = torch.stack([act[i, real[i]].mean(0) for i in range(4)])
    first = torch.stack([act[i, real[i].nonzero().min()] for i in range(4)])
    torch.testing.assert_close(got["last"][0], last)
    torch.testing.assert_close(got["mean"][0], mean)
    torch.testing.assert_close(got[0][0], first)
    # and as hook_features pools the padded batch itself (real tokens only; -2: the last but one)
    batch = {"input_ids": ids, "attention_mask": mask}
    pools = ["last", "mean", 1, -2]
    want = hook_features(model, batch, [hook], pools=pools)
    from_store = store_features(out, [hook], pools=pools, chunk_rows=5)
    for p in pools:
        torch.testing.assert_close(from_store[p], want[p])


def test_sample_store_probes_equal_the_model_probes(tmp_path):
    model = MLPStack(d=8)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    x = torch.randn(90, 8, generator=g) + 2 * torch.nn.functional.one_hot(y, 8).float()
    hooks = ["blocks.0.hook_resid_pre", "hook_out"]
    out = store.harvest(model, x.split(32), hooks, tmp_path / "s", progress=False)
    assert torch.equal(store_features(out, hooks)["mean"], hook_features(model, x, hooks)["mean"])
    from_store = layer_probes(None, out, y, hooks, folds=3)
    from_model = layer_probes(model, x, y, hooks, folds=3)
    for k in from_model.results:
        assert torch.equal(from_store.results[k].accuracy, from_model.results[k].accuracy)
    assert from_store.results["last token"].accuracy[0] > 0.9

    write_json(tmp_path / "labels.json", y.tolist())
    found = ridge_probe_analysis(model, "hook_out", out, labels=str(tmp_path / "labels.json"), folds=3)
    want = ridge_probe_analysis(model, "hook_out", x, labels=str(tmp_path / "labels.json"), folds=3)
    assert found == want
    with pytest.raises(ValueError, match="a store does not hold"):
        ridge_probe_analysis(model, "hook_out", out, labels="input:0", folds=3)
    with pytest.raises(ValueError, match="no hook 'blocks.2.hook_out'"):
        store_features(out, ["blocks.2.hook_out"])
