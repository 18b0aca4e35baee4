"""The bridge's hook points and components skip what does nothing, and change nothing.

``hooked_bridge`` gives TransformerLens's ``HookPoint`` modules the class ``QuietHookPoint`` and its
components a quiet subclass (:mod:`hooked.lm.backends.bridge_hot_path`): no ``nn.Module.__call__``
or accelerate's no-op ``align_module_device`` while nothing is registered, no ``hook_scale`` /
``hook_normalized`` values in a norm while nobody sees them, a block's ``inspect.signature`` read
once. Every result here is compared bit for bit with the same bridge switched back to
TransformerLens's own classes: forwards, caches, steering hooks, gradients, generation (padded
batches too), several model families; PyTorch's own module hooks (on a point, on a component,
global ones) still see every call.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
from contextlib import contextmanager

import pytest
import torch
from torch.nn.modules.module import register_module_forward_hook
from transformer_lens.hook_points import HookPoint as TLHookPoint
from transformer_lens.model_bridge.generalized_components import base as base_module
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformer_lens.model_bridge.generalized_components.block import BlockBridge
from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge

from hooked.lm.backends.bridge_hot_path import QuietHookPoint, quiet_hook_points
from hooked.lm.backends.bridge_lean import attention_forward
from tests.lm.tiny_models import VOCAB, tiny_bridge

# gemma2: offset norms, soft-capping, sliding window; the others slow
FAMILIES = [
    "llama",
    "gemma2",
    *(pytest.param(f, marks=pytest.mark.slow) for f in ("gpt2", "gpt_neox", "qwen2", "gemma")),
]


@pytest.fixture(scope="module", params=FAMILIES)
def bridge(request):
    return tiny_bridge(request.param)


@pytest.fixture
def tokens():
    return torch.randint(4, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))


def _base(cls):
    return TLHookPoint if cls is QuietHookPoint else cls.__dict__.get("_hooked_quiet_of")


@contextmanager
def loud(bridge):
    """The bridge with TransformerLens's own classes (the reference)."""
    quiet = [(m, type(m)) for m in bridge.modules() if _base(type(m)) is not None]
    assert quiet
    for m, cls in quiet:
        m.__class__ = _base(cls)
    try:
        yield
    finally:
        for m, cls in quiet:
            m.__class__ = cls


def both(bridge, fn):
    with loud(bridge):
        want = fn()
    return fn(), want


def test_every_hook_point_is_quiet_and_still_a_transformer_lens_hook_point(bridge):
    points = [m for m in bridge.modules() if isinstance(m, TLHookPoint)]
    assert len(points) > 20
    assert all(type(m) is QuietHookPoint for m in points)
    assert quiet_hook_points(bridge) == 0  # idempotent
    assert set(bridge.hook_dict.values()) <= set(points)
    components = [m for m in bridge.modules() if isinstance(m, GeneralizedComponent)]
    quiet = [m for m in components if _base(type(m)) is not None]
    assert len(quiet) > 10
    for m in quiet:  # a subclass of its own class, under the same name
        assert isinstance(m, _base(type(m))) and type(m).__name__ == _base(type(m)).__name__


def test_a_copied_component_is_transformer_lens_own_class_and_computes_the_same(bridge, tokens):
    ln = bridge.blocks[0].ln1
    base = _base(type(ln))
    assert base is not None
    x = torch.randn(2, 3, bridge.cfg.d_model, generator=torch.Generator().manual_seed(5))
    for copied in (copy.deepcopy(ln), pickle.loads(pickle.dumps(ln))):
        assert type(copied) is base
        with torch.no_grad():
            assert torch.equal(copied(x), ln(x))


def test_a_component_with_an_offload_hook_takes_transformer_lens_own_call(bridge, tokens, monkeypatch):
    import accelerate.utils.modeling as accelerate_modeling

    entered = []
    real = accelerate_modeling.align_module_device

    def spy(module, *args, **kwargs):
        entered.append(module)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(base_module, "align_module_device", spy)
    ln = bridge.blocks[0].ln1
    original = ln._modules["_original_component"]
    with torch.no_grad():
        want = bridge(tokens)
        assert entered == []  # no offload hook anywhere: the no-op context is skipped
        original._hf_hook = object()  # what accelerate sets (not an offload hook: a no-op still)
        try:
            got = bridge(tokens)
        finally:
            del original._hf_hook
    assert entered == [original] and torch.equal(got, want)


