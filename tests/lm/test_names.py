"""TransformerLens's naming shorthand: ``act_name`` (TL's ``get_act_name``) and ``cache["resid_pre", 3]``
on any cache, through the aliases a model gives its caches."""

from __future__ import annotations

import pytest
import torch

from hooked import ActivationCache
from hooked.names import act_name
from tests.toys import MLPStack

CASES = [
    (("resid_pre", 3), "blocks.3.hook_resid_pre"),
    (("resid_mid", 0), "blocks.0.hook_resid_mid"),
    (("attn_out", 2), "blocks.2.hook_attn_out"),
    (("z", 2), "blocks.2.attn.hook_z"),
    (("pattern", 1), "blocks.1.attn.hook_pattern"),
    (("attn", 1), "blocks.1.attn.hook_pattern"),
    (("q", 1, "a"), "blocks.1.attn.hook_q"),
    (("pre", 2), "blocks.2.mlp.hook_pre"),
    (("mlp_post", 2), "blocks.2.mlp.hook_post"),
    (("scale", 4, "ln1"), "blocks.4.ln1.hook_scale"),
    (("scale",), "ln_final.hook_scale"),
    (("embed",), "hook_embed"),
    (("pos_embed",), "hook_pos_embed"),
    (("k6",), "blocks.6.attn.hook_k"),
    (("scale4ln1",), "blocks.4.ln1.hook_scale"),
    (("pre5",), "blocks.5.mlp.hook_pre"),
    (("blocks.0.hook_resid_pre",), "blocks.0.hook_resid_pre"),
    (("hook_embed",), "hook_embed"),
]


@pytest.mark.parametrize(("args", "want"), CASES)
def test_act_name_is_transformerlens_get_act_name(args, want):
    from transformer_lens.utilities.components_utils import get_act_name

    assert act_name(*args) == want == get_act_name(*args)


def test_cache_shorthand_on_a_toy_with_transformerlens_names():
    model = MLPStack(d=4, n_blocks=3)
    _, cache = model.run_with_cache(torch.randn(2, 4))
    assert torch.equal(cache["resid_pre", 1], cache["blocks.1.hook_resid_pre"])
    assert torch.equal(cache["mlp_out", 2], cache["blocks.2.hook_mlp_out"])
    with pytest.raises(KeyError, match="act_name"):
        cache["resid_pre", -1]
    with pytest.raises(KeyError, match="blocks.7.hook_resid_pre"):
        cache["resid_pre", 7]


def test_aliases_find_stored_names_and_survive_copies():
    t = torch.randn(2, 3)
    cache = ActivationCache({"model.layers.1.hook_in": t}).with_aliases(
        {"blocks.1.hook_resid_pre": "model.layers.1.hook_in"}
    )
    assert cache["blocks.1.hook_resid_pre"] is t and cache["resid_pre", 1] is t
    assert list(cache) == ["model.layers.1.hook_in"] and len(cache) == 1
    # `in` answers what a lookup answers (issue 27), and nothing else
    assert "blocks.1.hook_resid_pre" in cache and "blocks.0.hook_resid_pre" not in cache
    assert torch.equal(cache.to(dtype=torch.float64)["resid_pre", 1], t.double())
    assert cache.apply(lambda x: x * 2)["blocks.1.hook_resid_pre"].equal(2 * t)
