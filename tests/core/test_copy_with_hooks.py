"""``copy.deepcopy`` of a model that has hooks (issue 22): the copy carries the same hook functions,
attached to its own hook points, as PyTorch copies a module's hooks with it. They fire in the
copy's forwards (with ``hook`` the copy's point), are listed and removed there, and removing hooks
on either model leaves the other's working; on ``HookedModule`` and on ``hooked.wrap``. (They used
to be listed on the copy but fire only while the original had hooks too.)"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hooked
from tests.toys import MLPStack


def plain_mlp():
    return MLPStack()


def wrapped_mlp():
    torch.manual_seed(0)
    return hooked.wrap(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)))


MODELS = {"HookedModule": (plain_mlp, "blocks.0.hook_mlp_out"), "wrap": (wrapped_mlp, "1.hook_out")}


def torch_hook_count(model):
    """PyTorch hooks on the modules of a wrap's module (its points install them while live)."""
    inner = model.module if isinstance(model, hooked.Wrapped) else model
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in inner.modules())


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_copy_carries_working_hooks_of_its_own(kind):
    make, name = MODELS[kind]
    model = make()
    x = torch.randn(3, 8)
    plain = model(x)
    seen = []

    def zero(act, hook):
        seen.append(hook)
        return torch.zeros_like(act)

    model.add_perma_hook(name, zero)
    edited = model(x)
    assert not torch.equal(edited, plain)
    twin = copy.deepcopy(model)
    point = twin.hook_dict[name]
    assert [h.fn for h in point.list_hooks()] == [zero] and point.list_hooks()[0].is_permanent
    seen.clear()
    torch.testing.assert_close(twin(x), edited)
    assert seen == [point]  # the copy's own point, not the original's
    model.reset_hooks(including_permanent=True)  # the original's removal leaves the copy's
    assert torch.equal(model(x), plain)
    torch.testing.assert_close(twin(x), edited)
    model.add_perma_hook(name, zero)
    twin.reset_hooks(including_permanent=True)  # and the copy's leaves the original's
    torch.testing.assert_close(twin(x), plain)
    torch.testing.assert_close(model(x), edited)
    assert not point.has_hooks() and model.hook_dict[name].has_hooks()
    if kind == "wrap":  # nothing left on the copy's modules once its last hook is gone
        assert torch_hook_count(twin) == 0 and torch_hook_count(model) > 0


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_copy_keeps_hook_order_context_levels_and_backward_hooks(kind):
    make, name = MODELS[kind]
    model = make()
    x = torch.randn(3, 8, requires_grad=True)
    order, grads = [], []
    model.add_perma_hook(name, lambda a, hook: order.append("perma"))
    model.add_hook(name, lambda g, hook: grads.append(g.clone()), dir="bwd")
    with model.hooks(fwd_hooks=[(name, lambda a, hook: order.append("context"))]):
        twin = copy.deepcopy(model)
        want = [(h.is_permanent, h.context_level) for h in model.hook_dict[name].list_hooks("fwd")]
    levels = [(h.is_permanent, h.context_level) for h in twin.hook_dict[name].list_hooks("fwd")]
    assert levels == want and [p for p, _ in levels] == [True, False]  # as the original had them
    assert not model.hook_dict[name].list_hooks("fwd", including_permanent=False)  # its context ended
    model.reset_hooks(including_permanent=True)  # the copy's hooks are its own
    twin(x).sum().backward()
    assert order == ["perma", "context"] and len(grads) == 1
    twin.reset_hooks()  # removes the non-permanent hooks, as on the original
    order.clear()
    twin(x)
    assert order == ["perma"]


def test_a_copy_without_hooks_has_none():
    model = wrapped_mlp()
    twin = copy.deepcopy(model)
    assert not any(hp.has_hooks() for hp in twin.hook_dict.values()) and torch_hook_count(twin) == 0
    x = torch.randn(2, 8)
    torch.testing.assert_close(twin(x), model(x))
