"""Superposition geometry on hand-built arrangements with known answers, and reading W through hooks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses.superposition.geometry import (
    antipodal_pairs,
    describe,
    dimensions_per_feature,
    feature_dimensionality,
    fraction_counts,
    regular_polygon,
)
from analyses.superposition.phase import (
    DEDICATED,
    NEITHER,
    NOT_REPRESENTED,
    SUPERPOSITION,
    classify,
    phase_summary,
)
from analyses.superposition.weights import feature_directions, hook_bias
from hooked.models import ToyReLU


def polygon(k: int, radius: float = 1.0, phase: float = 0.3) -> torch.Tensor:
    a = phase + 2 * math.pi * torch.arange(k) / k
    return radius * torch.stack([torch.cos(a), torch.sin(a)])


def test_pentagon_has_dimensionality_two_fifths():
    W = polygon(5)
    assert torch.allclose(feature_dimensionality(W), torch.full((5,), 0.4), atol=1e-5)
    assert dimensions_per_feature(W).item() == pytest.approx(0.4, abs=1e-5)
    assert regular_polygon(W) == 5
    assert describe(W)["label"] == "pentagon"


def test_antipodal_pairs_and_orthogonal_features():
    W = torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0, 0.02]])
    assert antipodal_pairs(W) == [(0, 1), (2, 3)]
    assert torch.allclose(feature_dimensionality(W)[:4], torch.full((4,), 0.5), atol=1e-4)
    assert describe(W)["label"] == "square (2 antipodal pairs)"
    one_pair = torch.tensor([[1.0, -0.98, 0.0], [0.0, 0.05, 0.0]])
    assert antipodal_pairs(one_pair) == [(0, 1)]
    assert describe(one_pair)["label"] == "1 antipodal pair"
    dense = torch.tensor([[1.0, 0.0, 0.1, 0.0, 0.0], [0.0, 1.0, 0.0, 0.05, 0.0]])
    d = describe(dense)
    assert d["label"] == "2 orthogonal" and d["represented"] == [0, 1]
    assert feature_dimensionality(dense)[:2].tolist() == pytest.approx([1.0, 1.0], abs=0.02)
    assert feature_dimensionality(torch.zeros(2, 3)).tolist() == [0.0, 0.0, 0.0]


def test_tetrahedron_triangle_and_fraction_counts():
    tet = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]).T / math.sqrt(3)  # [3, 4]
    assert torch.allclose(feature_dimensionality(tet), torch.full((4,), 0.75), atol=1e-5)
    tri = polygon(3)
    assert torch.allclose(feature_dimensionality(tri), torch.full((3,), 2 / 3), atol=1e-5)
    D = torch.cat([feature_dimensionality(tet), feature_dimensionality(tri), torch.tensor([0.0, 0.2])])
    counts = fraction_counts(D)
    assert counts["3/4"] == 4 and counts["2/3"] == 3 and counts["0"] == 1 and counts["other"] == 1


def test_irregular_arrangement_is_no_polygon():
    W = polygon(5)
    W[:, 0] = torch.tensor([1.0, 0.05])
    W[:, 1] = torch.tensor([1.0, -0.05])  # two features almost on top of each other
    assert regular_polygon(W) is None
    assert describe(W)["label"] != "pentagon"
    with pytest.raises(ValueError, match="2-dimensional"):
        regular_polygon(torch.eye(3))
    with pytest.raises(ValueError, match=r"\[d, n\]"):
        describe(torch.zeros(2, 2, 5))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.integers(0, 10_000), st.floats(0.1, 10.0))
def test_dimensionality_is_in_unit_interval_and_rotation_invariant(d, n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, n, generator=g, dtype=torch.float64)
    D = feature_dimensionality(W)
    assert bool(((D >= -1e-9) & (D <= 1 + 1e-9)).all())
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    assert torch.allclose(feature_dimensionality(Q @ W * scale), D, atol=1e-8)
    assert torch.allclose(dimensions_per_feature(Q @ W), dimensions_per_feature(W), atol=1e-8)


def test_batched_functions_match_per_instance():
    W = torch.randn(3, 4, 2, 7)
    D = feature_dimensionality(W)
    assert D.shape == (3, 4, 7)
    assert torch.allclose(D[1, 2], feature_dimensionality(W[1, 2]))
    assert dimensions_per_feature(W).shape == (3, 4)


def test_feature_directions_and_bias_are_read_through_hooks():
    model = ToyReLU(6, 3, n_instances=4, seed=2)
    with torch.no_grad():
        model.b.copy_(torch.randn(4, 6))
    x = torch.rand(5, 4, 6)
    W = feature_directions(model, "hook_hidden", x)
    assert torch.allclose(W, model.W.detach(), atol=1e-6)
    assert torch.allclose(hook_bias(model, "hook_pre", x), model.b.detach(), atol=1e-6)
    assert torch.allclose(
        feature_directions(model, "hook_hidden", x, scale=0.25), model.W.detach(), atol=1e-5
    )
    with pytest.raises(Exception, match="hook_hiden|hook_hidden"):
        feature_directions(model, "hook_hiden", x)
    with pytest.raises(TypeError, match="n_features"):
        feature_directions(model, "hook_hidden", {"x": x})


def test_feature_directions_on_another_hooked_model(mlp):
    # the first residual hook of the MLP stack sees the input itself: its directions are the identity
    W = feature_directions(mlp, "blocks.0.hook_resid_pre", torch.randn(3, 8))
    assert torch.allclose(W, torch.eye(8), atol=1e-6)


def test_phase_classification_and_summary():
    W = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, -0.9]], [[0.1, 0.1]]])
    assert classify(W).tolist() == [NOT_REPRESENTED, DEDICATED, SUPERPOSITION, NEITHER]
    phases = torch.tensor([[NOT_REPRESENTED, SUPERPOSITION], [DEDICATED, SUPERPOSITION]])
    s = phase_summary(phases, torch.tensor([1.0, 0.1]), torch.tensor([0.5, 2.0]))
    assert s["densest_column"]["superposition"] == 0 and s["sparsest_column"]["superposition"] == 2
    assert s["superposition_onset"][0]["superposition_from_density"] == pytest.approx(0.1)


def test_token_input_models_get_a_clear_error(tmp_path, capsys):
    from hooked import cli

    code = cli.main(
        [
            "run",
            "feature-geometry",
            "--model",
            "repeat-gru",
            "--hook",
            "hook_memory",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "float feature vector" in err and "torch.int64" in err
    assert not (tmp_path / "r" / "result.json").exists()
