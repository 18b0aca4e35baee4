"""Spotlight resonance read from an activation store counts what it counts on the model's run."""

from __future__ import annotations

import pytest
import torch

from analyses.spotlight import SpotlightAccumulator, spotlight_model
from analyses.spotlight.store import spotlight_store
from hooked import store
from tests.toys import MLPStack


def test_store_counts_equal_the_model_run(tmp_path):
    model = MLPStack(d=6)
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    hook = "blocks.1.hook_mlp_out"
    out = store.harvest(model, x.split(64), [hook], tmp_path / "s", progress=False)
    options = dict(epsilon=0.5, n_angles=16, null_bases=3, seed=1)
    got = spotlight_store(out, hook, chunk_rows=50, **options)
    want = spotlight_model(model, hook, x.split(64), **options)
    assert got.result.n == want.result.n == 300
    assert torch.equal(got.result.counts, want.result.counts)
    assert [torch.equal(a.counts, b.counts) for a, b in zip(got.null, want.null)] == [True] * 3
    assert got.alignment == want.alignment and got.alignment["verdict"] is not None
    assert torch.equal(got.grandmother.counts, want.grandmother.counts)
    assert torch.equal(got.grandmother.top_rows, want.grandmother.top_rows)  # the same row numbers


def test_token_store_counts_only_real_tokens(tmp_path):
    from hooked.lm import wrap_lm
    from hooked.models.lm import tiny_llama_hf

    model = wrap_lm(tiny_llama_hf(layers=1, d_model=16, vocab=32))
    ids = torch.randint(0, 32, (4, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 5, dtype=torch.long)
    mask[2, 3:] = 0
    hook = "model.layers.0.hook_out"
    out = store.harvest(
        model, [{"input_ids": ids, "attention_mask": mask}], [hook], tmp_path / "s", progress=False
    )
    got = spotlight_store(out, hook, epsilon=0.3, n_angles=8, labels="position")
    _, cache = model.run_with_cache(input_ids=ids, attention_mask=mask, names_filter=[hook])
    direct = (
        SpotlightAccumulator(epsilon=0.3, n_angles=8).add(cache[hook][mask.bool()]).result()
    )  # real tokens
    assert got.result.n == 18 and torch.equal(got.result.counts, direct.result.counts)
    with pytest.raises(ValueError, match="no hook 'model.layers.1.hook_out'"):
        spotlight_store(out, "model.layers.1.hook_out")
