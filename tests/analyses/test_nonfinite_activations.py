"""Analyses refuse non-finite activations or weights, naming the hook, instead of reporting a number
computed from them (chance accuracy, "nothing represented")."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import hooked
from analyses.probes import ridge_probe_analysis, ridge_probes
from analyses.superposition.geometry import describe, feature_dimensionality_at, feature_geometry_at


class Poisoned(hooked.HookedModule):
    """A linear map whose weight holds ``value`` at one entry (NaN or inf)."""

    def __init__(self, value: float, d_in: int = 5, d: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(d_in, d)
        with torch.no_grad():
            self.lin.weight[0, 0] = value
        self.hook_h = hooked.HookPoint()

    def forward(self, x):
        return self.hook_h(self.lin(x))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_ridge_probe_refuses_non_finite_activations(value):
    model = Poisoned(value)
    x = torch.randn(64, 5)
    with pytest.raises(ValueError, match=r"ridge-probe: the activations at 'hook_h' hold non-finite values"):
        ridge_probe_analysis(model, "hook_h", x, labels="output", folds=2)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_feature_geometry_refuses_non_finite_weights(value):
    model = Poisoned(value)
    example = torch.randn(8, 5)
    for analysis in (feature_geometry_at, feature_dimensionality_at):
        with pytest.raises(ValueError, match="'hook_h'.*non-finite"):
            analysis(model, "hook_h", example)
    W = torch.eye(2)
    W[0, 1] = value
    with pytest.raises(ValueError, match="describe: the feature directions W hold non-finite"):
        describe(W)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 30),
    classes=st.integers(1, 4),
    folds=st.integers(-2, 40),
    seed=st.integers(0, 2**16),
    poison=st.sampled_from([None, float("nan"), float("inf")]),
)
def test_ridge_probes_give_an_accuracy_in_range_or_a_clear_error(n, classes, folds, seed, poison):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, 3, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    if poison is not None:
        x[0, int(seed % n), 1] = poison
    try:
        result = ridge_probes(x, labels, folds=folds, seed=seed)
    except ValueError as e:
        msg = str(e)
        assert (poison is not None and "non-finite" in msg) or "folds" in msg
        return
    assert poison is None and 2 <= folds <= n
    acc = result.accuracy
    assert torch.isfinite(acc).all() and ((acc >= 0) & (acc <= 1)).all()
    assert torch.isfinite(result.per_fold).all()


def test_folds_beyond_the_samples_are_refused():
    x, labels = torch.randn(1, 6, 3), torch.tensor([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"folds=7 leaves .* no held-out sample .* at most 3 folds"):
        ridge_probes(x, labels, folds=7)
    assert ridge_probes(x, labels, folds=3).accuracy.isfinite().all()
