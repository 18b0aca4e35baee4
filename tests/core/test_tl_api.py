"""TransformerLens's hook API, as a TL user's code calls it, on a HookedModule, on ``hooked.wrap``
of a plain module and, where it applies, against TransformerLens 4.3's own objects.

Each behaviour is observed on our models and on a twin built from TransformerLens's
``HookedRootModule`` (same structure, names and weights; TL's code is the reference), and the
observations must agree; the deliberate differences (docs/guide/transformerlens.md) are
checked as differences. ``pos_slice``, cache order and backward hooks are also compared with a
``TransformerBridge`` booted around a tiny random Llama, against ``hooked.wrap`` of its twin.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import hooked
from hooked import UnknownHookError

tl = pytest.importorskip("transformer_lens")
from transformer_lens import HookedRootModule  # noqa: E402
from transformer_lens.hook_points import HookPoint as TLHookPoint  # noqa: E402
from transformer_lens.utilities import Slice  # noqa: E402

D, POS = 4, 5


# ---------------------------------------------------------------------------- twin models
def _block(hp_cls, d):
    block = nn.Module()
    block.lin = nn.Linear(d, d)
    block.hook_resid_pre, block.hook_mlp_out = hp_cls(), hp_cls()
    return block


def _forward(model, x):
    for block in model.blocks:
        x = block.hook_resid_pre(x)
        x = x + block.hook_mlp_out(torch.tanh(block.lin(x)))
    out = model.hook_out(x)
    return out.sum() if model.scalar else out


class Ours(hooked.HookedModule):
    """hook_out is defined before the blocks: module order is not execution order."""

    def __init__(self, scalar=False):
        super().__init__()
        self.hook_out = hooked.HookPoint()
        self.blocks = nn.ModuleList(_block(hooked.HookPoint, D) for _ in range(2))
        self.scalar = scalar

    def forward(self, x):
        return _forward(self, x)


class TLTwin(HookedRootModule):
    def __init__(self, scalar=False):
        super().__init__()
        self.hook_out = TLHookPoint()
        self.blocks = nn.ModuleList(_block(TLHookPoint, D) for _ in range(2))
        self.scalar = scalar
        self.setup()

    def forward(self, x):
        return _forward(self, x)


class Plain(nn.Module):
    """The same network without hook points, for hooked.wrap."""

    def __init__(self, scalar=False):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"lin": nn.Linear(D, D)}) for _ in range(2))
        self.scalar = scalar

    def forward(self, x):
        for block in self.blocks:
            x = x + torch.tanh(block["lin"](x))
        return x.sum() if self.scalar else x


# three hook points of each subject, in the order they run: a, b, c
NAMES = {
    "hooked": ["blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out", "hook_out"],
    "tl": ["blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out", "hook_out"],
    "wrap": ["blocks.0.lin.hook_out", "blocks.1.lin.hook_out", "hook_out"],
}


def subject(kind: str, scalar: bool = False):
    torch.manual_seed(0)
    if kind == "hooked":
        model = Ours(scalar)
    elif kind == "tl":
        model = TLTwin(scalar)
    else:
        model = hooked.wrap(Plain(scalar))
    torch.manual_seed(1)
    for p in model.parameters():
        p.data = torch.randn_like(p) * 0.5
    return model, NAMES[kind]


def x_input(requires_grad=False):
    return torch.randn(2, POS, D, generator=torch.Generator().manual_seed(2), requires_grad=requires_grad)


FIRED: list[str] = []


def f1(act, hook):
    FIRED.append("f1")


def f2(act, hook):
    FIRED.append("f2")


def g(grad, hook):
    FIRED.append("g")


LABELS = {id(f1): "f1", id(f2): "f2", id(g): "g"}


def describe(listing, names):
    """A list_hooks result with names as positions and functions as labels."""
    return {
        "abc"[names.index(n)]: [(h.is_permanent, h.context_level, LABELS[id(h.user_hook)]) for h in hs]
        for n, hs in listing.items()
    }


KINDS = ["hooked", "wrap"]


# ---------------------------------------------------------------------------- list_hooks, perma hooks
def list_hooks_observations(kind):
    model, (a, b, c) = subject(kind)
    model.add_hook(a, f1)
    model.add_perma_hook(a, f2)
    model.add_hook(b, g, dir="bwd")
    return [
        describe(model.list_hooks(), (a, b, c)),
        describe(model.list_hooks(a, including_permanent=False), (a, b, c)),
        describe(model.list_hooks([b], dir="bwd"), (a, b, c)),
        describe(model.list_hooks([a, b], dir="fwd"), (a, b, c)),
        describe(model.list_hooks(lambda n: n == c), (a, b, c)),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_list_hooks_agrees_with_transformer_lens(kind):
    want = list_hooks_observations("tl")
    assert want[0] == {"a": [(False, None, "f1"), (True, None, "f2")], "b": [(False, None, "g")]}
    assert list_hooks_observations(kind) == want


@pytest.mark.parametrize("kind", KINDS)
def test_list_hooks_refuses_unknown_names(kind):
    """A deliberate difference: TL returns {} for a misspelt name, hooked raises with suggestions."""
    model, (a, _, _) = subject(kind)
    assert subject("tl")[0].list_hooks(a + "x") == {}
    with pytest.raises(UnknownHookError, match="did you mean"):
        model.list_hooks(a + "x")


def perma_observations(kind):
    model, (a, b, c) = subject(kind)
    fired = []
    model.add_perma_hook(a, lambda act, hook: fired.append("perm"))
    model.add_hook(a, lambda act, hook: fired.append("temp"))
    model.add_hook(c, lambda act, hook: fired.append("bwd"), dir="bwd")
    x = x_input(requires_grad=True)
    out = []
    model(x).sum().backward()
    out.append(list(fired))
    model.remove_all_hook_fns(direction="fwd")  # keeps permanent and backward hooks
    fired.clear()
    model(x).sum().backward()
    out.append(list(fired))
    model.reset_hooks()
    fired.clear()
    model(x).sum().backward()
    out.append(list(fired))
    model.reset_hooks(including_permanent=True)
    fired.clear()
    model(x).sum().backward()
    out.append(list(fired))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_permanent_hooks_and_removal_agree_with_transformer_lens(kind):
    want = perma_observations("tl")
    assert want == [["perm", "temp", "bwd"], ["perm", "bwd"], ["perm"], []]
    assert perma_observations(kind) == want


# ---------------------------------------------------------------------------- HookPoint-level API
def hook_point_observations(kind):
    model, (a, b, c) = subject(kind)
    hp = model.hook_dict[a]
    hp.add_hook(f1)
    hp.add_hook(f2, is_permanent=True)
    hp.add_hook(g, dir="bwd")
    out = [
        [(h.is_permanent, h.context_level, LABELS[id(h.user_hook)]) for h in hp.fwd_hooks],
        [hp.has_hooks(), hp.has_hooks("bwd"), hp.has_hooks(including_permanent=False)],
    ]
    hp.remove_hooks()  # TL's default: forward, non-permanent
    out.append([LABELS[id(h.user_hook)] for h in hp.fwd_hooks + hp.bwd_hooks])
    hp.fwd_hooks[0].hook.remove()  # a handle's removable handle (TL leaves the handle listed)
    FIRED.clear()
    model(x_input(requires_grad=True)).sum().backward()
    out.append(list(FIRED))
    hp.remove_hooks("both", including_permanent=True)
    out.append(hp.has_hooks())
    hp.ctx["seen"] = 1
    hp.clear_context()
    out.append(hp.ctx)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_hook_point_methods_agree_with_transformer_lens(kind):
    want = hook_point_observations("tl")
    assert want[2] == ["f2", "g"] and want[3] == ["g"]  # f2 no longer fires
    assert hook_point_observations(kind) == want


@pytest.mark.parametrize("kind", [*KINDS, "tl"])
def test_hook_layer(kind):
    model, (a, b, c) = subject(kind)
    layers = []
    model.add_hook(b, lambda act, hook: layers.append(hook.layer()))
    model.add_hook(a, lambda act, hook: layers.append(hook.layer()))
    model(x_input())
    assert layers == [0, 1]
    # the block index of a module path too (TL: int(name.split(".")[1]))
    assert subject("wrap")[0].hook_dict["blocks.1.lin.hook_out"].layer() == 1
    with pytest.raises((ValueError, IndexError)):
        model.hook_dict[c].layer()  # "hook_out" has no layer: TL IndexError, hooked ValueError


def prepend_observations(kind):
    model, (a, _, _) = subject(kind)
    order = []
    model.add_hook(a, lambda act, hook: order.append(1))
    model.add_hook(a, lambda act, hook: order.append(2))
    model.add_hook(a, lambda act, hook: order.append(0), prepend=True)
    model(x_input())
    return order


@pytest.mark.parametrize("kind", KINDS)
def test_prepend_agrees_with_transformer_lens(kind):
    assert prepend_observations(kind) == prepend_observations("tl") == [0, 1, 2]


# ---------------------------------------------------------------------------- hooks() contexts
def context_observations(kind):
    model, (a, b, c) = subject(kind)
    hp_a, hp_b = model.hook_dict[a], model.hook_dict[b]
    out = []
    with model.hooks(fwd_hooks=[(a, f1)]):
        with model.hooks(fwd_hooks=[(b, f2)]):
            levels = (hp_a.fwd_hooks[0].context_level, hp_b.fwd_hooks[0].context_level)
            out.append((model.context_level, *levels))
            model.add_hook(b, f1)  # outside the contexts' bookkeeping: level None, survives
        out.append((model.context_level, len(hp_a.fwd_hooks), [h.context_level for h in hp_b.fwd_hooks]))
    out.append((model.context_level, len(hp_a.fwd_hooks), len(hp_b.fwd_hooks)))
    model.reset_hooks()
    for hp in (hp_a, hp_b):
        hp.ctx["x"] = 1
    with model.hooks(fwd_hooks=[(a, f1)], clear_contexts=True):
        out.append((dict(hp_a.ctx), dict(hp_b.ctx)))
    out.append((dict(hp_a.ctx), dict(hp_b.ctx)))  # TL's HookedRootModule: every hook point's ctx
    hp_a.ctx["x"] = hp_b.ctx["x"] = 2
    with model.hooks(fwd_hooks=[(a, f1)], reset_hooks_end=False, clear_contexts=True):
        pass
    out.append((dict(hp_a.ctx), dict(hp_b.ctx), len(hp_a.fwd_hooks)))  # nothing reset, nothing cleared
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_hooks_contexts_agree_with_transformer_lens(kind):
    want = context_observations("tl")
    assert want[0] == (2, 1, 2) and want[4] == ({}, {})
    assert context_observations(kind) == want


def test_hooks_contexts_nest_by_handles():
    """A deliberate difference: TL's hooks() removes every hook at its level on exit, also hooks
    another piece of code attached at that level; hooked removes exactly the hooks it added."""
    for kind in ("hooked", "tl"):
        model, (a, _, _) = subject(kind)
        with model.hooks(fwd_hooks=[(a, f1)]):
            model.hook_dict[a].add_hook(f2, level=model.context_level)
        left = [LABELS[id(h.user_hook)] for h in model.hook_dict[a].fwd_hooks]
        assert left == ([] if kind == "tl" else ["f2"])


# ---------------------------------------------------------------------------- backward hooks
@pytest.mark.parametrize("kind", [*KINDS, "tl"])
def test_backward_hook_may_return_a_one_tuple(kind):
    model, (_, _, c) = subject(kind)
    x = x_input(requires_grad=True)
    model(x).sum().backward()
    base = x.grad.clone()
    x.grad = None
    with model.hooks(bwd_hooks=[(c, lambda grad, hook: (grad * 3,))]):
        out = model(x)
    out.sum().backward()  # backward hooks stay bound to the forward they were live for
    assert torch.allclose(x.grad, 3 * base, atol=1e-5)


# ---------------------------------------------------------------------------- the cache
def cache_order(kind):
    model, names = subject(kind, scalar=True)
    _, cache = model.run_with_cache(x_input(requires_grad=True), names_filter=names[::-1], incl_bwd=True)
    return ["abc"[names.index(k.removesuffix("_grad"))] + ("'" if k.endswith("_grad") else "") for k in cache]


@pytest.mark.parametrize("kind", KINDS)
def test_cache_keys_in_execution_order_as_transformer_lens(kind):
    want = cache_order("tl")
    assert want == ["a", "b", "c", "c'", "b'", "a'"]
    assert cache_order(kind) == want
    model, _ = subject("hooked")
    _, ours = model.run_with_cache(x_input())
    _, theirs = subject("tl")[0].run_with_cache(x_input())
    assert list(ours) == list(theirs) != list(model.hook_dict)  # hook_dict: module order


SPECS = [-1, 0, 3, (1, 4), (2,), (0, 5, 2), slice(1, 3), [0, 2], [4, 0], torch.tensor([1, 3])]
SPECS += [Slice(-1), Slice((1, 3))]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_pos_slice_agrees_with_transformer_lens(spec):
    """[batch, pos, d] activations: TL's HookedRootModule and its bridge use the same axis here."""
    ours, _ = subject("hooked")
    theirs, _ = subject("tl")
    _, full = ours.run_with_cache(x_input())
    _, got = ours.run_with_cache(x_input(), pos_slice=spec)
    _, want = theirs.run_with_cache(x_input(), pos_slice=spec)
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape
        assert torch.allclose(got[name], want[name], atol=1e-6)
    index = Slice.unwrap(spec).slice  # the independent computation: index the full cache
    assert torch.equal(got["hook_out"], full["hook_out"][:, index])


