"""Gradient caches (issue 27 item 4): the gradient with respect to each head's result equals
TransformerLens's, which reads it at ``hook_result`` (TransformerLens 4.3's own bridge and
``ActivationCache``, real gradients, the Attribution Patching notebook's head attribution); never
``hook_z``'s gradient mapped forward through ``W_O``."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache as TLCache

from hooked import ActivationCache, lm
from tests.lm.tutorials.runner import reference_bridge

CLEAN = ["the cat sat on the mat", "a dog ran in the city"]
CORRUPT = ["the dog sat on the mat", "a cat ran in the city"]
ANSWERS = (5, 7)


def metric(logits):
    return (logits[:, -1, ANSWERS[0]] - logits[:, -1, ANSWERS[1]]).mean()


@pytest.fixture(scope="module")
def reference(tiny_folder):
    """TransformerLens's own bridge on the tiny Llama's weights, per-head results switched on."""
    ref = reference_bridge(str(tiny_folder))
    ref.set_use_attn_result(True)
    return ref


def tl_caches(ref, tokens):
    """The notebook's way: a forward cache, and gradients recorded by backward hooks into
    TransformerLens's own ``ActivationCache(grads, model)``."""
    n = ref.cfg.n_layers
    names = [f"blocks.{i}.attn.hook_{k}" for i in range(n) for k in ("result", "z")]
    grads = {}

    def keep(grad, hook, name):
        grads[name] = grad.detach()

    ref.reset_hooks()
    for name in names:
        ref.add_hook(name, lambda g, hook, name=name: keep(g, hook, name), "bwd")
    logits, fwd = ref.run_with_cache(tokens)
    metric(logits).backward()
    ref.reset_hooks()
    return fwd, TLCache(grads, ref)


def test_head_result_gradients_equal_transformer_lens(tiny, reference):
    tokens = reference.to_tokens(CLEAN)
    corrupt = reference.to_tokens(CORRUPT)
    _, tl_grad = tl_caches(reference, corrupt)
    tl_clean, _ = tl_caches(reference, tokens)
    tl_corrupt, _ = tl_caches(reference, corrupt)
    want = tl_grad.stack_head_results(-1)  # from the gradients at hook_result
    want_attr = (want * (tl_clean.stack_head_results(-1) - tl_corrupt.stack_head_results(-1))).sum(-1)
    for backend in ("wrap", "bridge"):
        model = tiny[backend]
        assert torch.equal(model.to_tokens(CLEAN), tokens)
        _, clean = model.run_with_cache(tokens)
        _, cache = model.run_with_cache(corrupt, incl_bwd=True, metric=metric)
        grads = cache.gradients()
        got, labels = grads.stack_head_results(-1, return_labels=True)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        assert labels == [f"L{i}H{h}" for i in range(2) for h in range(4)]
        attr = (got * (clean.stack_head_results(-1) - cache.stack_head_results(-1))).sum(-1)
        torch.testing.assert_close(attr, want_attr, atol=1e-5, rtol=1e-4)
        # the same through the function, and at one position
        torch.testing.assert_close(
            grads.stack_head_results(-1, pos_slice=-1), want[:, :, -1], atol=1e-5, rtol=1e-4
        )


def test_z_gradient_through_W_O_is_not_the_head_result_gradient(reference):
    """What the test above guards against: TransformerLens's own fallback (no hook_result in a
    gradient cache: hook_z's gradient times W_O) answers something else on the same gradients."""
    corrupt = reference.to_tokens(CORRUPT)
    _, tl_grad = tl_caches(reference, corrupt)
    right = tl_grad.stack_head_results(-1)
    z_only = TLCache({k: v for k, v in tl_grad.cache_dict.items() if "hook_z" in k}, reference)
    wrong = z_only.stack_head_results(-1)
    assert (right - wrong).abs().max() > 10 * (right.abs().max() * 1e-4)


def test_head_result_gradients_from_either_cached_gradient(tiny):
    """On the bridge the gradient at hook_result and the one at the attention output give the same
    per-head gradients; with neither (only hook_z's) it refuses instead of mapping forward."""
    bridge = tiny["bridge"]
    tokens = bridge.to_tokens(CORRUPT)

    def grads(suffixes):
        _, c = bridge.run_with_cache(
            tokens, names_filter=lambda n: n.endswith(suffixes), incl_bwd=True, metric=metric
        )
        return c.gradients()

    from_result = grads(("attn.hook_result",)).stack_head_results(-1)
    from_out = grads(("hook_attn_out",)).stack_head_results(-1)
    torch.testing.assert_close(from_result, from_out)
    with pytest.raises(KeyError, match="hook_z's gradient cannot give it"):
        grads(("attn.hook_z",)).stack_head_results(-1)


def test_gradient_cache_refuses_what_needs_forward_activations(tiny):
    wrap = tiny["wrap"]
    tokens = wrap.to_tokens(CORRUPT)
    _, cache = wrap.run_with_cache(tokens, incl_bwd=True, metric=metric)
    grads = cache.gradients()
    stack = grads.decompose_resid(-1)  # gradients at each component: allowed
    assert stack.shape[0] == 1 + 2 * 2
    last = cache[lm.act_name(wrap, "resid_post", -1) + "_grad"]
    torch.testing.assert_close(grads.accumulated_resid(-1)[-1], last)
    for call in (
        lambda: grads.apply_ln_to_stack(stack, -1),
        lambda: grads.accumulated_resid(-1, apply_ln=True),
        lambda: grads.logit_attrs(stack, tokens[:, -1]),
        lambda: grads.stack_head_results(-1, incl_remainder=True),
        lambda: grads.gradients(),
    ):
        with pytest.raises(ValueError):
            call()
    _, forward_only = wrap.run_with_cache(tokens)
    with pytest.raises(ValueError, match="holds no gradients"):
        forward_only.gradients()
    z_grad = lm.act_name(wrap, "z", 0) + "_grad"
    with pytest.raises(KeyError, match="grad=True"):  # forward results asked of gradients say so
        lm.head_results(wrap, ActivationCache({z_grad: cache[z_grad]}), 0)


def test_forward_head_results_read_the_cached_hook_result(tiny):
    bridge = tiny["bridge"]
    tokens = bridge.to_tokens(CLEAN)
    _, full = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_z", "hook_result")))
    _, z_only = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    torch.testing.assert_close(
        full.stack_head_results(-1), z_only.stack_head_results(-1), atol=1e-5, rtol=1e-4
    )
    assert torch.equal(full.stack_head_results(-1)[:4], full["blocks.0.attn.hook_result"].movedim(-2, 0))


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_head_results_and_the_lens_run_no_hook_of_the_model(tiny, backend):
    """The toolkit computes from cached values with the model's modules: a hook left on the model
    (Exploratory Analysis ablates a head with a hook_z hook, then reads stack_head_results of its
    cache) must not run on that computation."""
    model = tiny[backend]
    tokens = model.to_tokens(CLEAN)
    _, cache = model.run_with_cache(tokens)
    want = cache.stack_head_results(-1)
    lens = lm.unembed(model, cache[lm.act_name(model, "resid_pre", 1)])
    calls = []
    names = [lm.act_name(model, "z", 0), lm.act_name(model, "resid_post", 1)]
    for name in names:
        model.add_hook(name, lambda act, hook: calls.append(hook.name))
    try:
        torch.testing.assert_close(cache.stack_head_results(-1), want)
        torch.testing.assert_close(lm.unembed(model, cache[lm.act_name(model, "resid_pre", 1)]), lens)
        cache.decompose_resid(-1, apply_ln=True)
        assert calls == []
    finally:
        model.reset_hooks()
