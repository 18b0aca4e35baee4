"""A filter that matches gated hooks whose flags exclude each other (issue 27 item 5): on the bridge,
``lambda n: n.startswith("blocks.0.")`` matches ``hook_attn_in`` (``use_attn_in``) and the split
``hook_q/k/v_input`` (``use_split_qkv_input``), which TransformerLens 4.3 cannot switch on
together. TransformerLens runs such a filter (skipping every gated-off match with a warning); here
every flag that can be switched on is, the excluded one is named in a warning and its hooks are left
off, and nothing stays switched on afterwards. Names given as strings still raise."""

from __future__ import annotations

import pytest
import torch

from tests.lm.tiny_models import VOCAB, tiny_bridge

FLAGS = ("use_attn_result", "use_hook_mlp_in", "use_attn_in", "use_split_qkv_input")
BLOCK0 = lambda n: n.startswith("blocks.0.")  # noqa: E731


@pytest.fixture
def bridge():
    return tiny_bridge("llama")


@pytest.fixture
def tokens():
    return torch.randint(4, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))


def flags(bridge):
    return {f: bool(getattr(bridge.cfg, f, False)) for f in FLAGS}


def exclusive_pair(names):
    return any(n.endswith("hook_attn_in") for n in names) and any(n.endswith("_input") for n in names)


def test_a_filter_over_exclusive_gated_hooks_runs_with_what_can_be_switched_on(bridge, tokens):
    off = flags(bridge)
    assert not any(off.values())
    with torch.no_grad():
        want = bridge(tokens)
    seen = []
    record = lambda act, hook: seen.append(hook.name)  # noqa: E731
    with pytest.warns(UserWarning, match="cannot be switched on") as caught:
        with torch.no_grad():
            got = bridge.run_with_hooks(tokens, fwd_hooks=[(BLOCK0, record)])
    torch.testing.assert_close(got, want)
    message = " ".join(str(w.message) for w in caught)
    assert "use_split_qkv_input" in message or "use_attn_in" in message
    assert not exclusive_pair(seen)  # one of the two excluded, the other ran
    assert any(n.endswith(("hook_attn_in", "_input")) for n in seen)
    for gated in ("attn.hook_result", "hook_mlp_in"):  # switched on for the call: they ran
        assert f"blocks.0.{gated}" in seen
    assert flags(bridge) == off  # and off again

    with pytest.warns(UserWarning, match="cannot be switched on"):
        with torch.no_grad():
            _, cache = bridge.run_with_cache(tokens, names_filter=BLOCK0)
    assert "blocks.0.attn.hook_result" in cache and not exclusive_pair(list(cache))
    assert flags(bridge) == off

    with pytest.warns(UserWarning, match="cannot be switched on"):
        bridge.add_hook(BLOCK0, record)
    seen.clear()
    with torch.no_grad():
        bridge(tokens)
    assert "blocks.0.attn.hook_result" in seen and not exclusive_pair(seen)
    bridge.reset_hooks()
    assert flags(bridge) == off


def test_transformer_lens_runs_the_same_filter(tokens):
    """The reference: TransformerLens's own run_with_hooks runs it too (gated matches skipped)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = tiny_bridge("llama")
    seen = []
    with pytest.warns(UserWarning, match="gated-off"):
        with torch.no_grad():
            TransformerBridge.run_with_hooks(
                bridge, tokens, fwd_hooks=[(BLOCK0, lambda a, hook: seen.append(hook.name))]
            )
    assert seen and not any(n.endswith(("_input", "attn_in", "mlp_in", "hook_result")) for n in seen)


def test_names_given_as_strings_still_raise_when_their_flags_exclude_each_other(bridge, tokens):
    names = ["blocks.0.hook_attn_in", "blocks.0.hook_q_input"]
    with pytest.raises(ValueError, match="mutually exclusive"):
        bridge.run_with_hooks(tokens, fwd_hooks=[(n, lambda a, hook: None) for n in names])
    with pytest.raises(ValueError, match="mutually exclusive"):
        bridge.run_with_cache(tokens, names_filter=names)
    assert not any(flags(bridge).values())