@pytest.mark.parametrize("kind", KINDS)
def test_pos_slice_on_hooked_and_wrapped_models(kind):
    model, names = subject(kind)
    _, full = model.run_with_cache(x_input())
    _, last = model.run_with_cache(x_input(), pos_slice=-1)
    _, dropped = model.run_with_cache(x_input(), pos_slice=Slice(-1))  # a Slice in int mode drops
    for n in names:
        assert torch.equal(last[n], full[n][:, -1:]) and torch.equal(dropped[n], full[n][:, -1])
    with pytest.raises(IndexError, match="pos_slice=7"):
        model.run_with_cache(x_input(), pos_slice=7)
    with pytest.raises(TypeError, match="pos_slice"):
        model.run_with_cache(x_input(), pos_slice="last")
    assert not any(hp.has_hooks() for hp in model.hook_dict.values())


def test_pos_slice_axis_of_attention_patterns_steps_and_pos_dim():
    from benchmarks.gpt import GPTConfig, pair

    _, gpt = pair(GPTConfig.tiny())
    tokens = torch.randint(0, 512, (2, 6), generator=torch.Generator().manual_seed(0))
    _, full = gpt.run_with_cache(tokens)
    # this model's q, k, v, z are [batch, head, pos, d_head]: axis 1 holds 4 heads, not positions
    with pytest.raises(IndexError, match="out of range for 'blocks.0.attn.hook_q'"):
        gpt.run_with_cache(tokens, pos_slice=[1, 4])
    for name, hp in gpt.hook_dict.items():
        if name.endswith(("hook_q", "hook_k", "hook_v", "hook_z")):
            hp.pos_dim = 2  # TransformerLens's HookPoint.pos_dim
    _, cut = gpt.run_with_cache(tokens, pos_slice=[1, 4])
    pattern = "blocks.0.attn.hook_pattern"  # [batch, head, query, key]: the query axis (-2)
    assert torch.equal(cut[pattern], full[pattern][:, :, [1, 4]])
    assert torch.equal(cut["blocks.1.hook_resid_post"], full["blocks.1.hook_resid_post"][:, [1, 4]])
    assert torch.equal(cut["blocks.0.attn.hook_q"], full["blocks.0.attn.hook_q"][:, :, [1, 4]])

    from tests.toys import TinyRNN

    rnn = TinyRNN()  # a recurrent hook point: pos_slice picks steps (its time axis)
    x = torch.randn(2, 6, 3)
    _, full = rnn.run_with_cache(x)
    _, cut = rnn.run_with_cache(x, pos_slice=-1)
    assert torch.equal(cut["hook_h"], full["hook_h"][:, -1:]) and cut.steps("hook_h")[0].shape == (2, 4)
    _, cut = rnn.run_with_cache(x, pos_slice=(1, 5, 2))
    assert torch.equal(cut["hook_h"], full["hook_h"][:, 1:5:2])
    _, cut = rnn.run_with_cache(x, pos_slice=Slice(2))
    assert torch.equal(cut["hook_h"], full["hook_h"][:, 2]) and not cut.is_stacked("hook_h")


