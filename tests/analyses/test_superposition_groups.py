"""Word-group analyses (cycles, Gram norms, co-occurrence, clusters) and interference, on known cases."""

from __future__ import annotations

import math

import pytest
import torch

from analyses.superposition.groups import (
    cluster_groups,
    cooccurrence_correlation,
    cyclic_order,
    group_geometry,
    offdiag_gram_norm,
    unit_pca_2d,
)
from analyses.superposition.interference import (
    interference_stats,
    pre_decomposition,
    r2_context_vs_alone,
    r2_per_feature,
)
from hooked.models import ToyReLU


def ring(k: int = 12, d: int = 40, seed: int = 0, jitter: float = 0.05) -> torch.Tensor:
    """k unit-ish vectors around a circle in a random 2-D plane of R^d, in order, with varied norms."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, 2, generator=g))
    a = 2 * math.pi * torch.arange(k) / k + jitter * torch.randn(k, generator=g)
    norms = 0.5 + torch.rand(k, generator=g)
    return basis @ torch.stack([torch.cos(a), torch.sin(a)]) * norms + 0.01 * torch.randn(d, k, generator=g)


def test_hand_built_twelve_cycle_is_cyclic_in_order():
    W = ring()
    coords, explained = unit_pca_2d(W, list(range(12)))
    assert explained > 0.95
    cyc = cyclic_order(coords)
    assert cyc["is_cyclic"] and cyc["adjacent_fraction"] == 1.0
    assert cyc["p_value"] < 1e-3
    # reversed and rotated orders are the same cycle
    rev = list(reversed(range(12)))
    assert cyclic_order(unit_pca_2d(W, rev)[0])["is_cyclic"]
    rot = [(i + 5) % 12 for i in range(12)]
    assert cyclic_order(unit_pca_2d(W, rot)[0])["is_cyclic"]


def test_random_arrangement_is_not_cyclic():
    W = ring()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3)).tolist()
    cyc = cyclic_order(unit_pca_2d(W, perm)[0])
    assert not cyc["is_cyclic"] and cyc["adjacent_fraction"] < 0.5 and cyc["p_value"] > 0.05
    noise = torch.randn(40, 12, generator=torch.Generator().manual_seed(4))
    assert not cyclic_order(unit_pca_2d(noise, list(range(12)))[0])["is_cyclic"]


def test_offdiag_gram_norm_known_values():
    assert offdiag_gram_norm(torch.eye(5), [0, 1, 2]).item() == pytest.approx(0.0)
    W = torch.tensor([[1.0, 0.5], [0.0, math.sqrt(0.75)]])  # two unit vectors with dot 0.5
    assert offdiag_gram_norm(W, [0, 1]).item() == pytest.approx(math.sqrt(2) * 0.5, abs=1e-6)
    batched = torch.stack([W, torch.eye(2)])
    assert offdiag_gram_norm(batched, [0, 1]).tolist() == pytest.approx([math.sqrt(0.5), 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="0..1"):
        offdiag_gram_norm(W, [0, 2])


def test_cooccurrence_correlation():
    x = torch.tensor(
        [[1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 1], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.float32
    )
    C = cooccurrence_correlation(x, [0, 1, 2])
    assert C[0, 1].item() == pytest.approx(1.0)
    assert C[0, 2].item() == pytest.approx(-1.0)
    # only windows where some group word is active enter: the all-zero row changes nothing
    assert torch.allclose(C, cooccurrence_correlation(x[[0, 1, 2, 4]], [0, 1, 2]))


def test_group_geometry_and_clusters_recover_planted_groups():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 3, generator=g) * 3
    W = torch.cat(
        [centres[:, [c]] + 0.1 * torch.randn(30, 8, generator=g) for c in range(3)], dim=1
    )  # 3 groups of 8
    groups = {"a": list(range(0, 8)), "b": list(range(8, 16)), "c": list(range(16, 24))}
    res = cluster_groups(W, groups, n_clusters=3)
    assert res["adjusted_rand_index"] == pytest.approx(1.0)
    assert all(v["modal_cluster_share"] == 1.0 and v["random_share"] < 0.9 for v in res["groups"].values())
    geo = group_geometry(ring(), list(range(12)))
    assert geo["cyclic"]["is_cyclic"] and geo["mean_cos_neighbours"] > geo["mean_cos_all"]


def test_pre_decomposition_matches_the_model_hook():
    model = ToyReLU(6, 3, seed=1)
    with torch.no_grad():
        model.b.copy_(torch.randn(1, 6))
    x = (torch.rand(9, 6) > 0.5).float()
    _, cache = model.run_with_cache(x)
    parts = pre_decomposition(model.W[0].detach(), model.b[0].detach(), x)
    assert torch.allclose(parts["pre"], cache["hook_pre"][:, 0], atol=1e-5)
    assert torch.allclose(parts["bias"] + parts["self"] + parts["context"], parts["pre"])


def test_constructive_interference_known_case():
    # words 0 and 1 point the same way and always co-occur; word 2 is orthogonal and alone
    W = torch.tensor([[0.6, 0.6, 0.0], [0.0, 0.0, 1.0]])
    b = torch.tensor([-0.5, -0.5, -0.2])
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    s = interference_stats(W, b, x)
    assert s["active_pairs"] == 3
    assert s["constructive_share"] == pytest.approx(2 / 3)
    # alone, 0 and 1 stay below the ReLU (-0.5 + 0.36 < 0); together they cross it (+0.36)
    assert s["rescued_by_context_share"] == pytest.approx(2 / 3)
    assert s["recovered_share"] == 1.0 and s["alone_recovered_share"] == pytest.approx(1 / 3)


def test_r2_per_feature_and_context_vs_alone():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert r2_per_feature(t, t).tolist() == [1.0, 1.0]
    assert r2_per_feature(t, t.mean(0).expand_as(t)).tolist() == pytest.approx([0.0, 0.0])
    assert r2_per_feature(torch.ones(3, 1), torch.zeros(3, 1)).isnan().all()
    model = ToyReLU(4, 4, seed=0)
    with torch.no_grad():
        model.W.copy_(torch.eye(4)[None])
    x = (torch.rand(50, 4) > 0.5).float()
    ctx, alone = r2_context_vs_alone(model, "hook_out", x)
    assert torch.allclose(ctx, torch.ones(4)) and torch.allclose(alone, torch.ones(4))
