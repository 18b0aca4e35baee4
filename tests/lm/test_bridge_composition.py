"""``lm.load(backend="bridge")`` gives one object: TransformerLens's bridge switched once to one
subclass, :class:`hooked.lm.backends.bridge.HookedBridge` (key-value cache, keyword token batches,
the padding warning, checked replacements, names asked for, gated hooks switched on, ``metric=``),
refused on a TransformerLens outside the pinned range. Generation and the prefix-reusing patching
sweep run on it with hooks attached by alias and by gated name, with the numbers of ``wrap``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from hooked import HookReturnError, lm
from hooked.lm.backends.bridge import (
    TRANSFORMER_LENS_RANGE,
    HookedBridge,
    TransformerLensVersionError,
    check_transformer_lens,
    hooked_bridge,
)
from interventions.patching import patching_sweep

TEXTS = ["the cat sat on the big red mat", "a dog ran"]


def _kv_fixed(model):
    updates = [m._update_kv_cache for m in model.modules() if hasattr(m, "_update_kv_cache")]
    return bool(updates) and all(getattr(u, "_hooked_reads_cache_kwarg", False) for u in updates)


def test_the_loaded_bridge_is_one_subclass_applied_once(tiny):
    model = tiny["bridge"]
    assert type(model) is HookedBridge and type(model).__mro__[1] is TransformerBridge
    assert _kv_fixed(model)  # every attention component reads the cache passed as cache=
    assert hooked_bridge(model) is model and type(model) is HookedBridge  # idempotent


def test_hooked_bridge_of_a_bridge_booted_elsewhere_gives_the_same_class():
    from tests.lm.tiny_models import tiny_hf, tiny_tokenizer, tokenizer_folder

    tokenizer = tiny_tokenizer(tokenizer_folder())
    raw = TransformerBridge.boot_transformers("tiny-llama", hf_model=tiny_hf("llama"), tokenizer=tokenizer)
    assert type(raw) is TransformerBridge and not _kv_fixed(raw)
    assert hooked_bridge(raw) is raw and type(raw) is HookedBridge and _kv_fixed(raw)

    class Other(TransformerBridge):
        pass

    raw.__class__ = Other  # a subclass with methods of its own: not switched
    with pytest.raises(TypeError, match="only TransformerBridge itself"):
        hooked_bridge(raw)
    with pytest.raises(TypeError, match="needs a TransformerLens TransformerBridge"):
        hooked_bridge(torch.nn.Linear(2, 2))


def test_transformer_lens_outside_the_pinned_range_is_refused_naming_the_fixes(monkeypatch):
    lo, hi = TRANSFORMER_LENS_RANGE
    assert check_transformer_lens() is not None  # the installed version is in the range
    for other in (f"{hi[0]}.{hi[1]}.0", f"{lo[0]}.{lo[1] - 1}.9", "5.0.0"):
        with pytest.raises(TransformerLensVersionError, match="cache=") as e:
            check_transformer_lens(other)
        message = str(e.value)
        assert other in message and "_gated_hook_reason" in message and "backend='wrap'" in message
    monkeypatch.setenv("HOOKED_UNPINNED_TRANSFORMER_LENS", "1")
    with pytest.warns(UserWarning, match="cache="):
        assert check_transformer_lens("4.4.0") == "4.4.0"


def test_pyproject_pins_the_range_the_bridge_checks():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    spec = re.search(r'"transformer-lens([^"]*)"', text).group(1)
    lo, hi = TRANSFORMER_LENS_RANGE
    assert spec == f">={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}"


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
