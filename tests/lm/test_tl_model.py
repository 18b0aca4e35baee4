"""TransformerLens's model API on ``wrap`` (hooked.lm.backends.tl_model) against TransformerLens's
own bridge on the same weights: tokens, forward return types, loss, weights, config, views, generate."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from tests.lm.tiny_models import tiny_bridge, tiny_hf, tiny_tokenizer, tokenizer_folder

TEXT = "the cat sat on the mat"
TEXTS = ["a dog ran", "the big red house is in the old city"]


@pytest.fixture(scope="module")
def pair(tiny):
    return tiny["wrap"], tiny["bridge"]


def test_wrap_is_in_eval_mode_like_its_model(pair):
    wrap, bridge = pair
    assert wrap.training is False and wrap.module.training is False and bridge.training is False


def test_to_tokens_as_transformer_lens(pair):
    wrap, bridge = pair
    for kwargs in ({}, {"prepend_bos": False}, {"prepend_bos": True}):
        assert torch.equal(wrap.to_tokens(TEXT, **kwargs), bridge.to_tokens(TEXT, **kwargs))
    assert wrap.to_tokens(TEXT)[0, 0] == wrap.tokenizer.bos_token_id  # TransformerLens's default
    for side in ("left", "right"):
        assert torch.equal(
            wrap.to_tokens(TEXTS, padding_side=side), bridge.to_tokens(TEXTS, padding_side=side)
        )
    assert torch.equal(wrap.to_tokens(TEXTS), bridge.to_tokens(TEXTS))  # right padding by default


def test_token_strings_as_transformer_lens(pair):
    wrap, bridge = pair
    ids = bridge.to_tokens(TEXT)
    for arg in (TEXT, TEXTS, ids, ids[0], ids[0, 2]):
        assert wrap.to_str_tokens(arg) == bridge.to_str_tokens(arg)
    assert wrap.to_str_tokens(TEXT, prepend_bos=False) == bridge.to_str_tokens(TEXT, prepend_bos=False)
    for arg in (ids, ids[0], ids[0, 3], 5):
        assert wrap.to_string(arg) == bridge.to_string(arg)
    assert wrap.to_single_token(" cat") == bridge.to_single_token(" cat") == wrap.tokenizer.vocab["cat"]
    with pytest.raises(ValueError, match="2 tokens"):
        wrap.to_single_token("the cat")
    text = "the cat sat on the cat"
    for mode in ("first", "last"):
        for bos in (True, False):
            got = wrap.get_token_position("cat", text, mode=mode, prepend_bos=bos)
            assert got == bridge.get_token_position("cat", text, mode=mode, prepend_bos=bos)
    assert wrap.get_token_position("cat", text, mode="last") == 6  # BOS, the, cat, sat, on, the, cat
    with pytest.raises(ValueError, match="is not in input"):
        wrap.get_token_position("dog", text)


def test_forward_takes_text_and_return_types(pair):
    wrap, bridge = pair
    ids = bridge.to_tokens(TEXT)
    torch.testing.assert_close(wrap(TEXT), bridge(TEXT))
    torch.testing.assert_close(wrap(TEXT), wrap(ids))
    torch.testing.assert_close(wrap(TEXT, prepend_bos=False), bridge(TEXT, prepend_bos=False))
    assert wrap(TEXT, prepend_bos=False).shape[1] == ids.shape[1] - 1
    torch.testing.assert_close(wrap(ids, return_type="loss"), bridge(ids, return_type="loss"))
    per_token = wrap(ids, return_type="loss", loss_per_token=True)
    torch.testing.assert_close(per_token, bridge(ids, return_type="loss", loss_per_token=True))
    # the loss by hand: next-token cross-entropy of the logits
    logits = wrap(ids)
    by_hand = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
    torch.testing.assert_close(per_token[0], by_hand)
    both = wrap(ids, return_type="both")
    torch.testing.assert_close(both[0], logits)
    torch.testing.assert_close(both[1], by_hand.mean())
    assert wrap(ids, return_type=None) is None
    torch.testing.assert_close(wrap(TEXTS, return_type="loss"), bridge(TEXTS, return_type="loss"))
    torch.testing.assert_close(
        wrap.loss_fn(logits, ids, per_token=True), bridge.loss_fn(logits, ids, per_token=True)
    )
    with pytest.raises(ValueError, match="return_type"):
        wrap(ids, return_type="probs")


def test_run_with_hooks_takes_return_type_and_text(pair):
    wrap, bridge = pair
    seen = []

    def record(act, hook):
        seen.append(hook.name)

    loss = wrap.run_with_hooks(TEXT, return_type="loss", fwd_hooks=[("blocks.0.attn.hook_z", record)])
    torch.testing.assert_close(loss, bridge(TEXT, return_type="loss"))
    assert seen == ["blocks.0.attn.hook_z"]
    logits, cache = wrap.run_with_cache(TEXT)
    torch.testing.assert_close(logits, bridge(TEXT))
    assert cache["resid_pre", 1].shape[1] == wrap.to_tokens(TEXT).shape[1]


def test_weights_as_transformer_lens_llama(pair):
    check_weights("llama", *pair)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_weights_as_transformer_lens(family):
    bridge = tiny_bridge(family)
    check_weights(family, lm.wrap_lm(tiny_hf(family), tiny_tokenizer(tokenizer_folder())), bridge)


def check_weights(family, wrap, bridge):
    names = ["W_U", "b_U", "W_E", "W_Q", "W_K", "W_V", "W_O"]
    names += ["b_Q", "b_K", "b_V", "b_O"] if family != "llama" else []
    names += ["W_pos"] if family == "gpt2" else []
    for name in names:
        torch.testing.assert_close(getattr(wrap, name), getattr(bridge, name), msg=name)
    torch.testing.assert_close(wrap.OV.AB, bridge.OV.AB)
    torch.testing.assert_close(wrap.QK.AB, bridge.QK.AB)
    torch.testing.assert_close(wrap.blocks[1].attn.W_Q, bridge.blocks[1].attn.W_Q)
    torch.testing.assert_close(wrap.unembed.b_U, bridge.unembed.b_U)
    for field in (
        "n_layers",
        "n_heads",
        "d_model",
        "d_head",
        "d_vocab",
        "n_ctx",
        "d_mlp",
        "normalization_type",
        "attn_only",
    ):
        assert getattr(wrap.cfg, field) == getattr(bridge.cfg, field), field
    assert str(wrap.cfg.device) == str(bridge.cfg.device)


def test_head_weights_reproduce_the_heads_outputs(tiny):
    """W_V, W_O by an independent computation: each head's hook_z times W_O, summed, plus b_O, is
    the attention output; grouped-query W_K / W_V keep the key-value heads."""
    wrap = tiny["wrap"]
    _, cache = wrap.run_with_cache(TEXT, names_filter=["blocks.1.attn.hook_z", "blocks.1.hook_attn_out"])
    z = cache["blocks.1.attn.hook_z"]
    out = torch.einsum("bphd,hdm->bpm", z, wrap.W_O[1])
    torch.testing.assert_close(out, cache["blocks.1.hook_attn_out"])
    assert wrap.W_K.shape == (2, 2, 32, 8) and wrap.W_Q.shape == (2, 4, 32, 8)
    with pytest.raises(AttributeError, match="b_Q"):
        wrap.TLModelAPI_b_Q = type(wrap).b_Q.fget(wrap)


def test_views_reach_hook_points(pair):
    wrap, _ = pair
    assert wrap.blocks[0].attn.hook_z is wrap.hook_dict[wrap.hook_name_aliases["blocks.0.attn.hook_z"]]
    assert (
        wrap.blocks[-1].hook_resid_post is wrap.hook_dict[wrap.hook_name_aliases["blocks.1.hook_resid_post"]]
    )
    assert len(wrap.blocks) == 2 and [v._prefix for v in wrap.blocks] == ["blocks.0", "blocks.1"]
    with pytest.raises(AttributeError, match="blocks.0.nothing"):
        wrap.blocks[0].nothing  # noqa: B018


def test_generate_on_text_as_transformer_lens(pair):
    wrap, bridge = pair
    kw = dict(max_new_tokens=5, do_sample=False, verbose=False)
    # the bridge's own key-value cache diverges after the first token (TransformerLens 4.3); its
    # uncached generation is the reference
    want = bridge.generate(TEXT, use_past_kv_cache=False, **kw)
    assert wrap.generate(TEXT, **kw) == want
    ids = bridge.to_tokens(TEXT)
    assert torch.equal(wrap.generate(ids, **kw), bridge.generate(ids, use_past_kv_cache=False, **kw))


def test_enable_compatibility_mode_warns_on_wrap(pair):
    wrap, _ = pair
    with pytest.warns(UserWarning, match="not processed"):
        wrap.enable_compatibility_mode(disable_warnings=True)


def test_cache_methods_on_wrap_as_transformer_lens(pair):
    """TransformerLens's cache methods on a wrap cache: equal to the bridge's own (TransformerLens's
    ActivationCache) where no norm is applied, and to hooked.lm's functions of (model, cache)."""
    from transformer_lens import ActivationCache as TLCache

    wrap, bridge = pair
    _, wc = wrap.run_with_cache(TEXT)
    _, ours = bridge.run_with_cache(TEXT)
    acts = {}
    for name in bridge.hook_dict:  # every name TransformerLens may read, alias or canonical
        try:
            acts[name] = ours[name]
        except KeyError:
            pass
    bc = TLCache(acts, bridge)
    got, labels = wc.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
    want, want_labels = bc.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
    torch.testing.assert_close(got, want)
    assert labels == want_labels
    got, labels = wc.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    want, want_labels = bc.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    torch.testing.assert_close(got, want)
    assert labels == want_labels
    torch.testing.assert_close(wc.stack_activation("resid_post"), bc.stack_activation("resid_post"))
    torch.testing.assert_close(wc.stack_activation("pattern", 1), bc.stack_activation("pattern", 1))
    stack = wc.decompose_resid(layer=-1)
    torch.testing.assert_close(
        wc.apply_ln_to_stack(stack, layer=-1), lm.apply_ln_to_stack(wrap, wc, stack, -1)
    )
    torch.testing.assert_close(wc.stack_head_results(layer=-1), lm.stack_head_results(wrap, wc, -1))
    assert wc.cache_dict.keys() == wc.to_dict().keys()
    kept = wc.remove_batch_dim().cpu()  # the methods are kept through new caches
    torch.testing.assert_close(kept.stack_activation("resid_pre"), wc.stack_activation("resid_pre")[:, 0])
    torch.testing.assert_close(
        ours.accumulated_resid(layer=-1), bc.accumulated_resid(layer=-1)
    )  # on the bridge
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        wc.nothing  # noqa: B018