def test_forward_is_bit_identical(bridge, tokens):
    with torch.no_grad():
        got, want = both(bridge, lambda: bridge(tokens))
    assert torch.equal(got, want)


def test_cache_of_everything_is_bit_identical(bridge, tokens):
    with torch.no_grad():
        (out, cache), (out_ref, cache_ref) = both(bridge, lambda: bridge.run_with_cache(tokens))
    assert torch.equal(out, out_ref)
    assert list(cache) == list(cache_ref) and len(cache) > 20
    for name in cache:
        assert torch.equal(cache[name], cache_ref[name]), name


def test_steering_hook_and_gradients_are_bit_identical(bridge, tokens):
    vector = torch.randn(bridge.cfg.d_model, generator=torch.Generator().manual_seed(0))

    def steer(act, hook):
        return act + vector

    def run():
        bridge.zero_grad(set_to_none=True)
        out = bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_pre", steer)])
        out[:, -1].logsumexp(-1).sum().backward()
        grads = [p.grad.clone() for p in bridge.parameters() if p.grad is not None]
        return out.detach(), grads

    (out, grads), (out_ref, grads_ref) = both(bridge, run)
    bridge.zero_grad(set_to_none=True)
    assert torch.equal(out, out_ref)
    assert len(grads) == len(grads_ref) > 0
    assert all(torch.equal(g, r) for g, r in zip(grads, grads_ref))
    with torch.no_grad():
        plain = bridge(tokens)
    assert not torch.equal(out, plain)  # the hook did steer


def test_gradient_cache_is_bit_identical(bridge, tokens):
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"]

    def run():
        return bridge.run_with_cache(
            tokens, names_filter=names, incl_bwd=True, metric=lambda out: out[:, -1, 5].sum()
        )[1]

    cache, ref = both(bridge, run)
    assert sorted(cache) == sorted(ref) and any(n.endswith("_grad") for n in cache)
    for name in cache:
        assert torch.equal(cache[name], ref[name]), name


def test_generation_is_bit_identical(bridge):
    from hooked import lm

    prompt = torch.randint(4, VOCAB, (1, 5), generator=torch.Generator().manual_seed(4))

    def run():
        return lm.generate(bridge, prompt, 6, stop_at_eos=False, return_tokens=True).tokens

    got, want = both(bridge, run)
    assert torch.equal(got, want)


def test_pytorch_module_hooks_still_see_every_call(bridge, tokens):
    point = bridge.hook_dict["blocks.0.hook_resid_post"]
    seen = []
    handle = point.register_forward_hook(lambda module, args, out: seen.append(out.clone()))
    try:
        with torch.no_grad():
            bridge(tokens)
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].shape[:2] == tokens.shape

    def count_points():
        calls = []
        handle = register_module_forward_hook(
            lambda module, args, out: calls.append(id(module)) if isinstance(module, TLHookPoint) else None
        )
        try:
            with torch.no_grad():
                bridge(tokens)
        finally:
            handle.remove()
        return calls

    got, want = both(bridge, count_points)
    assert got == want and len(got) > 20  # a global module hook sees the quiet points too


