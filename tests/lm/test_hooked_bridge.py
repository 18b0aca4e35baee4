"""The bridge backend's hook-facing behaviour (tiny Llama through TransformerLens 4): a hook sees the
name it was attached by, caches are keyed by the names asked for, gated hooks are switched on when
asked for (and back off), and ``run_with_cache(incl_bwd=True, metric=)`` gives the gradients
autograd gives by hand."""

from __future__ import annotations

import warnings

import pytest
import torch

from hooked import UnknownHookError, lm
from tests.lm.tiny_models import VOCAB, tiny_bridge


@pytest.fixture
def bridge():
    return tiny_bridge("llama")


@pytest.fixture
def tokens():
    return torch.randint(4, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))


def test_a_hook_sees_the_name_it_was_attached_by(bridge, tokens):
    seen = []

    def record(act, hook):
        seen.append((hook.name, hook.layer()))

    fwd = [
        ("blocks.1.hook_resid_pre", record),
        ("blocks.1.hook_in", record),
        ("blocks.0.attn.hook_z", record),
    ]
    bridge.run_with_hooks(tokens, fwd_hooks=fwd)
    assert sorted(seen) == [
        ("blocks.0.attn.hook_z", 0),
        ("blocks.1.hook_in", 1),
        ("blocks.1.hook_resid_pre", 1),
    ]
    seen.clear()
    with bridge.hooks(fwd_hooks=[(lambda n: n.endswith("hook_resid_post"), record)]):
        bridge(tokens)
    assert seen == [("blocks.0.hook_resid_post", 0), ("blocks.1.hook_resid_post", 1)]
    seen.clear()
    bridge.add_hook("blocks.0.hook_resid_mid", record)
    bridge(tokens)
    bridge.reset_hooks()
    bridge(tokens)
    assert seen == [("blocks.0.hook_resid_mid", 0)]


def test_the_everyday_cache_by_hook_name_pattern_works_with_aliases(bridge, tokens):
    cache = {}

    def store(act, hook):
        cache[hook.name] = act.detach()

    names = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"]
    bridge.run_with_hooks(tokens, fwd_hooks=[(n, store) for n in names])
    assert sorted(cache) == sorted(names)
    _, ref = bridge.run_with_cache(tokens, names_filter=names)
    for n in names:
        assert torch.equal(cache[n], ref[n])


def test_cache_keys_are_the_names_asked_for(bridge, tokens):
    with torch.no_grad():
        _, cache = bridge.run_with_cache(
            tokens, names_filter=["blocks.0.hook_resid_pre", "blocks.1.ln2.hook_in"]
        )
        _, by_filter = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_pre"))
        _, everything = bridge.run_with_cache(tokens)
    assert sorted(cache) == ["blocks.0.hook_resid_pre", "blocks.1.ln2.hook_in"]
    assert list(by_filter) == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    # other spellings and TransformerLens's shorthand find the same tensors
    assert torch.equal(cache["blocks.0.hook_in"], cache["blocks.0.hook_resid_pre"])
    assert torch.equal(cache["blocks.1.hook_resid_mid"], cache["blocks.1.ln2.hook_in"])
    assert torch.equal(cache["resid_mid", 1], cache["blocks.1.ln2.hook_in"])
    # no names_filter: every hook point once, canonical names, aliases still answer
    assert "blocks.0.hook_in" in list(everything) and "blocks.0.hook_resid_pre" not in list(everything)
    assert "blocks.0.hook_resid_pre" in everything  # `in` answers what a lookup answers (issue 27)
    assert torch.equal(everything["blocks.0.hook_resid_pre"], cache["blocks.0.hook_resid_pre"])
    assert torch.equal(everything["resid_pre", 0], cache["blocks.0.hook_resid_pre"])


def test_unknown_names_say_what_is_close(bridge, tokens):
    with pytest.raises(UnknownHookError, match="blocks.0.hook_resid_pre"):
        bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pree", lambda a, hook: None)])
    with pytest.raises(UnknownHookError, match="blocks.0.hook_resid_pre"):
        bridge.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_pree"])


