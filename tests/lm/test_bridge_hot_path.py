"""The bridge's hook points with nothing registered skip ``nn.Module.__call__`` and change nothing.

``hooked_bridge`` gives TransformerLens's ``HookPoint`` modules the class ``QuietHookPoint``
(fix 7 of :mod:`hooked.lm.backends.bridge`). Every result here is compared bit for bit with the same
bridge whose hook points are switched back to TransformerLens's own class: forwards, caches,
steering hooks, gradients, generation; PyTorch's own module hooks (on a point, and global ones)
still see every call.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch.nn.modules.module import register_module_forward_hook
from transformer_lens.hook_points import HookPoint as TLHookPoint

from hooked.lm.backends.bridge import QuietHookPoint, quiet_hook_points
from tests.lm.tiny_models import VOCAB, tiny_bridge


@pytest.fixture(scope="module", params=["llama", pytest.param("gpt2", marks=pytest.mark.slow)])
def bridge(request):
    return tiny_bridge(request.param)


@pytest.fixture
def tokens():
    return torch.randint(4, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))


@contextmanager
def loud(bridge):
    """The bridge with TransformerLens's own hook point class (the reference)."""
    quiet = [m for m in bridge.modules() if type(m) is QuietHookPoint]
    for m in quiet:
        m.__class__ = TLHookPoint
    try:
        yield
    finally:
        for m in quiet:
            m.__class__ = QuietHookPoint


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
