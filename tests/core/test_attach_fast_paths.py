"""The fast paths of attaching hooks (issue 29): hooks attached by exact name, hook_dict read once per
call, the PyTorch hook of a wrapped module registered and removed exactly with its hook point's
hooks. Behaviour, not timing: each test fails if a fast path changed what attaching does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hooked
from hooked.errors import UnknownHookError
from hooked.protocol import check_hook, check_hookable, check_hooks
from interventions.patching import patching_sweep
from tests.toys import MLPStack


class CountingMLP(MLPStack):
    """An MLPStack that counts how often its hook_dict is built."""

    reads = 0

    @property
    def hook_dict(self):
        type(self).reads += 1
        return super().hook_dict


def counting() -> CountingMLP:
    CountingMLP.reads = 0
    return CountingMLP()


def torch_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_check_hookable_builds_no_hook_dict_and_check_hooks_builds_one():
    model = counting()
    assert check_hookable(model) is model
    assert CountingMLP.reads == 0
    names = list(model.hook_dict)
    CountingMLP.reads = 0
    assert check_hooks(model, names) == names
    assert CountingMLP.reads == 1
    with pytest.raises(UnknownHookError, match="blocks.9"):
        check_hooks(model, [names[0], "blocks.9.hook_resid_pre"])
    with pytest.raises(UnknownHookError):
        check_hook(model, "nope")
    with pytest.raises(TypeError, match="hook_dict"):
        check_hookable(nn.Linear(2, 2))


def test_a_sweep_reads_hook_dict_once_per_forward_and_a_fixed_number_of_times_more():
    x, src = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    names = [f"blocks.{i}.hook_resid_pre" for i in range(3)]

    def metric(out):
        return out.sum((1, 2))

    reads, values = [], []
    for chunk, forwards in ((1, 12), (4, 3), (100, 1)):
        model = counting()
        values.append(patching_sweep(model, x, src, names, metric, positions=range(4), chunk=chunk))
        reads.append(CountingMLP.reads - forwards)  # each forward attaches its hooks: one read
    assert reads[0] == reads[1] == reads[2], reads  # and no other read per forward or per hook
    torch.testing.assert_close(values[0], values[2])
    torch.testing.assert_close(values[1], values[2])


def test_exact_names_attach_where_filters_and_lists_do():
    model = MLPStack()
    x = torch.randn(2, 8)
    names = list(model.hook_dict)
    seen: dict[str, list[str]] = {"exact": [], "list": [], "filter": []}

    def rec(kind):
        return lambda act, hook: seen[kind].append(hook.name)

    model.run_with_hooks(x, fwd_hooks=[(n, rec("exact")) for n in names])
    model.run_with_hooks(x, fwd_hooks=[(names, rec("list"))])
    model.run_with_hooks(x, fwd_hooks=[(lambda n: True, rec("filter"))])
    assert seen["exact"] == seen["list"] == seen["filter"] == names
    assert not model.list_hooks()
    # an unknown exact name among good ones: an error naming it, and nothing left attached
    with pytest.raises(UnknownHookError, match="blocks.0.hook_nope"):
        model.run_with_hooks(x, fwd_hooks=[(names[0], rec("exact")), ("blocks.0.hook_nope", rec("exact"))])
    assert not model.list_hooks()


def test_wrap_registers_each_pytorch_hook_once_and_removes_it_with_the_last_hook():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model = hooked.wrap(net, inputs=True)
    names = list(model.hook_dict)
    x = torch.randn(3, 4)
    assert torch_hooks(net) == 0
    with model.hooks(fwd_hooks=[(n, lambda a, hook: None) for n in names]):
        # one PyTorch hook per hook point, plus the pass counter's two on the root module
        assert torch_hooks(net) == len(names) + 2
        with model.hooks(fwd_hooks=[(n, lambda a, hook: None) for n in names]):  # a second hook each
            assert torch_hooks(net) == len(names) + 2
        assert torch_hooks(net) == len(names) + 2
        out, cache = model.run_with_cache(x)
    assert torch_hooks(net) == 0
    assert not model._live_points
    torch.testing.assert_close(out, net(x))
    assert set(cache.keys()) == set(names)
    torch.testing.assert_close(cache["0.hook_out"], net[0](x))
