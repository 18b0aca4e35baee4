"""Activation patching: batched sweeps equal the one-forward-per-patch loop, with known answers."""

from __future__ import annotations

import torch

from interventions.patching import patch, patching_sweep
from tests.toys import MLPStack, TinyRNN


class SeqMLP(MLPStack):
    """The MLP stack applied to [batch, pos, d] sequences, mixing positions at the end."""

    def forward(self, x):
        out = super().forward(x)
        return out.cumsum(dim=1)


def metric_last(out):
    return out[:, -1].sum(dim=-1)


def test_sweep_batched_equals_serial_on_positions():
    model = SeqMLP(d=6, n_blocks=3)
    base, source = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(3)]
    batched = patching_sweep(model, base, source, hooks, metric_last, positions=range(5))
    serial = patching_sweep(model, base, source, hooks, metric_last, positions=range(5), batched=False)
    chunked = patching_sweep(model, base, source, hooks, metric_last, positions=range(5), chunk=4)
    assert batched.shape == (3, 5)
    assert torch.allclose(batched, serial, atol=1e-5) and torch.allclose(chunked, serial, atol=1e-5)
    # patching every position of the first residual stream reproduces the source run
    whole = patching_sweep(model, base, source, hooks[:1], metric_last)
    assert torch.allclose(whole, metric_last(model(source)).mean(), atol=1e-5)


def test_patching_source_into_itself_changes_nothing():
    model = SeqMLP(d=6, n_blocks=2)
    x = torch.randn(3, 4, 6)
    out = patch(model, x, x, "blocks.1.hook_mlp_out", position=2)
    assert torch.equal(out, model(x))
    grid = patching_sweep(model, x, x, ["blocks.0.hook_mlp_out", "hook_out"], metric_last, positions=range(4))
    assert torch.allclose(grid, metric_last(model(x)).mean().expand(2, 4), atol=1e-5)


def test_patching_a_position_only_moves_that_position():
    model = MLPStack(d=6, n_blocks=2)  # no mixing across positions
    base, source = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    out = patch(model, base, source, "blocks.0.hook_resid_pre", position=1)
    want = model(base)
    want[:, 1] = model(source)[:, 1]
    assert torch.allclose(out, want, atol=1e-6)


def test_recurrent_sweep_patches_steps():
    rnn = TinyRNN()
    base, source = torch.randn(3, 6, 3), torch.randn(3, 6, 3)

    def final(out):
        return out[:, -1].sum(dim=-1)

    batched = patching_sweep(rnn, base, source, ["hook_h"], final, positions=range(6))
    serial = patching_sweep(rnn, base, source, ["hook_h"], final, positions=range(6), batched=False)
    assert torch.allclose(batched, serial, atol=1e-5)
    # patching the last step's state is the source's final state
    assert torch.allclose(batched[0, -1], final(rnn(source)).mean(), atol=1e-5)
    # patching step t by hand equals an edit of the recurrence at t
    src_states = rnn(source)
    manual = rnn.manual(base, lambda t, h: src_states[:, t] if t == 2 else h)
    assert torch.allclose(patch(rnn, base, source, "hook_h", position=2), manual, atol=1e-6)
    assert torch.allclose(patch(rnn, base, source, "hook_h"), src_states, atol=1e-6)
