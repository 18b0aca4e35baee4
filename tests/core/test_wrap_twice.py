"""``hooked.wrap`` of a module that is already wrapped (issue 22): hook points belong to the
modules, so every wrapper of a module gets the same point objects for the submodules both wrap. A
hook attached through one wrapper is listed, fires once and is removed through the other (before,
each wrapper had points of its own: one could edit the output while the other's ``list_hooks()``
said nothing was attached, and ``reset_hooks()`` on it left the edit in place)."""

from __future__ import annotations

import gc

import torch
from torch import nn

import hooked


def module():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))


def torch_hook_count(m):
    return sum(len(s._forward_hooks) + len(s._forward_pre_hooks) for s in m.modules())


def test_two_wrappers_of_one_module_share_its_hook_points():
    inner = module()
    first, second = hooked.wrap(inner), hooked.wrap(inner)
    x = torch.randn(2, 4)
    plain = inner(x)
    assert first.hook_dict["1.hook_out"] is second.hook_dict["1.hook_out"]
    calls = []

    def zero(act, hook):
        calls.append("zero")
        return torch.zeros_like(act)

    first.add_perma_hook("1.hook_out", zero)
    assert [h.fn for h in second.hook_dict["1.hook_out"].list_hooks()] == [zero]  # listed where it acts
    want = nn.functional.linear(torch.zeros(2, 4), inner[2].weight, inner[2].bias)
    torch.testing.assert_close(second(x), want)
    _, cache = second.run_with_cache(x, names_filter="1.hook_out")
    assert torch.equal(cache["1.hook_out"], torch.zeros(2, 4))  # the cache says what the forward used
    second.add_hook("1.hook_out", lambda a, hook: calls.append("second"))
    calls.clear()
    first(x)
    assert calls == ["zero", "second"]  # each hook once, in the order attached
    second.reset_hooks(including_permanent=True)  # removes what first attached too: one set of hooks
    assert not first.hook_dict["1.hook_out"].has_hooks()
    torch.testing.assert_close(first(x), plain)
    assert torch_hook_count(inner) == 0


def test_a_wrapper_of_a_part_shares_the_points_of_that_part():
    outer = module()
    whole, part = hooked.wrap(outer), hooked.wrap(outer[1])
    assert part.hook_dict["hook_out"] is whole.hook_dict["1.hook_out"]
    whole.add_perma_hook("1.hook_out", lambda a, hook: a * 0)
    assert part.hook_dict["hook_out"].has_hooks()
    assert torch.equal(part(torch.randn(2, 4)), torch.zeros(2, 4))
    part.reset_hooks(including_permanent=True)
    assert not whole.hook_dict["1.hook_out"].has_hooks()


def test_wrappers_with_other_options_share_what_both_have():
    inner = module()
    with_inputs, plain = hooked.wrap(inner, inputs=True), hooked.wrap(inner, names=["0"])
    assert "0.hook_in" in with_inputs.hook_dict and "0.hook_in" not in plain.hook_dict
    assert set(plain.hook_dict) == {"0.hook_out"}
    assert plain.hook_dict["0.hook_out"] is with_inputs.hook_dict["0.hook_out"]


def test_a_live_point_counts_steps_for_a_later_wrapper_and_unwrap_leaves_the_module_bare():
    inner = module()
    first = hooked.wrap(inner)
    steps = []
    first.add_perma_hook("1.hook_out", lambda a, hook: steps.append(hook.step))
    second = hooked.wrap(inner)  # made while first's point has a hook
    x = torch.randn(2, 4)
    second(x)
    second(x)
    assert steps == [0, 0]  # one pass per forward of the later wrapper too
    assert second.unwrap() is inner
    assert not first.hook_dict["1.hook_out"].has_hooks() and torch_hook_count(inner) == 0
    steps.clear()
    first(x)
    assert steps == []


def test_points_are_made_afresh_once_no_wrapper_holds_them():
    inner = module()
    first = hooked.wrap(inner)
    first.add_hook("1.hook_out", lambda a, hook: a + 1)
    first.reset_hooks()
    del first
    gc.collect()
    again = hooked.wrap(inner)
    assert not again.hook_dict["1.hook_out"].has_hooks()
    again.add_perma_hook("1.hook_out", lambda a, hook: a * 0)
    torch.testing.assert_close(again(torch.randn(1, 4)), inner[2].bias.detach()[None])
