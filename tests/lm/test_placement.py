"""A language model split over devices (here: the CPU and disk; on a GPU machine also cuda:0 + cpu)
runs with hooks like the unsplit model: logits, caches, patching, DAS and stores agree; offloaded
weights are read for real or refused with a clear error."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hooked import lm, store
from hooked.lm.loading.placement import (
    OffloadedWeightsError,
    device_map_of,
    materialized,
    offloaded,
    parameter,
    require_real_weights,
)
from interventions.intervention import InterventionBatch
from interventions.patching import patching_sweep
from interventions.subspace import DAS

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None, reason="pip install accelerate"
)

SPLIT = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


@pytest.fixture(scope="module")
def whole(tiny):
    return tiny["wrap"]  # the tiny Llama of tests/lm/conftest.py, in memory


@pytest.fixture(scope="module")
def split(tiny_folder, tmp_path_factory):
    offload = tmp_path_factory.mktemp("offload")
    return lm.load(tiny_folder, backend="wrap", device_map=SPLIT, offload_folder=offload)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(4, 64, (3, 7), generator=torch.Generator().manual_seed(0))  # no pad / bos ids


def test_split_model_has_offloaded_layers_and_the_same_logits(split, whole, tokens):
    placed = device_map_of(split)
    assert placed["model.layers.1"] == "disk" and placed["model.layers.0"] == "cpu"
    gone = offloaded(split)
    assert gone and all(n.startswith("module.model.layers.1.") for n in gone)
    with torch.no_grad():
        assert torch.equal(split(tokens), whole(tokens))
    assert split.tokenizer is not None


def test_caches_hooks_and_patching_on_offloaded_layers(split, whole, tokens):
    hooks = ["model.layers.1.hook_out", "model.layers.1.mlp.hook_out", "model.layers.1.hook_in"]
    _, a = split.run_with_cache(tokens, names_filter=hooks)
    _, b = whole.run_with_cache(tokens, names_filter=hooks)
    for h in hooks:
        assert torch.equal(a[h], b[h])

    def ablate(act, hook):
        return act * 0

    with torch.no_grad():
        edited = split.run_with_hooks(tokens, fwd_hooks=[("model.layers.1.mlp.hook_out", ablate)])
        want = whole.run_with_hooks(tokens, fwd_hooks=[("model.layers.1.mlp.hook_out", ablate)])
    assert torch.equal(edited, want) and not torch.equal(edited, whole(tokens))
    corrupt = tokens.flip(0)

    def metric(out):
        return out[:, -1, 5] - out[:, -1, 7]

    grid_hooks = ["model.layers.0.hook_out", "model.layers.1.hook_out"]
    ref = patching_sweep(whole, corrupt, tokens, grid_hooks, metric, [0, 6], reuse_prefix=False)
    assert ref.max() - ref.min() > 0.05  # patches that move the metric by different amounts
    for reuse in (True, False):  # the base run's key-value cache reused before each patch, or not
        grid = patching_sweep(split, corrupt, tokens, grid_hooks, metric, [0, 6], reuse_prefix=reuse)
        torch.testing.assert_close(grid, ref, rtol=0, atol=1e-5)


def test_das_trains_through_offloaded_layers_like_on_the_whole_model(split, whole, tokens):
    g = torch.Generator().manual_seed(1)
    base = torch.randint(4, 64, (8, 7), generator=g)
    source = torch.randint(4, 64, (8, 7), generator=g)
    target = whole(source)[:, -1].argmax(-1)

    def data(generator):
        return InterventionBatch(base=base, source=source, target=target)

    def loss(out, y):
        return torch.nn.functional.cross_entropy(out[:, -1], y)

    found = {}
    for name, model in (("split", split), ("whole", whole)):
        das = DAS(32, 2, seed=0)
        losses = das.fit(
            model, "model.layers.1.hook_out", data, loss=loss, steps=3, lr=1e-2, progress=False, position=6
        )
        found[name] = (losses, das.rotation().detach())
    assert found["split"][0] == pytest.approx(found["whole"][0], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(found["split"][1], found["whole"][1], rtol=1e-5, atol=1e-6)


def test_store_of_the_split_model_equals_the_whole_model(split, whole, tokens, tmp_path):
    hooks = ["model.layers.0.hook_out", "model.layers.1.hook_out"]
    a = store.open(store.harvest(split, tokens.split(2), hooks, tmp_path / "a", progress=False))
    b = store.open(store.harvest(whole, tokens.split(2), hooks, tmp_path / "b", progress=False))
    for h in hooks:
        assert torch.equal(a[h][:], b[h][:])


def test_offloaded_weights_are_read_for_real_or_refused(split, whole):
    name = "module.model.layers.1.mlp.up_proj.weight"
    hf = dict(whole.named_parameters())
    assert dict(split.named_parameters())[name].device.type == "meta"
    assert torch.equal(parameter(split, name), hf[name])
    assert torch.equal(
        parameter(split, "module.model.layers.0.mlp.up_proj.weight"),
        hf["module.model.layers.0.mlp.up_proj.weight"],
    )
    with materialized(split, "module.model.layers.1.mlp"):  # loads the offloaded layer holding it
        inside = dict(split.named_parameters())[name]
        assert inside.device.type == "cpu" and torch.equal(inside, hf[name])
    assert dict(split.named_parameters())[name].device.type == "meta"  # put back
    with pytest.raises(
        OffloadedWeightsError, match=r"reading W_U reads weights, but \d+ are offloaded .*materialized"
    ):
        require_real_weights(split, "reading W_U")
    require_real_weights(whole)


def test_auto_map_with_a_memory_budget_offloads_the_rest(tiny_folder, whole, tokens, tmp_path):
    budget = {"cpu": "30KB"}
    model = lm.load(tiny_folder, backend="hf", device_map="auto", max_memory=budget, offload_folder=tmp_path)
    assert "disk" in device_map_of(model).values()
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, whole(tokens))


def test_split_bridge_runs_hooks_like_the_unsplit_bridge_and_refuses_meta_weights(
    tiny, tiny_folder, tokens, tmp_path
):
    split = lm.load(tiny_folder, backend="bridge", device_map=SPLIT, offload_folder=tmp_path)
    whole = tiny["bridge"]
    hooks = ["blocks.1.hook_resid_post", "blocks.1.mlp.hook_out"]
    out, a = split.run_with_cache(tokens, names_filter=hooks)
    ref, b = whole.run_with_cache(tokens, names_filter=hooks)
    assert torch.equal(out, ref) and all(torch.equal(a[h], b[h]) for h in hooks)
    with pytest.raises(NotImplementedError, match="meta"):  # TransformerLens refuses meta weights itself
        _ = split.blocks[1].mlp.W_in
    layer = [n for n, _ in split.named_modules() if n.endswith("layers.1")]
    with materialized(split, *layer):
        assert torch.equal(split.blocks[1].mlp.W_in, whole.blocks[1].mlp.W_in)


@pytest.mark.slow
@pytest.mark.smollm2
def test_split_bridge_matches_the_unsplit_bridge(tmp_path):
    from papers.lm.prompt_patching import EIFFEL, prompt_pair_patching

    halves = {f"model.layers.{i}": ("cpu" if i < 15 else "disk") for i in range(30)}
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
        **halves,
    }
    split = lm.load("smollm2-135m", backend="bridge", device_map=device_map, offload_folder=tmp_path)
    whole = lm.load("smollm2-135m", backend="bridge")
    clean = lm.to_tokens(whole, EIFFEL.clean)
    with torch.no_grad():
        assert torch.allclose(split(clean), whole(clean), atol=1e-5)
    hooks = [lm.residual_hooks(whole)[h] for h in (3, 20, 29)]
    a = prompt_pair_patching(split, EIFFEL, hooks=hooks)
    b = prompt_pair_patching(whole, EIFFEL, hooks=hooks)
    torch.testing.assert_close(a.logit_diff, b.logit_diff, atol=1e-4, rtol=0)
    with pytest.raises(NotImplementedError, match="meta"):  # TransformerLens refuses meta weights itself
        _ = split.blocks[20].mlp.W_in
    with materialized(split, *[n for n, _ in split.named_modules() if n.endswith("layers.20")]):
        assert torch.equal(split.blocks[20].mlp.W_in, whole.blocks[20].mlp.W_in)


@pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)
def test_cuda_and_cpu_split_patches_and_caches_like_the_unsplit_model(tiny_folder, whole, tokens):
    device_map = dict(SPLIT, **{"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu"})
    model = lm.load(tiny_folder, backend="wrap", device_map=device_map)
    hooks = ["model.layers.0.hook_out", "model.layers.1.hook_out"]
    _, cache = model.run_with_cache(tokens, names_filter=hooks)
    assert cache[hooks[0]].device.type == "cuda" and cache[hooks[1]].device.type == "cpu"
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).cpu(), whole(tokens), atol=1e-4, rtol=1e-4)

    def metric(out):
        return out[:, -1, 5] - out[:, -1, 7]

    grid = patching_sweep(model, tokens.flip(0), tokens, hooks, metric, [0, 6])  # sources cross devices
    ref = patching_sweep(whole, tokens.flip(0), tokens, hooks, metric, [0, 6])
    torch.testing.assert_close(grid.cpu(), ref, atol=1e-4, rtol=1e-4)