# ---------------------------------------------------------------------------- PyTorch's hooks
def torch_hook_observations(kind):
    model, (a, _, _) = subject(kind)
    hp = model.hook_dict[a]
    fired = []
    handle = hp.register_forward_hook(lambda m, args, out: fired.append(1) or out * 0)
    y = model(x_input())
    out = [len(fired), len(hp.fwd_hooks)]
    model.reset_hooks()
    model(x_input())
    out.append(len(fired))  # reset_hooks leaves PyTorch's own hooks alone
    handle.remove()
    z = model(x_input())
    out.append(len(fired))
    return out, y, z


@pytest.mark.parametrize("kind", KINDS)
def test_register_forward_hook_on_a_hook_point_fires_as_on_transformer_lens(kind):
    got, y, z = torch_hook_observations(kind)
    want, ty, tz = torch_hook_observations("tl")
    assert got == want == [1, 0, 2, 2]
    assert not torch.allclose(y, z)  # the hook's replacement took effect
    if kind == "hooked":  # the same hook point in the same network as TL's twin
        assert torch.allclose(y, ty) and torch.allclose(z, tz)


def test_pytorch_hooks_on_a_hook_point_and_recurrent_layers():
    from tests.toys import TinyRNN

    rnn = TinyRNN()
    x = torch.randn(2, 4, 3)
    pre = rnn.hook_h.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    assert torch.equal(rnn(x), rnn.manual(x, lambda t, h: h * 0))
    assert rnn.hook_h.active_steps() is None  # a PyTorch hook runs at every step
    pre.remove()
    assert torch.allclose(rnn(x), rnn.manual(x)) and not rnn.hook_h._live
    grads = []
    rnn.hook_h.register_full_backward_hook(lambda m, gin, gout: grads.append(gout[0].shape))
    rnn(x.requires_grad_()).sum().backward()
    assert grads == [(2, 4)] * 4


