"""Spotlight resonance on a language model through the hook protocol (tiny-llama; no download)."""

from __future__ import annotations

import math

import pytest
import torch

from analyses.spotlight import spotlight, spotlight_model
from hooked import lm
from hooked.protocol import collect_activations
from papers.lm.mlp_spotlight import mlp_hidden_hooks, plot_side_by_side, scaled_epsilon, side_by_side
from tests.toys import MLPStack


@pytest.fixture(scope="module")
def tiny():
    from hooked.models.lm import tiny_llama

    model, _ = tiny_llama(layers=2, d_model=32, vocab=64, seed=0)
    return model


def test_mlp_hidden_hooks_are_the_down_projection_inputs(tiny):
    hooks = mlp_hidden_hooks(tiny)
    assert hooks == ["model.layers.0.mlp.down_proj.hook_in", "model.layers.1.mlp.down_proj.hook_in"]
    tokens = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    acts = collect_activations(
        tiny, [tokens], hooks + ["model.layers.1.mlp.act_fn.hook_out", "model.layers.1.mlp.up_proj.hook_out"]
    )
    assert acts[hooks[0]].shape == (2, 5, 64)  # intermediate size 2 * d_model
    # the neurons: act(gate) * up, elementwise
    torch.testing.assert_close(
        acts[hooks[1]],
        acts["model.layers.1.mlp.act_fn.hook_out"] * acts["model.layers.1.mlp.up_proj.hook_out"],
    )
    with pytest.raises(ValueError, match="cannot find the MLP hidden activations"):
        mlp_hidden_hooks(MLPStack())


@pytest.mark.parametrize("which", ["toy", "lm"])
def test_spotlight_takes_the_lm_through_the_same_call_as_a_toy_model(which, tiny):
    """One call, ``spotlight_model(model, hook, batches, ...)``, for both; streaming equals one-shot."""
    g = torch.Generator().manual_seed(1)
    if which == "toy":
        model, hook = MLPStack(d=8), "blocks.1.hook_mlp_out"
        batches = [torch.randn(6, 4, 8, generator=g) for _ in range(3)]
    else:
        model, hook = tiny, mlp_hidden_hooks(tiny)[1]
        batches = [torch.randint(0, 64, (3, 7), generator=g) for _ in range(3)]
    found = spotlight_model(
        model, hook, batches, epsilon=0.3, max_planes=40, null_bases=3, n_angles=32, seed=0
    )
    acts = collect_activations(model, batches, [hook])[hook]
    direct = spotlight(acts, epsilon=0.3, max_planes=40, n_angles=32, seed=0, zeros="skip")
    assert torch.equal(found.result.counts, direct.counts)
    assert found.result.n == acts.shape[0] * acts.shape[1]
    assert found.alignment["verdict"] in ("aligned", "anti-aligned", "basis-locked", "isotropic", "empty")


def test_scaled_epsilon():
    assert scaled_epsilon(2, 1.0) == pytest.approx(1.0)
    assert scaled_epsilon(1536) == pytest.approx(2 * math.sqrt(2 / 1536))
    assert scaled_epsilon(8, 10.0) == 1.0  # capped at 1


def test_side_by_side_on_tiny_llama(tiny):
    tokens = torch.randint(0, 64, (6, 8), generator=torch.Generator().manual_seed(2))
    result = side_by_side(tiny, tokens, [0, 1], max_planes=30, null_bases=2, n_angles=16, batch_size=4)
    assert len(result.rows) == 2 * 2 * 2  # layers x (mlp, resid) x (paper, scaled)
    first = {(r["layer"], r["kind"], r["resolution"]): r for r in result.rows}
    assert first[(0, "mlp", "paper")]["d"] == 64 and first[(0, "resid", "paper")]["d"] == 32
    assert first[(1, "resid", "scaled")]["hook"] == lm.residual_hooks(tiny)[2]  # the residual after block 1
    assert first[(1, "mlp", "scaled")]["epsilon"] == pytest.approx(scaled_epsilon(64))
    assert all(r["n"] == 48 for r in result.rows)
    for r in result.rows:
        for cone in r["fullest_cones"]:
            assert all("#" in t for t in cone["tokens"])
    assert set(result.to_json()) >= {"rows", "layers", "samples"}
    plot_side_by_side(result)
    with pytest.raises(ValueError, match="out of range"):
        side_by_side(tiny, tokens, [2])
