"""Per-head hook points (``hook_z``, ``hook_pattern``) on ``wrap`` for every decoder family, checked
by hand: plain PyTorch pre-hooks, the model's own eager ``output_attentions``, values read off the
value projection; and the bridge's ``hook_z`` / ``hook_pattern`` give the same numbers."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from tests.lm.tiny_models import FAMILIES, VOCAB, tiny_bridge, tiny_hf

N_HEADS = 4


def batch(seed=0, b=2, p=7, pad=2):
    """Token ids and a left-padding mask (row 1 starts with ``pad`` padding positions).

    ``lm.wrap_lm`` counts each row's positions from its first real token (``positions(mask)``), so
    the transformers model it is compared with is given the same ``position_ids``."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, VOCAB, (b, p), generator=g)
    mask = torch.ones(b, p, dtype=torch.long)
    mask[1, :pad] = 0
    tokens[1, :pad] = 3
    return tokens, mask


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def attn_path(model, layer):
    return model.arch.path(layer, "attn")


def values(model, cache, family, layer):
    """``[batch, pos, kv_heads, d_head]``: the value vectors, read off the value projection by hand."""
    attn = attn_path(model, layer)
    if family == "gpt2":
        v = cache[f"{attn}.c_attn.hook_out"].chunk(3, dim=-1)[2]
        return v.unflatten(-1, (N_HEADS, -1))
    if family == "gpt_neox":
        qkv = cache[f"{attn}.query_key_value.hook_out"].unflatten(-1, (N_HEADS, -1))
        return qkv.chunk(3, dim=-1)[2]
    return cache[f"{attn}.v_proj.hook_out"].unflatten(-1, (-1, cache[f"{attn}.hook_z"].shape[-1]))


def values_hook(model, family, layer):
    attn = attn_path(model, layer)
    return {
        "gpt2": f"{attn}.c_attn.hook_out",
        "gpt_neox": f"{attn}.query_key_value.hook_out",
    }.get(family, f"{attn}.v_proj.hook_out")


@pytest.mark.parametrize("family", FAMILIES)
def test_head_hook_points_are_listed_after_their_attention_module(family):
    model = lm.wrap_lm(tiny_hf(family))
    names = list(model.hook_dict)
    for layer in range(2):
        attn = attn_path(model, layer)
        i = names.index(f"{attn}.hook_out")
        assert names[i + 1 : i + 3] == [f"{attn}.hook_z", f"{attn}.hook_pattern"]
    tokens, _ = batch()
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_z", "hook_pattern")))
    d_head = model.module.config.hidden_size // N_HEADS if family not in ("gemma", "gemma2") else 16
    assert cache[f"{attn_path(model, 1)}.hook_z"].shape == (2, 7, N_HEADS, d_head)
    assert cache[f"{attn_path(model, 1)}.hook_pattern"].shape == (2, N_HEADS, 7, 7)


@pytest.mark.parametrize("family", FAMILIES)
def test_zeroing_a_head_in_hook_z_equals_zeroing_its_slice_of_the_projection_input(family):
    hf = tiny_hf(family)
    model = lm.wrap_lm(hf)
    tokens, mask = batch()
    layer, head = 1, 2
    z_name = f"{attn_path(model, layer)}.hook_z"

    def ablate(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    with torch.no_grad():
        plain = hf(tokens, attention_mask=mask, position_ids=positions(mask)).logits
        ablated = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(z_name, ablate)])
        o_proj = model.arch.part(layer, "o_proj")
        d_head = o_proj.weight.shape[0 if family == "gpt2" else 1] // N_HEADS  # GPT-2's Conv1D is [in, out]

        def by_hand(module, args):
            x = args[0].clone()
            x[..., head * d_head : (head + 1) * d_head] = 0
            return (x,)

        handle = o_proj.register_forward_pre_hook(by_hand)
        try:
            want = hf(tokens, attention_mask=mask, position_ids=positions(mask)).logits
        finally:
            handle.remove()
    assert not torch.allclose(ablated, plain, atol=1e-4)  # the edit changes the logits
    torch.testing.assert_close(ablated, want, atol=1e-6, rtol=1e-6)
    assert not o_proj._forward_pre_hooks  # nothing left attached


