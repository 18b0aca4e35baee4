"""hooked.wrap: hook points on any nn.Module, by module path, removable, free when unused."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import hooked
from hooked.errors import HookReturnError
from interventions.patching import patching_sweep

Pair = namedtuple("Pair", "value aux")


class Net(nn.Module):
    """Outputs of several kinds: tensor, tuple, dict, namedtuple; a module used twice."""

    def __init__(self, d: int = 5):
        super().__init__()
        self.inp = nn.Linear(d, d)
        self.tup = TupleOut(d)
        self.dic = DictOut(d)
        self.nt = NamedOut(d)
        self.shared = nn.Linear(d, d)

    def forward(self, x, *, scale: float = 1.0):
        h = self.inp(x)
        h, _ = self.tup(h)
        h = self.dic(h)["y"]
        h = self.nt(h).value
        return self.shared(self.shared(h)) * scale


class TupleOut(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return torch.tanh(self.lin(x)), "aux"


class DictOut(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return {"note": None, "y": self.lin(x).relu(), "z": x}


class NamedOut(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return Pair(self.lin(x), 3)


def torch_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


def test_names_by_module_path_and_cache_values(net):
    model = hooked.wrap(net, inputs=True)
    assert isinstance(model, hooked.HookedModule) and isinstance(model, hooked.Hookable)
    assert {
        "hook_out",
        "hook_in",
        "inp.hook_out",
        "tup.lin.hook_in",
        "dic.hook_out",
        "nt.hook_out",
        "shared.hook_out",
    } <= set(model.hook_dict)
    x = torch.randn(3, 5)
    out, cache = model.run_with_cache(x)
    assert torch.equal(out, net(x))
    h = net.inp(x)
    assert torch.equal(cache["inp.hook_out"], h)
    assert torch.equal(cache["tup.hook_in"], h)
    t = torch.tanh(net.tup.lin(h))
    assert torch.equal(cache["tup.hook_out"], t)  # first tensor of the tuple
    assert torch.equal(cache["dic.hook_out"], net.dic.lin(t).relu())  # first tensor value of the dict
    # the shared module ran twice: stacked along the time axis, in call order
    assert cache["shared.hook_out"].shape == (3, 2, 5)
    assert torch.equal(cache["shared.hook_out"][:, 1], out)
    assert torch_hooks(net) == 0


def test_identity_hooks_everywhere_leave_output_bit_identical(net):
    model = hooked.wrap(net, inputs=True)
    x = torch.randn(4, 5)
    want = net(x)
    for fn in (lambda a, hook: None, lambda a, hook: a, lambda a, hook: a.clone()):
        got = model.run_with_hooks(x, fwd_hooks=[(lambda name: True, fn)])
        assert torch.equal(got, want)
    assert torch_hooks(net) == 0


def test_replacements_are_put_back_in_each_output_kind(net):
    model = hooked.wrap(net)
    x = torch.randn(2, 5)

    def run_manual(edit_at):
        h = net.inp(x)
        h = net.tup(h)[0]
        h = edit_at("tup", h)
        h = net.dic(h)["y"]
        h = edit_at("dic", h)
        h = net.nt(h).value
        h = edit_at("nt", h)
        return net.shared(net.shared(h))

    for name in ("tup", "dic", "nt"):
        got = model.run_with_hooks(x, fwd_hooks=[(f"{name}.hook_out", lambda a, hook: a * 2)])
        want = run_manual(lambda n, h, name=name: h * 2 if n == name else h)
        assert torch.allclose(got, want, atol=1e-6), name
    # the second call of a shared module only, via hook.step
    got = model.run_with_hooks(x, fwd_hooks=[("shared.hook_out", hooked.at_step(1, lambda a, hook: -a))])
    assert torch.allclose(got, -net(x), atol=1e-6)


def test_input_hooks_replace_positional_and_keyword_inputs():
    class KwOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, *, x):
            return self.lin(x)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = KwOnly()

        def forward(self, x):
            return self.inner(x=x)

    net = Outer()
    model = hooked.wrap(net, inputs=True)
    x = torch.randn(2, 3)
    got = model.run_with_hooks(x, fwd_hooks=[("inner.hook_in", lambda a, hook: torch.zeros_like(a))])
    assert torch.allclose(got, net.inner.lin.bias.expand(2, 3))
    got = model.run_with_hooks(x, fwd_hooks=[("inner.lin.hook_in", lambda a, hook: a + 1)])
    assert torch.allclose(got, net.inner.lin(x + 1))


def test_no_weights_copied_and_unwrap_restores(net):
    sd_before = {k: v.clone() for k, v in net.state_dict().items()}
    model = hooked.wrap(net)
    assert all(a is b for a, b in zip(model.parameters(), net.parameters()))
    assert model.module is net and model.inp is net.inp  # attributes fall through to the module
    handle = model.add_hook("inp.hook_out", lambda a, hook: a * 0, is_permanent=True)
    # the hook point's forward hook, and the wrapped module's pass pre-hook and hook (hook.step)
    assert len(net.inp._forward_hooks) == 1 and torch_hooks(net) == 3 and len(handle) == 1
    assert hooked.unwrap(model) is net
    assert torch_hooks(net) == 0 and model.hook_dict == {}
    assert set(net.state_dict()) == set(sd_before)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in sd_before.items())


def test_inactive_wrap_installs_nothing(net):
    """Cheap when inactive: with no hook attached, the module's own forward runs untouched."""
    model = hooked.wrap(net, inputs=True)
    assert torch_hooks(net) == 0
    with model.hooks(fwd_hooks=[("dic.lin.hook_out", lambda a, hook: None)]):
        assert len(net.dic.lin._forward_hooks) == 1 and torch_hooks(net) == 3  # + the pass hooks
    assert torch_hooks(net) == 0


