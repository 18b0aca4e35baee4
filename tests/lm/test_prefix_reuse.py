"""Patching sweeps that reuse the base run's keys and values before each patch's position equal the
full recomputation, on every backend, for plain and padded batches."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from interventions import prefix_reuse
from interventions.patching import patching_sweep
from tests.lm.conftest import needs_smollm2


def last_logit(answer: int):
    def metric(logits):
        return logits[:, -1, answer] - logits[:, -1].logsumexp(-1)

    return metric


def mean_logit(logits):
    # reads every position, so a wrong logit anywhere (also in the reused prefix) shows
    return logits.float().mean(dim=(1, 2))


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_prefix_reuse_equals_full_recomputation(tiny, backend):
    model = tiny[backend]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    hooks = lm.residual_hooks(model)
    for metric in (last_logit(5), mean_logit):
        kw = dict(positions=range(base.shape[1]), chunk=5)
        full = patching_sweep(model, base, source, hooks, metric, reuse_prefix=False, **kw)
        reused = patching_sweep(model, base, source, hooks, metric, reuse_prefix=True, **kw)
        auto = patching_sweep(model, base, source, hooks, metric, **kw)
        assert full.shape == (len(hooks), base.shape[1])
        torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(auto, reused)
        assert full.std() > 1e-3  # the patches do something: the comparison can fail


def test_prefix_reuse_runs_only_the_suffix(tiny, monkeypatch):
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    seen: list[int] = []
    real = prefix_reuse.prefix_reuse_sweep

    def counting(model, forward, *args, **kwargs):
        call = forward.__call__

        class Counting(type(forward)):
            def __call__(self, ids, *a):
                seen.append(ids.shape[1])
                return call(ids, *a)

        forward.__class__ = Counting
        return real(model, forward, *args, **kwargs)

    monkeypatch.setattr(prefix_reuse, "prefix_reuse_sweep", counting)
    T = base.shape[1]
    patching_sweep(model, base, source, lm.residual_hooks(model), mean_logit, positions=range(T))
    assert seen[0] == T  # the base run, once
    assert sorted(seen[1:]) == sorted(T - p for p in range(T))  # one forward per start, suffix only


@pytest.mark.parametrize("side", ["left", "right"])
def test_prefix_reuse_on_a_padded_batch_equals_full(tiny, side):
    model = tiny["wrap"]
    base = lm.tokenize(model, ["the cat sat on the mat", "a dog ran"], padding_side=side)
    source = lm.tokenize(model, ["the dog sat on the rug", "a cat sat"], padding_side=side)
    last = lm.last_positions(base)
    positions = [last, last - 1, 0] if side == "right" else [-1, -2, 0]
    hooks = lm.residual_hooks(model)[:2]

    def metric(logits):
        return logits[torch.arange(logits.shape[0]), last.repeat(logits.shape[0] // 2), 7]

    full = patching_sweep(model, base, source, hooks, metric, positions=positions, reuse_prefix=False)
    reused = patching_sweep(model, base, source, hooks, metric, positions=positions, reuse_prefix=True)
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)


def test_reuse_prefix_is_refused_clearly_where_it_does_not_apply(mlp):
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="reuse_prefix=True"):
        patching_sweep(
            mlp,
            x,
            x,
            ["blocks.0.hook_resid_pre"],
            lambda o: o.sum((1, 2)),
            positions=[0, 1],
            reuse_prefix=True,
        )
    # the default falls back to the plain path on other models
    out = patching_sweep(mlp, x, x, ["blocks.0.hook_resid_pre"], lambda o: o.sum((1, 2)), positions=[0, 1])
    assert out.shape == (1, 2)


@pytest.mark.slow
@needs_smollm2
@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_prefix_reuse_on_smollm2_equals_full(smol, backend):
    from analyses.lm_patching import EIFFEL, logit_diff

    model = smol[backend]
    clean, corrupt = lm.to_tokens(model, EIFFEL.clean), lm.to_tokens(model, EIFFEL.corrupt)
    metric = logit_diff(lm.token_id(model, EIFFEL.answer), lm.token_id(model, EIFFEL.wrong))
    hooks = lm.residual_hooks(model)[::6]
    kw = dict(positions=range(clean.shape[1]), chunk=32)
    full = patching_sweep(model, corrupt, clean, hooks, metric, reuse_prefix=False, **kw)
    reused = patching_sweep(model, corrupt, clean, hooks, metric, reuse_prefix=True, **kw)
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)
