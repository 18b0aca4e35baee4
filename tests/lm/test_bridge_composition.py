"""``lm.load(backend="bridge")`` gives one object with both layers of changes to TransformerLens's
bridge: the fixes of :mod:`hooked.lm.backends.bridge_fixes` (key-value cache, keyword token batches, the
padding warning, checked replacements) and the hook methods of :mod:`hooked.lm.backends.bridge`
(names asked for, gated hooks switched on, ``metric=``). Generation and the prefix-reusing patching
sweep run on it with hooks attached by alias and by gated name, with the numbers of ``wrap``."""

from __future__ import annotations

import pytest
import torch

from hooked import HookReturnError, lm
from hooked.lm.backends.bridge import HookedBridge, hooked_bridge
from hooked.lm.backends.bridge_fixes import _BridgeInputs, fix_bridge
from interventions.patching import patching_sweep

TEXTS = ["the cat sat on the big red mat", "a dog ran"]


def test_the_loaded_bridge_has_the_fixes_and_the_hook_methods(tiny):
    model = tiny["bridge"]
    assert isinstance(model, HookedBridge) and isinstance(model, _BridgeInputs)
    mro = type(model).__mro__
    assert mro.index(_BridgeInputs) < mro.index(HookedBridge)  # fixes wrap the hook methods
    assert hooked_bridge(model) is model and fix_bridge(model) is model and type(model) is mro[0]


def test_either_order_of_applying_them_gives_the_same_class():
    from transformer_lens.model_bridge import TransformerBridge

    from tests.lm.tiny_models import tiny_bridge

    first, second = tiny_bridge("llama"), tiny_bridge("llama")
    for model in (first, second):
        model.__class__ = TransformerBridge  # as TransformerLens booted it
    hooked_bridge(fix_bridge(first))
    fix_bridge(hooked_bridge(second))
    assert type(first) is type(second)
    assert isinstance(first, HookedBridge) and isinstance(first, _BridgeInputs)


def test_a_keyword_batch_with_alias_names_and_checked_replacements(tiny):
    bridge, wrap = tiny["bridge"], tiny["wrap"]
    batch = lm.tokenize(bridge, TEXTS)
    real = batch["attention_mask"].bool()
    seen = []

    def record(act, hook):
        seen.append(hook.name)

    alias = "blocks.1.hook_resid_pre"  # canonical: blocks.1.hook_in
    with torch.no_grad():
        bridge.run_with_hooks(**batch, fwd_hooks=[(alias, record)])
        _, bc = bridge.run_with_cache(**batch, names_filter=[alias])
        _, wc = wrap.run_with_cache(**batch, names_filter=["model.layers.1.hook_in"])
    assert seen == [alias]
    assert list(bc) == [alias]
    torch.testing.assert_close(bc[alias][real], wc["model.layers.1.hook_in"][real], atol=1e-5, rtol=1e-5)

    def float64_edit(act, hook):
        return act.double()

    for name in (alias, "blocks.1.attn.hook_result"):  # an alias and a gated hook
        with pytest.raises(HookReturnError, match=f"float64_edit at hook point '{name}'"):
            bridge.run_with_hooks(**batch, fwd_hooks=[(name, float64_edit)])
    assert not bridge.cfg.use_attn_result  # the gate went back off after the error
    assert not any(hp.has_hooks() for hp in bridge.hook_dict.values())


def _zero_head_0(act, hook):
    act = act.clone()
    act[:, :, 0] = 0
    return act