def test_padded_batch_generation_is_bit_identical(bridge):
    from hooked import lm

    ids = torch.randint(4, VOCAB, (3, 6), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left-padded rows
    mask[2, :4] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    vector = torch.randn(bridge.cfg.d_model, generator=torch.Generator().manual_seed(1))

    def run():
        hooks = [("blocks.1.hook_resid_pre", lambda act, hook: act + vector)]
        return lm.generate(bridge, batch, 5, fwd_hooks=hooks, stop_at_eos=False, return_tokens=True).tokens

    got, want = both(bridge, run)
    assert torch.equal(got, want)


def test_a_norm_computes_its_hook_values_only_when_someone_sees_them(bridge, tokens, monkeypatch):
    calls = []
    real = NormalizationBridge._hf_autograd_forward_with_hooks

    def spy(self, x):
        calls.append(self)
        return real(self, x)

    monkeypatch.setattr(NormalizationBridge, "_hf_autograd_forward_with_hooks", spy)
    norms = [m for m in bridge.modules() if isinstance(m, NormalizationBridge)]
    assert norms
    native = [m for m in norms if m.use_native_layernorm_autograd]
    if not native:
        pytest.skip("this family's norms are TransformerLens's from-scratch ones (left to TransformerLens)")
    with torch.no_grad():
        got, want = both(bridge, lambda: bridge(tokens))
    assert torch.equal(got, want)
    assert len(calls) == len(native) > 0  # TransformerLens's classes only
    names = ["blocks.0.ln1.hook_scale", "blocks.1.ln2.hook_normalized"]

    def run():
        seen = {}

        def keep(act, hook):
            seen[hook.name] = act.clone()

        calls.clear()
        out = bridge.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names])
        return out, seen, list(calls)

    with torch.no_grad():
        (got, seen, mine), (want, ref, _) = both(bridge, run)
    assert torch.equal(got, want) and sorted(seen) == sorted(ref) == sorted(names)
    assert all(torch.equal(seen[n], ref[n]) for n in names)
    assert mine == [bridge.blocks[0].ln1, bridge.blocks[1].ln2]  # the two seen ones only
    with torch.no_grad():
        cache, cache_ref = both(bridge, lambda: bridge.run_with_cache(tokens, names_filter=names)[1])
    assert sorted(cache) == sorted(cache_ref) == sorted(names)
    assert all(torch.equal(cache[n], cache_ref[n]) for n in names)


def test_a_norm_edited_at_its_scale_is_bit_identical(bridge, tokens):
    def double(act, hook):
        return act * 2

    native = bridge.blocks[0].ln2.use_native_layernorm_autograd
    with torch.no_grad(), pytest.warns(UserWarning) if native else contextlib.nullcontext():
        got, want = both(
            bridge,
            lambda: bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.ln2.hook_normalized", double)]),
        )
    assert torch.equal(got, want)
    with torch.no_grad():
        assert not torch.equal(got, bridge(tokens))  # the edit reached the output


def test_a_block_reads_its_layer_signature_once(bridge, tokens, monkeypatch):
    import inspect

    with torch.no_grad():
        bridge(tokens)
    counted = []
    real = inspect.signature

    def spy(obj, *args, **kwargs):
        counted.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", spy)
    with torch.no_grad():
        got, want = both(bridge, lambda: bridge(tokens))
    assert torch.equal(got, want)
    blocks = [m for m in bridge.modules() if isinstance(m, BlockBridge)]
    layer_forwards = {getattr(b.original_component.forward, "__func__", None) for b in blocks}
    mine = [o for o in counted if getattr(o, "__func__", None) in layer_forwards]
    assert len(mine) == len(blocks)  # TransformerLens's classes: once per block and forward; ours: none


@pytest.mark.parametrize("positional", [0, 1, 2])
def test_a_block_filters_keywords_as_transformer_lens(bridge, positional):
    block = bridge.blocks[0]
    kwargs = {
        "hidden_states": 1,
        "attention_mask": 2,
        "position_ids": 3,
        "encoder_attention_mask": 4,
        "past_key_values": 5,
        "not_a_parameter": 6,
    }
    got = block._filter_kwargs_for_forward(dict(kwargs), positional)
    want = BlockBridge._filter_kwargs_for_forward(block, dict(kwargs), positional)
    assert got == want and list(got) == list(want)


def test_a_hook_on_a_component_sees_every_call(bridge, tokens):
    attn = bridge.blocks[0].attn
    seen = []
    handle = attn.register_forward_hook(lambda module, args, out: seen.append(module))
    try:
        with torch.no_grad():
            got, want = both(bridge, lambda: bridge(tokens))
    finally:
        handle.remove()
    assert torch.equal(got, want) and seen == [attn, attn]


def test_projection_hooks_and_a_hook_on_the_wrapped_linear_are_bit_identical(bridge, tokens):
    linear = bridge.blocks[0].attn.q.original_component
    seen = []
    handle = linear.register_forward_hook(lambda module, args, out: seen.append(out.clone()))
    hooks = [("blocks.1.attn.q.hook_out", lambda act, hook: act * 1.5)]  # seen per head
    try:
        with torch.no_grad():
            got, want = both(bridge, lambda: bridge.run_with_hooks(tokens, fwd_hooks=hooks))
    finally:
        handle.remove()
    assert torch.equal(got, want) and len(seen) == 2 and torch.equal(seen[0], seen[1])
    with torch.no_grad():
        assert not torch.equal(got, bridge(tokens))  # the projection hook did steer


