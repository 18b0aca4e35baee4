"""Gradients of a metric (``run_with_cache(incl_bwd=True, metric=)``) on HookedModule, hooked.wrap and
the bridge, and attribution patching: equal to gradient x activation difference computed by hand,
exact where the model is linear, and on SmolLM2 compared with exact patching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hooked
from interventions.attribution import attribution_patching
from interventions.patching import patching_sweep
from tests.toys import SeqLinear, SeqMLP, TinyRNN


def metric(out):
    return out[:, -1, 0] - out[:, -1, 1]


# ---------------------------------------------------------------------- gradients of a metric
def test_metric_gradients_on_a_hooked_module_equal_autograd_by_hand():
    model = SeqMLP(d=6, n_blocks=3)
    x = torch.randn(2, 4, 6, requires_grad=True)
    names = [f"blocks.{i}.hook_resid_pre" for i in range(3)]
    out, cache = model.run_with_cache(x, names_filter=names, incl_bwd=True, metric=lambda o: metric(o).sum())
    # by hand: the blocks called one by one, no hook points involved
    acts, h = [], x
    for block in model.blocks:
        acts.append(h)
        h = h + torch.tanh(block.lin(h))
    grads = torch.autograd.grad(metric(h.cumsum(dim=1)).sum(), acts)
    for n, g in zip(names, grads):
        torch.testing.assert_close(cache[n + "_grad"], g)
    assert out.shape == (2, 4, 6)
    with pytest.raises(ValueError, match="scalar"):
        model.run_with_cache(x, names_filter=names, incl_bwd=True, metric=metric)
    with pytest.raises(ValueError, match="incl_bwd"):
        model.run_with_cache(x, names_filter=names, metric=metric)


def test_metric_gradients_on_a_wrapped_plain_module():
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    model = hooked.wrap(net)
    x = torch.randn(5, 4)
    _, cache = model.run_with_cache(
        x, names_filter="1.hook_out", incl_bwd=True, metric=lambda o: o[:, 0].sum()
    )
    hidden = net[1](net[0](x))
    (want,) = torch.autograd.grad(net[2](hidden)[:, 0].sum(), hidden)
    torch.testing.assert_close(cache["1.hook_out_grad"], want)


# ---------------------------------------------------------------------- attribution patching
def test_attribution_equals_gradient_times_difference_by_hand():
    model = SeqMLP(d=6, n_blocks=3)
    g = torch.Generator().manual_seed(0)
    base, source = torch.randn(3, 5, 6, generator=g), torch.randn(3, 5, 6, generator=g)
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(3)]
    got = attribution_patching(model, base, source, hooks, metric, positions=range(5))
    whole = attribution_patching(model, base, source, hooks, metric)

    def entering(x, i):
        with torch.no_grad():
            for block in model.blocks[:i]:
                x = x + torch.tanh(block.lin(x))
        return x

    for i in range(3):
        a_base, a_src = entering(base, i).requires_grad_(), entering(source, i)
        h = a_base
        for block in model.blocks[i:]:
            h = h + torch.tanh(block.lin(h))
        (grad,) = torch.autograd.grad(metric(h.cumsum(dim=1)).sum(), a_base)
        want = ((a_src - a_base) * grad).sum(-1).mean(0)  # [pos], averaged over rows
        torch.testing.assert_close(got[i], want.detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(whole[i], want.sum().detach(), atol=1e-6, rtol=1e-5)


def test_attribution_on_a_wrapped_plain_module_equals_gradient_times_difference_by_hand():
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    model = hooked.wrap(net)
    g = torch.Generator().manual_seed(0)
    base, source = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)

    def first(out):
        return out[:, 0] - out[:, 2]

    got = attribution_patching(model, base, source, ["1.hook_out"], first)
    with torch.no_grad():
        a_src = net[1](net[0](source))
    a_base = net[1](net[0](base)).detach().requires_grad_()
    (grad,) = torch.autograd.grad(first(net[2](a_base)).sum(), a_base)
    want = ((a_src - a_base) * grad).sum(-1).mean(0)
    torch.testing.assert_close(got[0], want.detach(), atol=1e-6, rtol=1e-5)


def test_attribution_is_exact_patching_on_a_linear_model():
    model = SeqLinear()
    g = torch.Generator().manual_seed(0)
    base, source = torch.randn(4, 6, 5, generator=g), torch.randn(4, 6, 5, generator=g)
    estimate = attribution_patching(model, base, source, ["hook_mid"], metric, positions=range(6))
    exact = patching_sweep(model, base, source, ["hook_mid"], metric, positions=range(6))
    with torch.no_grad():
        torch.testing.assert_close(estimate + metric(model(base)).mean(), exact, atol=1e-5, rtol=1e-5)


def test_attribution_over_the_steps_of_a_recurrence():
    rnn = TinyRNN()
    g = torch.Generator().manual_seed(0)
    base, source = torch.randn(3, 6, 3, generator=g), torch.randn(3, 6, 3, generator=g)

    def final(out):
        return out[:, -1].sum(-1)

    got = attribution_patching(rnn, base, source, ["hook_h"], final, positions=range(6))
    states = []

    def keep(t, h):
        states.append(h)
        return h

    out = rnn.manual(base, keep)
    grads = torch.autograd.grad(final(out).sum(), states)
    with torch.no_grad():
        src = rnn.manual(source)
    want = torch.stack([((src[:, t] - states[t]) * grads[t]).sum(-1).mean(0) for t in range(6)])
    torch.testing.assert_close(got[0], want.detach(), atol=1e-6, rtol=1e-5)


def test_attribution_leaves_parameter_gradients_alone_and_says_what_is_wrong():
    model = SeqMLP(d=6, n_blocks=2)
    marker = torch.ones_like(model.blocks[0].lin.weight)
    model.blocks[0].lin.weight.grad = marker
    base, source = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    attribution_patching(model, base, source, ["blocks.1.hook_resid_pre"], metric, positions=[3])
    assert model.blocks[0].lin.weight.grad is marker and model.blocks[1].lin.weight.grad is None
    with pytest.raises(ValueError, match="same shapes"):
        attribution_patching(model, base, source[:, :3], ["blocks.1.hook_resid_pre"], metric)
    with pytest.raises(hooked.UnknownHookError):
        attribution_patching(model, base, source, ["blocks.1.hook_resid_pree"], metric)
    model.requires_grad_(False)  # float inputs still carry gradients
    frozen = attribution_patching(model, base, source, ["blocks.1.hook_resid_pre"], metric, positions=[3])
    model.requires_grad_(True)
    torch.testing.assert_close(
        frozen, attribution_patching(model, base, source, ["blocks.1.hook_resid_pre"], metric, positions=[3])
    )
    from hooked import lm
    from tests.lm.tiny_models import tiny_hf

    hf = tiny_hf("llama")
    lm_model, tokens = (
        lm.wrap_lm(hf),
        torch.randint(4, 64, (2, 5), generator=torch.Generator().manual_seed(0)),
    )
    other = torch.randint(4, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    hooks = lm.residual_hooks(lm_model)
    trainable = attribution_patching(lm_model, tokens, other, hooks, metric, positions=range(5))
    hf.requires_grad_(False)  # token ids in, frozen weights: the gradients still reach every hook
    frozen = attribution_patching(lm_model, tokens, other, hooks, metric, positions=range(5))
    torch.testing.assert_close(frozen, trainable)
    assert not any(p.requires_grad for p in hf.parameters())  # left as it was


def test_attribution_of_every_head_on_both_backends():
    from hooked import lm
    from tests.lm.tiny_models import tiny_bridge, tiny_hf

    g = torch.Generator().manual_seed(0)
    base = torch.randint(4, 64, (2, 6), generator=g)
    source = base.clone()
    source[:, 2] = torch.randint(4, 64, (2,), generator=g)
    found = {}
    for backend, model in (("wrap", lm.wrap_lm(tiny_hf("llama"))), ("bridge", tiny_bridge("llama"))):
        zs = [lm.act_name(model, "z", i) for i in range(2)]
        heads = attribution_patching(model, base, source, zs, metric, positions=range(6), per_head=True)
        summed = attribution_patching(model, base, source, zs, metric, positions=range(6))
        resid = attribution_patching(
            model, base, source, lm.residual_hooks(model), metric, positions=range(6)
        )
        assert heads.shape == (2, 6, 4) and resid.shape == (3, 6)
        torch.testing.assert_close(heads.sum(-1), summed, atol=1e-6, rtol=1e-5)
        assert torch.all(resid[0, :2] == 0) and torch.all(resid[0, 3:] == 0)  # only position 2 differs
        found[backend] = (heads, resid)
    for got, want in zip(found["bridge"], found["wrap"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_attribution_against_exact_patching():
    """31 residual streams x 9 positions, Eiffel Tower -> Colosseum: one forward + one backward + one
    forward against the batched exact sweep (times and correlation printed)."""
    import time

    from hooked import lm
    from papers.lm.prompt_patching import EIFFEL, logit_diff

    found = {}
    for backend in ("wrap", "bridge"):
        model = lm.load("smollm2-135m", backend=backend)
        clean, corrupt = lm.to_tokens(model, EIFFEL.clean), lm.to_tokens(model, EIFFEL.corrupt)
        ld = logit_diff(lm.token_id(model, EIFFEL.answer), lm.token_id(model, EIFFEL.wrong))
        hooks = lm.residual_hooks(model)
        t = time.perf_counter()
        estimate = attribution_patching(model, corrupt, clean, hooks, ld, positions=range(clean.shape[1]))
        t_atp = time.perf_counter() - t
        t = time.perf_counter()
        exact = patching_sweep(model, corrupt, clean, hooks, ld, positions=range(clean.shape[1]))
        t_exact = time.perf_counter() - t
        with torch.no_grad():
            base = ld(model(corrupt)).item()
        change = exact - base
        r = torch.corrcoef(torch.stack([estimate.flatten(), change.flatten()]))[0, 1].item()
        r_early = torch.corrcoef(torch.stack([estimate[:-1].flatten(), change[:-1].flatten()]))[0, 1].item()
        print(
            f"\n{backend}: attribution patching {t_atp:.2f} s, exact sweep (279 patches) {t_exact:.2f} s; "
            f"Pearson r over 279 cells {r:.3f}; without the last residual stream {r_early:.3f}"
        )
        assert r > 0.5
        found[backend] = estimate
    torch.testing.assert_close(found["bridge"], found["wrap"], atol=2e-3, rtol=1e-3)
