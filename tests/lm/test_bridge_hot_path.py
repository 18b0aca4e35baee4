"""The bridge's hook points and components skip what does nothing, and change nothing.

``hooked_bridge`` gives TransformerLens's ``HookPoint`` modules the class ``QuietHookPoint`` and its
components a quiet subclass that skips accelerate's no-op ``align_module_device`` (fix 7 of
:mod:`hooked.lm.backends.bridge`). Every result here is compared bit for bit with the same bridge
switched back to TransformerLens's own classes: forwards, caches,
steering hooks, gradients, generation; PyTorch's own module hooks (on a point, and global ones)
still see every call.
"""

from __future__ import annotations

import copy
import pickle
from contextlib import contextmanager

import pytest
import torch
from torch.nn.modules.module import register_module_forward_hook
from transformer_lens.hook_points import HookPoint as TLHookPoint
from transformer_lens.model_bridge.generalized_components import base as base_module
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

from hooked.lm.backends.bridge import QuietHookPoint, quiet_hook_points
from tests.lm.tiny_models import VOCAB, tiny_bridge


@pytest.fixture(scope="module", params=["llama", pytest.param("gpt2", marks=pytest.mark.slow)])
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