# ---------------------------------------------------------------------------- what a user sees
def test_a_live_hook_point_is_a_plain_hook_point(mlp):
    hp = mlp.hook_dict["hook_out"]
    with mlp.hooks(fwd_hooks=[("hook_out", f1)]):
        assert type(hp) is hooked.HookPoint and type(hp).__name__ == "HookPoint"
        with pytest.raises(AttributeError, match="'HookPoint' object has no attribute 'nope'"):
            hp.nope  # noqa: B018
    assert type(hp) is hooked.HookPoint


def test_a_wrapped_model_inside_a_hooked_module_is_hookable_through_it():
    class Outer(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.pre = nn.Linear(D, D)
            self.inner = hooked.wrap(Plain())
            self.hook_out = hooked.HookPoint()

        def forward(self, x):
            return self.hook_out(self.inner(self.pre(x)))

    torch.manual_seed(0)
    outer = Outer()
    x = x_input()
    assert "inner.blocks.1.lin.hook_out" in outer.hook_dict and "inner.hook_out" in outer.hook_dict
    inner_out = outer.inner(outer.pre(x))
    out, cache = outer.run_with_cache(x)
    assert torch.equal(cache["inner.hook_out"], inner_out) and torch.equal(out, inner_out)
    names = []
    zeroed = outer.run_with_hooks(
        x, fwd_hooks=[("inner.hook_out", lambda a, hook: names.append(hook.name) or a * 0)]
    )
    assert torch.equal(zeroed, torch.zeros_like(out)) and names == ["inner.hook_out"]
    assert outer.inner.hook_dict["hook_out"].name == "hook_out"  # the inner model's own names still work


# ---------------------------------------------------------------------------- the bridge
needs_bridge = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="needs transformers for a TransformerBridge"
)


