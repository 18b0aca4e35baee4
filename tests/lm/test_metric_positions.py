"""A metric that declares the positions it reads (``hooked.sweeps.reads_positions``): the sweep runs
the output head there only, and its numbers equal those of the whole head on every path."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from hooked.lm.backends.forward import LMForward
from hooked.sweeps import metric_positions, reads_positions
from interventions.patching import patching_sweep
from papers.lm.prompt_patching import logit_diff


def last_logit(answer: int, position: int = -1):
    def metric(logits):
        return logits[:, position, answer] - logits[:, position].logsumexp(-1)

    return metric


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
@pytest.mark.parametrize("reuse", [None, True])
def test_declared_positions_give_the_whole_heads_numbers(tiny, backend, reuse):
    model = tiny[backend]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    hooks = lm.residual_hooks(model)
    kw = dict(positions=range(base.shape[1]), chunk=5)
    for position in (-1, 3):
        full = patching_sweep(model, base, source, hooks, last_logit(5, position), reuse_prefix=False, **kw)
        declared = reads_positions(last_logit(5, position), [position])
        fast = patching_sweep(model, base, source, hooks, declared, reuse_prefix=reuse, **kw)
        torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
        assert full.std() > 1e-3  # the patches change the metric: the comparison can fail


def test_declared_positions_on_the_head_sweep_path(tiny):
    # patches along the heads axis: only the layers before each patch are reused, every position runs
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    zs = [lm.act_name(model, "z", layer) for layer in range(1, lm.lm_names(model).dec.n_layers)]
    heads = range(lm.lm_names(model).dec.n_heads)
    kw = dict(positions=heads, pos_dim=2)
    full = patching_sweep(model, base, source, zs, last_logit(5), reuse_prefix=False, **kw)
    fast = patching_sweep(model, base, source, zs, reads_positions(last_logit(5), [-1]), **kw)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_the_head_runs_only_at_the_declared_positions(tiny):
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    seen = []
    handle = model.module.lm_head.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    try:
        metric = reads_positions(last_logit(5), [-1])
        hooks = lm.residual_hooks(model)  # at most 4 patches a forward: several patched forwards
        patching_sweep(model, base, source, hooks, metric, positions=range(base.shape[1]), chunk=4)
    finally:
        handle.remove()
    assert seen[:2] == [base.shape[1]] * 2  # the source run and the base run: every position
    assert len(seen) > 3 and set(seen[2:]) == {1}  # each patched forward: the last position only


def test_a_metric_reading_an_undeclared_position_is_an_error(tiny):
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    lying = reads_positions(last_logit(5, position=2), [-1])
    with pytest.raises(ValueError, match="reads other positions"):
        patching_sweep(model, base, source, lm.residual_hooks(model)[:3], lying, positions=range(4))
    outside = reads_positions(last_logit(5), [40])
    with pytest.raises(ValueError, match="outside a prompt"):
        patching_sweep(model, base, source, lm.residual_hooks(model)[:3], outside, positions=range(4))


def test_reads_positions_checks_its_arguments():
    def metric(logits):
        return logits[:, -1, 0]

    assert metric_positions(metric) is None
    assert reads_positions(metric, [-1]) is metric and metric_positions(metric) == (-1,)
    assert metric_positions(logit_diff(1, 2)) == (-1,)
    for bad in ([], [1.5], "last", [True]):
        with pytest.raises((TypeError, ValueError), match="positions"):
            reads_positions(metric, bad)
    with pytest.raises(TypeError, match="callable"):
        reads_positions(3, [0])


def test_lm_forward_keeps_only_the_asked_positions(tiny):
    for backend in ("wrap", "bridge"):
        model = tiny[backend]
        ids = lm.to_tokens(model, "the cat sat on the big red mat")
        forward = LMForward(model, ())
        mask = torch.ones_like(ids)
        positions = torch.arange(ids.shape[1])[None]
        with torch.no_grad():
            whole = forward(ids, mask, positions, None)
            kept = forward(ids, mask, positions, None, keep=torch.tensor([1, ids.shape[1] - 1]))
        torch.testing.assert_close(kept, whole[:, [1, ids.shape[1] - 1]], atol=1e-5, rtol=1e-5)