def test_hook_result_is_switched_on_when_a_cache_asks_for_it_and_off_after(bridge, tokens):
    assert not bridge.cfg.use_attn_result
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TransformerLens would warn and skip it
        with torch.no_grad():
            _, cache = bridge.run_with_cache(
                tokens,
                names_filter=["blocks.1.attn.hook_result", "blocks.1.hook_attn_out", "blocks.1.attn.hook_z"],
            )
    assert not bridge.cfg.use_attn_result
    result = cache["blocks.1.attn.hook_result"]
    assert result.shape == (2, 6, 4, 32)
    torch.testing.assert_close(result.sum(-2), cache["blocks.1.hook_attn_out"], atol=1e-6, rtol=1e-5)
    # a head's result is its z through its slice of W_O (by hand)
    w_o = bridge.original_model.model.layers[1]._original_component.self_attn.o._original_component.weight
    z = cache["blocks.1.attn.hook_z"]
    torch.testing.assert_close(result[:, :, 2], z[:, :, 2] @ w_o[:, 16:24].T, atol=1e-6, rtol=1e-5)


def test_hook_result_is_switched_on_when_a_hook_asks_for_it(bridge, tokens):
    def zero_head(result, hook):
        result = result.clone()
        result[:, :, 3] = 0
        return result

    def zero_z(z, hook):
        z = z.clone()
        z[:, :, 3] = 0
        return z

    with torch.no_grad():
        by_result = bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_result", zero_head)])
        assert not bridge.cfg.use_attn_result
        by_z = bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero_z)])
        plain = bridge(tokens)
    assert not torch.allclose(by_result, plain, atol=1e-4)
    torch.testing.assert_close(by_result, by_z, atol=1e-5, rtol=1e-5)
    # a filter that matches it switches it on too
    seen = []
    bridge.run_with_hooks(
        tokens, fwd_hooks=[(lambda n: n.endswith("hook_result"), lambda a, hook: seen.append(hook.name))]
    )
    assert (
        seen == ["blocks.0.attn.hook_result", "blocks.1.attn.hook_result"] and not bridge.cfg.use_attn_result
    )
    # add_hook keeps it on until the hook is reset
    bridge.add_hook("blocks.1.attn.hook_result", lambda a, hook: seen.append(hook.name))
    assert bridge.cfg.use_attn_result
    bridge(tokens)
    bridge.reset_hooks()
    assert not bridge.cfg.use_attn_result and seen[-1] == "blocks.1.attn.hook_result"


