"""torch.compile of a hooked model: hooks added or removed after compiling take effect."""

from __future__ import annotations

import pytest
import torch

from tests.toys import MLPStack, TinyRNN


@pytest.mark.slow
def test_hook_changes_after_compile_are_not_ignored():
    torch._dynamo.reset()
    model = MLPStack(8, 2)
    x = torch.randn(2, 8)
    ref = model(x)
    compiled = torch.compile(model)
    assert torch.allclose(compiled(x), ref)
    handle = model.add_hook("hook_out", lambda a, hook: a * 0)
    assert torch.equal(compiled(x), torch.zeros_like(ref))
    handle.remove()
    assert torch.allclose(compiled(x), ref)
    scale = {"s": 2.0}
    with model.hooks(fwd_hooks=[("hook_out", lambda a, hook: a * scale["s"])]):
        assert torch.allclose(compiled(x), 2 * ref)
    _, cache = model.run_with_cache(x)
    assert torch.allclose(cache["hook_out"], ref)


@pytest.mark.slow
def test_compiled_recurrent_steps_restart_every_forward():
    torch._dynamo.reset()
    rnn = TinyRNN()
    x = torch.randn(2, 4, 3)
    compiled = torch.compile(rnn)

    def edit(act, hook):
        return act * 0 if hook.step == 1 else act

    with rnn.hooks(fwd_hooks=[("hook_h", edit)]):
        first, second = compiled(x), compiled(x)
    want = rnn.manual(x, lambda t, h: h * 0 if t == 1 else h)
    assert torch.allclose(first, want, atol=1e-6) and torch.allclose(second, want, atol=1e-6)


@pytest.mark.slow
def test_compiling_while_other_models_hook_points_come_and_go():
    """Hook points of other models that are live while a model compiles, and then collected, must
    not break the compilation or its guards. (The set of live hook points used to be traced entry
    by entry, and one collected during compilation made guard creation fail with a KeyError; that
    race depends on when the collector runs, so this test exercises the situation without forcing
    it.)"""
    import gc

    torch._dynamo.reset()
    others = [MLPStack(8, 2) for _ in range(20)]
    for other in others:
        other.add_perma_hook("hook_out", lambda a, hook: a)
    model = MLPStack(8, 2)
    x = torch.randn(2, 8)
    ref = model(x)
    compiled = torch.compile(model)
    assert torch.allclose(compiled(x), ref)
    del others[:10]
    gc.collect()
    assert torch.allclose(compiled(x), ref)
    with model.hooks(fwd_hooks=[("hook_out", lambda a, hook: a * 0)]):
        assert torch.equal(compiled(x), torch.zeros_like(ref))
    others.clear()
    gc.collect()
    assert torch.allclose(compiled(x), ref)