@pytest.mark.parametrize("family", FAMILIES)
def test_pattern_is_eager_output_attentions_and_reading_it_changes_nothing(family):
    hf = tiny_hf(family)
    model = lm.wrap_lm(hf)
    tokens, mask = batch()
    before = hf.config._attn_implementation
    patterns = [f"{attn_path(model, i)}.hook_pattern" for i in range(2)]
    with torch.no_grad():
        plain = hf(tokens, attention_mask=mask, position_ids=positions(mask)).logits
        logits, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=patterns)
        assert hf.config._attn_implementation == before  # switched back
        hf.set_attn_implementation("eager")
        eager = hf(tokens, attention_mask=mask, position_ids=positions(mask), output_attentions=True)
        hf.set_attn_implementation(before)
    assert torch.equal(logits, plain)  # reading patterns leaves the outputs bit-identical
    for layer, name in enumerate(patterns):
        pattern = cache[name]
        torch.testing.assert_close(pattern, eager.attentions[layer], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(2, N_HEADS, 7), atol=1e-5, rtol=0)
        future = torch.ones(7, 7).triu(1)
        assert torch.all(pattern[:, :, 2:] * future[2:] == 0)  # causal (queries that are not padding)
        assert torch.all(pattern[1, :, 2:, :2] == 0)  # real queries never attend to padding


def gpt2_pattern_by_hand(hf, layer, x, mask):
    """softmax(q k^T / sqrt(d_head) + causal and padding mask) of GPT-2 layer ``layer``, from the
    attention's input ``x`` (the output of ``ln_1``) and the fused ``c_attn`` weights."""
    d_model = hf.config.n_embd
    d_head = d_model // N_HEADS
    qkv = x @ hf.transformer.h[layer].attn.c_attn.weight + hf.transformer.h[layer].attn.c_attn.bias
    q, k, _ = qkv.split(d_model, dim=-1)
    q, k = (t.unflatten(-1, (N_HEADS, d_head)).transpose(1, 2) for t in (q, k))  # [b, head, pos, d]
    scores = q @ k.transpose(-1, -2) / d_head**0.5
    p = x.shape[1]
    allowed = torch.ones(p, p).tril().bool()[None, None] & mask.bool()[:, None, None, :]
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1)


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_gpt2_pattern_is_the_softmax_of_scaled_scores_by_hand(backend):
    hf = tiny_hf("gpt2")
    tokens, mask = batch()
    layer = 1
    with torch.no_grad():
        if backend == "wrap":
            model, name = lm.wrap_lm(hf), f"transformer.h.{layer}.attn.hook_pattern"
            seen = []  # the attention's input, by a plain PyTorch hook on ln_1
            handle = hf.transformer.h[layer].ln_1.register_forward_hook(lambda m, i, o: seen.append(o))
            try:
                _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=name)
            finally:
                handle.remove()
            x = seen[0]
        else:
            model, name = tiny_bridge("gpt2"), f"blocks.{layer}.attn.hook_pattern"
            ln = f"blocks.{layer}.ln1.hook_out"
            _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name, ln])
            x = cache[ln]
        want = gpt2_pattern_by_hand(hf, layer, x, mask)
    real = mask.bool()  # queries at padding positions attend to nothing real
    got = cache[name].transpose(1, 2)[real]  # [real queries, head, key]
    torch.testing.assert_close(got, want.transpose(1, 2)[real], atol=1e-6, rtol=1e-5)
    assert (cache[name][1, :, 2:, :2] == 0).all()  # row 1's two pads get no weight


@pytest.mark.parametrize("family", FAMILIES)
def test_editing_the_pattern_is_attention_with_that_pattern(family):
    """Knock attention out: every query of head 1 attends to position 0 only; its output must then be
    the value at position 0 (by hand, from the value projection), at every position."""
    hf = tiny_hf(family)
    model = lm.wrap_lm(hf)
    tokens, _ = batch()
    layer, head = 0, 1
    attn = attn_path(model, layer)

    def knock_out(pattern, hook):
        pattern = pattern.clone()
        pattern[:, head] = 0
        pattern[:, head, :, 0] = 1
        return pattern

    with torch.no_grad():
        plain = hf(tokens).logits
        names = [f"{attn}.hook_z", values_hook(model, family, layer)]
        with model.hooks(fwd_hooks=[(f"{attn}.hook_pattern", knock_out)]):
            edited, cache = model.run_with_cache(tokens, names_filter=names)
        same = model.run_with_hooks(tokens, fwd_hooks=[(f"{attn}.hook_pattern", lambda p, hook: p.clone())])
    v = values(model, cache, family, layer)
    kv_head = head // (N_HEADS // v.shape[2])
    z = cache[f"{attn}.hook_z"]
    torch.testing.assert_close(
        z[:, :, head], v[:, :1, kv_head].expand_as(z[:, :, head]), atol=1e-6, rtol=1e-5
    )
    assert not torch.allclose(edited, plain, atol=1e-4)
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)  # an unchanged copy: recomputed, same