@pytest.mark.parametrize(
    "name, equals, heads",
    [
        ("blocks.1.hook_mlp_in", "blocks.1.hook_resid_mid", None),
        ("blocks.1.hook_attn_in", "blocks.1.hook_resid_pre", 4),
        ("blocks.1.attn.hook_q_input", "blocks.1.hook_resid_pre", 4),
        ("blocks.1.hook_k_input", "blocks.1.hook_resid_pre", 2),  # one per key-value head
        ("blocks.1.hook_v_input", "blocks.1.hook_resid_pre", 2),
    ],
)
def test_every_gated_hook_is_switched_on_for_a_cache_with_transformerlens_meaning(
    bridge, tokens, name, equals, heads
):
    """TransformerLens: ``hook_mlp_in`` is the residual stream entering the MLP branch; the split
    inputs are the residual stream entering the layer, one copy per (key-value) head."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            _, cache = bridge.run_with_cache(tokens, names_filter=[name, equals])
    assert list(cache) == [name, equals] or list(cache) == [equals, name]
    want = cache[equals] if heads is None else cache[equals][:, :, None].expand(-1, -1, heads, -1)
    torch.testing.assert_close(cache[name], want)
    assert not any(
        getattr(bridge.cfg, f, False) for f in ("use_hook_mlp_in", "use_attn_in", "use_split_qkv_input")
    )


def test_a_gate_already_on_stays_on(bridge, tokens):
    bridge.set_use_attn_result(True)
    _, cache = bridge.run_with_cache(tokens, names_filter="blocks.0.attn.hook_result")
    assert bridge.cfg.use_attn_result and cache["blocks.0.attn.hook_result"].shape == (2, 6, 4, 32)


def logit_diff(out):
    return (out[:, -1, 5] - out[:, -1, 9]).sum()


def test_gradients_of_a_metric_equal_autograd_by_hand(bridge, tokens):
    # residual streams: autograd of the metric w.r.t. the very tensors the hooks saw
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    logits, cache = bridge.run_with_cache(tokens, names_filter=names, incl_bwd=True, metric=logit_diff)
    kept = {}

    def keep(act, hook):
        kept[hook.name] = act

    out = bridge.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names])
    grads = torch.autograd.grad(logit_diff(out), [kept[n] for n in names])
    for n, g in zip(names, grads):
        torch.testing.assert_close(cache[n + "_grad"], g, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits, out.detach(), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="scalar"):
        bridge.run_with_cache(tokens, names_filter=names, incl_bwd=True, metric=lambda out: out[:, -1, 5])
    with pytest.raises(ValueError, match="incl_bwd"):
        bridge.run_with_cache(tokens, names_filter=names, metric=logit_diff)


def test_head_gradients_equal_the_output_projection_inputs_gradient_by_hand(bridge, tokens):
    from tests.lm.tiny_models import tiny_hf

    _, cache = bridge.run_with_cache(
        tokens, names_filter="blocks.1.attn.hook_z", incl_bwd=True, metric=logit_diff
    )
    hf = tiny_hf("llama")  # the same weights, plain transformers
    seen = []
    handle = hf.model.layers[1].self_attn.o_proj.register_forward_pre_hook(
        lambda m, args: seen.append(args[0])
    )
    try:
        (grad,) = torch.autograd.grad(logit_diff(hf(tokens).logits), seen)
    finally:
        handle.remove()
    assert cache["blocks.1.attn.hook_z_grad"].shape == (2, 6, 4, 8)
    torch.testing.assert_close(
        cache["blocks.1.attn.hook_z_grad"], grad.unflatten(-1, (4, 8)), atol=1e-5, rtol=1e-4
    )


def test_pos_slice_and_remove_batch_dim(bridge, tokens):
    with torch.no_grad():
        _, cache = bridge.run_with_cache(
            tokens[:1], names_filter=["blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern"], pos_slice=-1
        )
        _, squeezed = bridge.run_with_cache(
            tokens[:1], names_filter="blocks.0.hook_resid_pre", remove_batch_dim=True
        )
    assert cache["blocks.0.hook_resid_pre"].shape == (1, 1, 32)  # TransformerLens: an int keeps the axis
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, 4, 1, 6)  # patterns: the query axis
    assert squeezed["blocks.0.hook_resid_pre"].shape == (6, 32)


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_bridge_names_gates_and_the_cost_of_hook_result():
    """Names on the real model, and what switching hook_result on costs (printed)."""
    import time

    bridge = lm.load("smollm2-135m", backend="bridge")
    tokens = lm.to_tokens(bridge, "The Eiffel Tower is in the city of")
    seen = []
    bridge.run_with_hooks(
        tokens, fwd_hooks=[("blocks.0.hook_resid_pre", lambda a, hook: seen.append(hook.name))]
    )
    assert seen == ["blocks.0.hook_resid_pre"]

    def timed(fn, n=5):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return sorted(times)[n // 2]

    with torch.no_grad():
        off = timed(lambda: bridge(tokens))
        cached = timed(
            lambda: bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_result"))
        )
        bridge.set_use_attn_result(True)
        on = timed(lambda: bridge(tokens))
        bridge.set_use_attn_result(False)
    print(
        f"\nSmolLM2 bridge forward, 9 tokens: {off * 1e3:.0f} ms; use_attn_result on: {on * 1e3:.0f} ms; "
        f"caching every hook_result (switched on for the call): {cached * 1e3:.0f} ms"
    )