@pytest.fixture(scope="module")
def bridge_and_twin():
    """A TransformerBridge booted around a tiny random Llama, and hooked.wrap of its twin."""
    from hooked import lm
    from hooked.models.lm import tiny_llama_hf
    from tests.lm.tiny_models import tiny_tokenizer, tokenizer_folder

    tokenizer = tiny_tokenizer(tokenizer_folder())  # 64 words: the tokens below are all in it
    bridge = lm.bridge(tiny_llama_hf(layers=2, d_model=32), tokenizer, "tiny-llama")
    wrapped = lm.wrap_lm(tiny_llama_hf(layers=2, d_model=32))
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bridge(tokens), wrapped(tokens), atol=1e-5)
    return bridge, wrapped, tokens


@needs_bridge
@pytest.mark.parametrize("spec", [-1, 2, (1, 4), slice(0, 2), [0, 3, 5], Slice(-1)], ids=repr)
def test_pos_slice_and_cache_order_agree_with_the_bridge(bridge_and_twin, spec):
    bridge, wrapped, tokens = bridge_and_twin
    hb, hw = lm_residual(bridge), lm_residual(wrapped)
    _, cb = bridge.run_with_cache(tokens, names_filter=hb[::-1], pos_slice=spec)
    _, cw = wrapped.run_with_cache(tokens, names_filter=hw[::-1], pos_slice=spec)
    assert [k for k in cb if k in hb] == hb and list(cw) == hw  # execution order, not the filter's
    for nb, nw in zip(hb, hw):
        assert cb[nb].shape == cw[nw].shape
        assert torch.allclose(cb[nb], cw[nw], atol=1e-5)