def test_the_attention_switch_is_undone_with_the_last_hook_even_when_the_forward_raises():
    hf = tiny_hf("llama")
    model = lm.wrap_lm(hf)
    tokens, _ = batch()
    p0, p1 = (f"{attn_path(model, i)}.hook_pattern" for i in range(2))
    assert hf.config._attn_implementation == "sdpa"
    with model.hooks(fwd_hooks=[(p0, lambda p, hook: None)]):
        assert hf.config._attn_implementation == "hooked_sdpa"
        with model.hooks(fwd_hooks=[(p1, lambda p, hook: None)]):
            assert hf.config._attn_implementation == "hooked_sdpa"
        assert hf.config._attn_implementation == "hooked_sdpa"
    assert hf.config._attn_implementation == "sdpa"

    def boom(p, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, fwd_hooks=[(p1, boom)])
    assert hf.config._attn_implementation == "sdpa"
    assert not model.hook_dict[p1].has_hooks()


def test_a_pattern_replacement_of_the_wrong_shape_names_the_hook():
    model = lm.wrap_lm(tiny_hf("llama"))
    tokens, _ = batch()
    name = f"{attn_path(model, 0)}.hook_pattern"
    with pytest.raises(Exception, match="hook_pattern"):
        model.run_with_hooks(tokens, fwd_hooks=[(name, lambda p, hook: p[:, :2])])


def test_a_model_of_unknown_layout_is_wrapped_without_heads():
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x)

    model = lm.wrap_lm(Tiny())
    assert model.arch is None
    assert not [n for n in model.hook_dict if n.endswith(("hook_z", "hook_pattern"))]
    with pytest.raises(ValueError, match="known layout"):
        lm.stream_hooks(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_bridge_hook_z_and_pattern_equal_wrap(family):
    wrapped = lm.wrap_lm(tiny_hf(family))
    bridge = tiny_bridge(family)
    tokens, mask = batch()
    wnames = [f"{attn_path(wrapped, i)}.hook_{k}" for i in range(2) for k in ("z", "pattern")]
    bnames = [f"blocks.{i}.attn.hook_{k}" for i in range(2) for k in ("z", "pattern")]
    with torch.no_grad():
        # both count positions from each row's first real token (GPT-2 has absolute positions)
        _, wc = wrapped.run_with_cache(tokens, attention_mask=mask, names_filter=wnames)
        _, bc = bridge.run_with_cache(tokens, attention_mask=mask, names_filter=bnames)
    assert sorted(bc) == sorted(bnames)  # keys: the names asked for (in the order they ran)
    real = mask.bool()  # padding positions (queries) hold whatever each backend makes of them
    for w, b in zip(wnames, bnames):
        got, want = bc[b], wc[w]
        if w.endswith("hook_pattern"):
            got, want = got.transpose(1, 2), want.transpose(1, 2)  # [batch, query, head, key]
        torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_heads_on_wrap_equal_the_bridge():
    wrapped = lm.load("smollm2-135m", backend="wrap")
    bridge = lm.load("smollm2-135m", backend="bridge")
    tokens = lm.to_tokens(wrapped, "The Eiffel Tower is in the city of")
    names = {"z": [lm.act_name(m, "z", 20) for m in (wrapped, bridge)]}
    names["pattern"] = [lm.act_name(m, "pattern", 20) for m in (wrapped, bridge)]
    with torch.no_grad():
        _, wc = wrapped.run_with_cache(tokens, names_filter=[names["z"][0], names["pattern"][0]])
        _, bc = bridge.run_with_cache(tokens, names_filter=[names["z"][1], names["pattern"][1]])
    assert wc[names["z"][0]].shape == (1, 9, 9, 64) and wc[names["pattern"][0]].shape == (1, 9, 9, 9)
    for w, b in names.values():
        torch.testing.assert_close(wc[w], bc[b], atol=1e-4, rtol=1e-4)


def test_two_wrappers_of_one_model_share_the_switch_and_a_failed_switch_attaches_nothing(monkeypatch):
    hf = tiny_hf("llama")
    first, second = lm.wrap_lm(hf), lm.wrap_lm(hf)
    name = f"{attn_path(first, 0)}.hook_pattern"
    with first.hooks(fwd_hooks=[(name, lambda p, hook: None)]):
        with second.hooks(fwd_hooks=[(name, lambda p, hook: None)]):
            assert hf.config._attn_implementation == "hooked_sdpa"
        assert hf.config._attn_implementation == "hooked_sdpa"
    assert hf.config._attn_implementation == "sdpa"

    def refuse(impl):
        raise ValueError(f"cannot use {impl}")

    monkeypatch.setattr(hf, "set_attn_implementation", refuse)
    with pytest.raises(ValueError, match="hooked_sdpa"):
        first.run_with_hooks(batch()[0], fwd_hooks=[(name, lambda p, hook: None)])
    assert not first.hook_dict[name].has_hooks() and hf.config._attn_implementation == "sdpa"