def test_names_filter_and_errors(net):
    model = hooked.wrap(net, names=["tup", "*.lin"])
    assert set(model.hook_dict) == {"tup.hook_out", "tup.lin.hook_out", "dic.lin.hook_out", "nt.lin.hook_out"}
    with pytest.raises(ValueError, match="no submodule of Net matches names='tupp'.*did you mean: tup"):
        hooked.wrap(net, names="tupp")
    with pytest.raises(TypeError, match="nn.Module"):
        hooked.wrap(lambda x: x)
    with pytest.raises(TypeError, match="already wrapped"):
        hooked.wrap(model)
    with pytest.raises(HookReturnError, match="tup.hook_out"):
        model.run_with_hooks(torch.randn(2, 5), fwd_hooks=[("tup.hook_out", lambda a, hook: a[:1])])
    assert torch_hooks(net) == 0  # removed although the forward raised
    with pytest.raises(KeyError, match="did you mean"):
        model.run_with_cache(torch.randn(2, 5), names_filter="tup.hook_outt")


def test_gradients_through_wrapped_hook_points(net):
    model = hooked.wrap(net, output=lambda out: out.pow(2).sum())  # a scalar loss out
    x = torch.randn(3, 5)
    _, cache = model.run_with_cache(x, names_filter="nt.hook_out", incl_bwd=True)
    # reference: autograd of the same loss w.r.t. the nt output, on a manual forward
    h = net.dic(net.tup(net.inp(x))[0])["y"]
    v = net.nt(h).value.detach().requires_grad_(True)
    net.shared(net.shared(v)).pow(2).sum().backward()
    assert torch.allclose(cache["nt.hook_out_grad"], v.grad, atol=1e-6)
    assert torch_hooks(net) == 0


@settings(max_examples=5, deadline=None)
@given(batch=st.integers(1, 4), seq=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_tiny_llama_wrap_is_exact_and_residual_stream_chains(batch, seq, seed):
    from hooked.lm import residual_hooks
    from hooked.models.lm import tiny_llama

    model, _ = tiny_llama(seed=seed % 3)
    tokens = torch.randint(0, 64, (batch, seq), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        raw = model.module(tokens).logits
        logits, cache = model.run_with_cache(tokens)
    assert torch.equal(logits, raw)
    names = residual_hooks(model)
    assert names == ["model.layers.0.hook_in", "model.layers.1.hook_in", "model.layers.1.hook_out"]
    assert torch.equal(cache["model.layers.0.hook_out"], cache["model.layers.1.hook_in"])
    assert torch.equal(cache["model.embed_tokens.hook_out"], cache["model.layers.0.hook_in"])


def test_patching_sweep_runs_on_a_wrapped_transformers_model():
    from hooked.lm import residual_hooks
    from hooked.models.lm import tiny_llama

    model, tokens = tiny_llama(seq=5, batch=2)
    source = torch.randint(0, 64, tokens.shape, generator=torch.Generator().manual_seed(9))

    def metric(out):
        return out[:, -1, 3] - out[:, -1, 7]

    hooks = residual_hooks(model)
    batched = patching_sweep(model, tokens, source, hooks, metric, positions=range(5), chunk=4)
    serial = patching_sweep(model, tokens, source, hooks, metric, positions=range(5), batched=False)
    assert torch.allclose(batched, serial, atol=1e-5)
    # the last residual stream at the last position carries everything the logits see
    with torch.no_grad():
        assert torch.allclose(batched[-1, -1], metric(model(source)).mean(), atol=1e-5)
        assert torch.allclose(batched[-1, :-1], metric(model(tokens)).mean().expand(4), atol=1e-5)
