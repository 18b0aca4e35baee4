"""``hooked.wrap``: a replacing hook's value is put back into a new container of the module's own type;
the module's containers (and the caller's inputs) are never edited in place."""

from __future__ import annotations

import collections
import types
from typing import NamedTuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import hooked
from hooked.errors import HookReturnError


class Pair(NamedTuple):
    first: torch.Tensor
    second: torch.Tensor


def _containers():
    """name -> fn(a, b) building the module's output around tensors a (hooked) and b."""
    return {
        "tensor": lambda a, b: a,
        "tuple": lambda a, b: (a, b),
        "list": lambda a, b: [a, b],
        "namedtuple": lambda a, b: Pair(a, b),
        "dict": lambda a, b: {"a": a, "b": b},
        "ordered": lambda a, b: collections.OrderedDict(a=a, b=b),
        "int first": lambda a, b: (7, a, b),
        "return_types.max": lambda a, b: torch.max(torch.stack([a, a - 1]), dim=0),
    }


class Owner(nn.Module):
    """Returns the same container object every call (one it keeps), built once from fixed tensors."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.a, self.b = torch.arange(4.0), torch.full((2,), 5.0)
        self.store = _containers()[kind](self.a, self.b)

    def forward(self, x):
        return self.store


class Net(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.o = Owner(kind)

    def forward(self, x):
        return self.o(x)


def _snapshot(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_snapshot(v) for v in obj]
    return obj


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


REPLIES = st.sampled_from(["none", "same", "scaled", "wrong shape", "wrong dtype", "not a tensor"])


@settings(max_examples=120, deadline=None)
@given(kind=st.sampled_from(sorted(_containers())), reply=REPLIES, scale=st.floats(-3, 3, allow_nan=False))
def test_a_replacing_hook_never_edits_the_modules_container(kind, reply, scale):
    net = Net(kind)
    model = hooked.wrap(net)
    owned = net.o.store
    before = _snapshot(owned)
    plain = net(None)
    seen = {}

    def hook(act, hook):
        seen["act"] = act
        if reply == "none":
            return None
        if reply == "same":
            return act
        if reply == "scaled":
            return act * scale
        if reply == "wrong shape":
            return act[:1]
        if reply == "wrong dtype":
            return act.long()
        return 3

    try:
        out = model.run_with_hooks(None, fwd_hooks=[("o.hook_out", hook)])
    except HookReturnError as e:
        assert reply in ("wrong shape", "wrong dtype", "not a tensor")
        assert "o.hook_out" in str(e)
        out = None
    else:
        assert reply in ("none", "same", "scaled")
    assert net.o.store is owned and _equal(_snapshot(owned), before)  # the module's container as it was
    if out is None:
        return
    if reply in ("none", "same"):
        assert out is owned  # nothing replaced: the module's output passed on untouched
        return
    assert type(out) is type(owned)
    hooked_value = seen["act"] * scale
    if kind == "tensor":
        assert torch.equal(out, hooked_value)
    elif kind in ("dict", "ordered"):
        assert list(out) == list(owned) and torch.equal(out["a"], hooked_value) and out["b"] is owned["b"]
    elif kind == "return_types.max":
        assert torch.equal(out.values, hooked_value) and out.indices is owned.indices
    else:
        slot = 1 if kind == "int first" else 0
        assert torch.equal(out[slot], hooked_value)
        assert all(out[i] is owned[i] for i in range(len(owned)) if i != slot)
    again = model(None)  # a plain run afterwards: the module's output as before
    assert _equal(_snapshot(again), _snapshot(plain))


def test_torch_max_keeps_its_fields():
    class Max(nn.Module):
        def forward(self, x):
            return torch.max(x, dim=1)

    class Use(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = Max()

        def forward(self, x):
            r = self.m(x)
            return r.values * 10 + r.indices

    x = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    model = hooked.wrap(Use())
    out = model.run_with_hooks(x, fwd_hooks=[("m.hook_out", lambda a, hook: a + 1)])
    assert torch.equal(out, torch.tensor([41.0, 62.0]))


def test_an_immutable_mapping_output_is_a_clear_error():
    class Frozen(nn.Module):
        def forward(self, x):
            return types.MappingProxyType({"a": x})

    class Use(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = Frozen()

        def forward(self, x):
            return self.f(x)["a"]

    model = hooked.wrap(Use())
    x = torch.ones(2)
    assert torch.equal(model.run_with_hooks(x, fwd_hooks=[("f.hook_out", lambda a, hook: None)]), x)
    with pytest.raises(HookReturnError, match="mappingproxy"):
        model.run_with_hooks(x, fwd_hooks=[("f.hook_out", lambda a, hook: a * 2)])
    assert torch.equal(model(x), x)  # the hook was removed


def test_model_output_is_copied_not_edited():
    transformers = pytest.importorskip("transformers")
    kept = transformers.modeling_outputs.CausalLMOutput(logits=torch.ones(2, 3))

    class Head(nn.Module):
        def forward(self, x):
            return kept

    class Use(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = Head()

        def forward(self, x):
            return self.h(x).logits.sum()

    model = hooked.wrap(Use())
    out = model.run_with_hooks(None, fwd_hooks=[("h.hook_out", lambda a, hook: a * 0)])
    assert out.item() == 0 and kept.logits.sum().item() == 6 and kept["logits"].sum().item() == 6