def test_stop_and_start_at_layer_are_bit_identical(bridge, tokens):
    with torch.no_grad():
        got, want = both(bridge, lambda: bridge(tokens, stop_at_layer=1))
        assert torch.equal(got, want) and got.shape[-1] == bridge.cfg.d_model
        resid = got
        got, want = both(bridge, lambda: bridge(resid, start_at_layer=1))
    assert torch.equal(got, want) and got.shape[-1] == bridge.cfg.d_vocab


def test_transformer_lens_classes_switch_back_and_forth(bridge, tokens):
    from hooked.lm.backends.bridge_hot_path import transformer_lens_classes

    before = [type(m) for m in bridge.modules()]
    with pytest.raises(RuntimeError, match="inside"), transformer_lens_classes(bridge) as same:
        assert same is bridge
        assert not any(type(m) is QuietHookPoint or _base(type(m)) for m in bridge.modules())
        raise RuntimeError("inside")
    assert [type(m) for m in bridge.modules()] == before


# ---------------------------------------------------------------- the lean block / attention / MLP
def _lean_kinds(bridge):
    from transformer_lens.model_bridge.generalized_components.gated_mlp import GatedMLPBridge
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    return (
        (BlockBridge, BlockBridge.forward),
        (PositionEmbeddingsAttentionBridge, PositionEmbeddingsAttentionBridge.forward),
        (GatedMLPBridge, GatedMLPBridge.forward),
    )


@contextmanager
def counting_transformer_lens_forwards(bridge, monkeypatch):
    """Counts the calls of TransformerLens's own block / rotary-attention / gated-MLP ``forward``
    (which the quiet classes call only where they hand a call back to TransformerLens)."""
    calls = []
    for kind, real in _lean_kinds(bridge):

        def spy(self, *args, _real=real, **kwargs):
            calls.append(self)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(kind, "forward", spy)
    yield calls


def test_the_lean_forwards_run_where_transformer_lens_would_take_the_common_path(bridge, tokens, monkeypatch):
    from hooked.lm.backends import bridge_lean

    lean = {bridge_lean.block_forward, bridge_lean.attention_forward}
    used = {type(m).__dict__.get("forward") for m in bridge.modules()} & lean
    if not used:
        pytest.skip("no block or rotary attention of TransformerLens's own in this family")
    with counting_transformer_lens_forwards(bridge, monkeypatch) as calls, torch.no_grad():
        got = bridge(tokens)
        assert calls == []  # nothing handed back to TransformerLens on the common path
        want = _loud_forward(bridge, tokens)
        assert len(calls) > 0  # TransformerLens's classes call them (the spies work)
    assert torch.equal(got, want)


def _loud_forward(bridge, tokens, **kwargs):
    with loud(bridge):
        return bridge(tokens, **kwargs)


# every hook point the lean attention and block call (and the projections' / MLP's), edited: a hook
# the lean code skipped would leave the output as without it, and differ from TransformerLens's
EDITED_POINTS = [
    "blocks.1.hook_resid_pre",
    "blocks.1.hook_resid_post",
    "blocks.1.ln1.hook_in",
    "blocks.1.ln1.hook_out",
    "blocks.1.ln2.hook_out",
    "blocks.1.attn.hook_in",
    "blocks.1.attn.hook_q",
    "blocks.1.attn.hook_k",
    "blocks.1.attn.hook_v",
    "blocks.1.attn.hook_rot_q",
    "blocks.1.attn.hook_rot_k",
    "blocks.1.attn.hook_cos",
    "blocks.1.attn.hook_sin",
    "blocks.1.attn.hook_attn_scores",
    "blocks.1.attn.hook_pattern",
    "blocks.1.attn.hook_z",
    "blocks.1.attn.hook_out",
    "blocks.1.mlp.hook_in",
    "blocks.1.mlp.hook_pre",
    "blocks.1.mlp.hook_post",
    "blocks.1.mlp.hook_out",
]