def test_generate_with_alias_and_gated_hooks_equals_wrap(tiny):
    bridge, wrap = tiny["bridge"], tiny["wrap"]
    prompts = ["the cat sat on", "a dog"]
    names = []

    def record(act, hook):
        names.append(hook.name)

    plain = lm.generate(bridge, prompts, 6)
    assert plain == lm.generate(wrap, prompts, 6) == lm.generate(tiny["hf"], prompts, 6)
    lm.generate(bridge, prompts, 6, fwd_hooks=[("blocks.0.hook_resid_pre", record)])
    assert names == ["blocks.0.hook_resid_pre"] * 6  # the prompt, then 5 fed-back tokens
    # zeroing head 0's output: through the gated per-head results on the bridge, through hook_z on
    # wrap (a head's result is its z times its slice of W_O, no bias), the same tokens
    by_result = lm.generate(bridge, prompts, 6, fwd_hooks=[("blocks.1.attn.hook_result", _zero_head_0)])
    by_z = lm.generate(wrap, prompts, 6, fwd_hooks=[(lm.act_name(wrap, "z", 1), _zero_head_0)])
    by_bridge_z = lm.generate(bridge, prompts, 6, fwd_hooks=[("blocks.1.attn.hook_z", _zero_head_0)])
    assert by_result == by_z == by_bridge_z
    assert not bridge.cfg.use_attn_result


def test_prefix_reuse_sweep_on_alias_and_gated_names_equals_full_and_wrap(tiny):
    bridge, wrap = tiny["bridge"], tiny["wrap"]
    base = lm.to_tokens(bridge, "the cat sat on the big red mat")
    source = lm.to_tokens(bridge, "a dog ran to the old blue house")

    def metric(logits):
        return logits[:, -1, 5] - logits[:, -1].logsumexp(-1)

    kw = dict(positions=range(base.shape[1]), chunk=7)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_result"]
    wrap_hooks = ["model.layers.0.hook_in", "model.layers.1.hook_in", lm.act_name(wrap, "z", 1)]
    reused = patching_sweep(bridge, base, source, hooks, metric, reuse_prefix=True, **kw)
    full = patching_sweep(bridge, base, source, hooks, metric, reuse_prefix=False, **kw)
    on_wrap = patching_sweep(wrap, base, source, wrap_hooks, metric, reuse_prefix=True, **kw)
    torch.testing.assert_close(reused, full, atol=1e-5, rtol=1e-5)
    # every head's result at a position = the attention output there = every head's z there
    torch.testing.assert_close(reused, on_wrap, atol=1e-4, rtol=1e-4)
    assert reused[:, 1:].std() > 0.01  # the patches do something
    assert not bridge.cfg.use_attn_result


def test_bfloat16_heads_toolkit_and_attribution_on_both_backends(tiny_folder):
    """A bfloat16 model through ``lm.load`` on a padded batch: head edits change the logits, the lens
    ends at the logits, the toolkit keeps the dtype, and attribution agrees between the backends."""
    from interventions.attribution import attribution_patching

    found = {}
    for backend in ("wrap", "bridge"):
        model = lm.load(tiny_folder, backend=backend, dtype="bfloat16")
        batch = lm.tokenize(model, ["the cat sat on the mat", "a dog ran"])
        other = lm.tokenize(model, ["the dog sat on the rug", "a cat ran"])
        z, pattern = lm.act_name(model, "z", 1), lm.act_name(model, "pattern", 1)
        with torch.no_grad():
            logits, cache = model.run_with_cache(**batch, names_filter=lm.stream_hooks(model) + [pattern])
            ablated = model.run_with_hooks(**batch, fwd_hooks=[(z, _zero_head_0)])
        assert logits.dtype == cache[z].dtype == cache[pattern].dtype == torch.bfloat16
        assert not torch.equal(ablated, logits)
        lens = lm.logit_lens(model, cache, pos_slice=-1)
        assert lens.dtype == torch.bfloat16 and torch.equal(lens[-1], logits[:, -1])
        stack = lm.decompose_resid(model, cache, pos_slice=-1)
        dla = lm.logit_attrs(model, cache, stack, 5, 6, pos_slice=-1)
        want = (logits[:, -1, 5] - logits[:, -1, 6]).float()
        torch.testing.assert_close(dla.float().sum(0), want, atol=0.1, rtol=0.05)
        found[backend] = attribution_patching(
            model, batch, other, lm.residual_hooks(model), _logit_5_minus_6, positions=range(6)
        )
    assert found["wrap"].abs().max() > 0
    torch.testing.assert_close(found["bridge"], found["wrap"], atol=0.05, rtol=0.05)


def _logit_5_minus_6(logits):
    return logits[:, -1, 5] - logits[:, -1, 6]