@needs_bridge
def test_backward_one_tuple_and_list_hooks_agree_with_the_bridge(bridge_and_twin):
    bridge, wrapped, tokens = bridge_and_twin
    grads = {}
    for name, model in (("bridge", bridge), ("wrap", wrapped)):
        last = lm_residual(model)[-1]
        emb = next(p for n, p in model.named_parameters() if "embed_tokens" in n and n.endswith("weight"))
        emb.grad = None
        model.run_with_hooks(tokens, bwd_hooks=[(last, lambda grad, hook: (grad * 3,))]).sum().backward()
        grads[name] = emb.grad.clone()
        emb.grad = None
        first = lm_residual(model)[0]
        model.add_perma_hook(last, f2)
        model.add_hook(first, f1)
        model.add_hook(last, g, dir="bwd")
        listing = model.list_hooks(name_filter=lm_residual(model))
        grads[name + " hooks"] = describe(listing, [lm_residual(model)[0], "", last])
        grads[name + " no perm"] = describe(
            model.list_hooks(lm_residual(model), including_permanent=False), [lm_residual(model)[0], "", last]
        )
        model.remove_all_hook_fns(direction="fwd")  # the permanent and the backward hook stay
        grads[name + " after fwd removal"] = describe(model.list_hooks(lm_residual(model)), [first, "", last])
        layers = []
        model.run_with_hooks(
            tokens,
            fwd_hooks=[(lm_residual(model)[1], lambda a, hook, seen=layers: seen.append(hook.layer()))],
        )
        grads[name + " layer"] = layers
        model.reset_hooks(including_permanent=True)
        assert model.list_hooks() == {}
    assert torch.allclose(grads["bridge"], grads["wrap"], atol=1e-5)
    assert (
        grads["bridge hooks"]
        == grads["wrap hooks"]
        == {
            "a": [(False, None, "f1")],
            "c": [(True, None, "f2"), (False, None, "g")],
        }
    )
    assert grads["bridge no perm"] == grads["wrap no perm"]
    assert (
        grads["bridge after fwd removal"]
        == grads["wrap after fwd removal"]
        == {"c": [(True, None, "f2"), (False, None, "g")]}
    )
    assert grads["bridge layer"] == grads["wrap layer"] == [1]


@needs_bridge
def test_handles_name_the_users_function_on_the_bridge_in_every_way_of_attaching(bridge_and_twin):
    """The bridge's hook functions are wrapped (replacements are checked): its handles must still
    show the user's function, as TL's ``LensHandle.user_hook`` does, and the check must still run."""
    bridge, wrapped, tokens = bridge_and_twin
    for model in (bridge, wrapped):
        first, last = lm_residual(model)[0], lm_residual(model)[-1]
        hp = model.hook_dict[first]
        with model.hooks(fwd_hooks=[(first, f1)], bwd_hooks=[(first, g)]):
            assert [LABELS[id(h.user_hook)] for h in hp.fwd_hooks + hp.bwd_hooks] == ["f1", "g"]
        model.add_hook(lambda n, first=first: n == first, f2)  # a name filter
        model.add_perma_hook(first, f1)
        assert [(h.is_permanent, LABELS[id(h.user_hook)]) for h in hp.fwd_hooks] == [
            (False, "f2"),
            (True, "f1"),
        ]
        model.reset_hooks(including_permanent=True)
        with pytest.raises(hooked.HookReturnError, match="returned a tensor of shape"):
            model.run_with_hooks(tokens, fwd_hooks=[(last, lambda a, hook: a[:, :1])])
        assert model.list_hooks() == {}


def lm_residual(model):
    from hooked import lm

    return lm.residual_hooks(model)