@pytest.mark.parametrize("name", EDITED_POINTS)
def test_an_edit_at_any_point_the_lean_code_calls_is_bit_identical(bridge, tokens, name):
    point = bridge.hook_dict.get(name)
    if point is None:
        pytest.skip(f"{name} is not a hook point of this family")

    def edit(act, hook):
        return act * 0.75 + 0.125

    with torch.no_grad():
        plain = bridge(tokens)
        got, want = both(bridge, lambda: bridge.run_with_hooks(tokens, fwd_hooks=[(name, edit)]))
    assert torch.equal(got, want)
    if type(bridge.blocks[1].attn).__dict__.get("forward") is attention_forward:  # the lean path ran
        assert not torch.equal(got, plain), f"the edit at {name} did not reach the output"


def test_gated_hooks_take_transformer_lens_code_and_are_bit_identical(bridge, tokens, monkeypatch):
    names = ["blocks.0.attn.hook_result", "blocks.1.hook_mlp_in", "blocks.1.hook_q_input"]
    names = [n for n in names if n in bridge.hook_dict]
    if not names:
        pytest.skip("no gated hook points in this family")
    for name in names:

        def edit(act, hook):
            return act * 0.5

        with torch.no_grad():
            plain = bridge(tokens)
            got, want = both(
                bridge, lambda name=name: bridge.run_with_hooks(tokens, fwd_hooks=[(name, edit)])
            )
            cache, ref = both(bridge, lambda name=name: bridge.run_with_cache(tokens, names_filter=[name])[1])
        assert torch.equal(got, want), name
        assert not torch.equal(got, plain), f"the edit at {name} did not reach the output"
        assert list(cache) == list(ref) == [name] and torch.equal(cache[name], ref[name])


@pytest.mark.parametrize("with_kwargs", [False, True])
def test_a_pytorch_pre_hook_on_a_norm_or_the_attention_is_bit_identical(bridge, tokens, with_kwargs):
    targets = [bridge.blocks[0].ln1, bridge.blocks[1].ln2, bridge.blocks[1].attn]

    def pre(module, args, *rest):
        if args:
            new = (args[0] * 1.25, *args[1:])
        else:
            new = args
        if with_kwargs:
            kwargs = dict(rest[0])
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = kwargs["hidden_states"] * 1.25
            return new, kwargs
        return new

    handles = [t.register_forward_pre_hook(pre, with_kwargs=with_kwargs) for t in targets]
    try:
        with torch.no_grad():
            got, want = both(bridge, lambda: bridge(tokens))
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        plain = bridge(tokens)
    assert torch.equal(got, want) and not torch.equal(got, plain)


def test_an_edited_attention_scaling_is_read_on_every_call(bridge, tokens):
    if type(bridge.blocks[1].attn).__dict__.get("forward") is not attention_forward:
        pytest.skip("this family's attention is not TransformerLens's rotary one (no lean copy)")
    attn = bridge.blocks[1].attn.original_component
    old = attn.scaling
    attn.scaling = old * 0.5
    try:
        with torch.no_grad():
            got, want = both(bridge, lambda: bridge(tokens))
    finally:
        attn.scaling = old
    with torch.no_grad():
        assert torch.equal(got, want) and not torch.equal(got, bridge(tokens))


def test_a_compiled_component_takes_pytorch_call(bridge, tokens):
    attn = bridge.blocks[0].attn
    seen = []
    real = type(attn).forward

    def compiled(*args, **kwargs):  # what nn.Module.__call__ calls for a compiled module
        seen.append(1)
        return real(attn, *args, **kwargs)

    attn._compiled_call_impl = compiled
    try:
        with torch.no_grad():
            got = bridge(tokens)
    finally:
        del attn._compiled_call_impl
    with torch.no_grad():
        assert seen == [1] and torch.equal(got, bridge(tokens))


def test_attribution_patching_is_bit_identical(bridge):
    from hooked import lm
    from interventions.attribution import attribution_patching

    gen = torch.Generator().manual_seed(8)
    clean = torch.randint(4, VOCAB, (2, 6), generator=gen)
    corrupt = torch.randint(4, VOCAB, (2, 6), generator=gen)
    hooks = lm.residual_hooks(bridge)

    def metric(logits):
        return logits[:, -1, 5] - logits[:, -1, 7]

    got, want = both(bridge, lambda: attribution_patching(bridge, corrupt, clean, hooks, metric, range(6)))
    assert torch.equal(got, want) and got.abs().sum() > 0
