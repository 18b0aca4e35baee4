"""A cache of every module's input and output on a wrapped language model (issue 28): equal to
hand-written PyTorch hooks on the transformers model, key for key, whether asked for with
``module_hook_names`` or as part of a cache of every hook point (per-head points included)."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from tests.core.test_cache_recording import by_hand, no_live_point, same_cache, torch_hooks
from tests.lm.tiny_models import tiny_hf


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_every_module_of_a_wrapped_lm_equals_hand_written_pytorch_hooks(family):
    hf = tiny_hf(family)
    model = lm.wrap_lm(hf)
    tokens = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = by_hand(hf, lambda: hf(tokens))
        logits, cache = model.run_with_cache(tokens, names_filter=model.module_hook_names)
        same_cache(cache, want)
        assert torch.equal(logits, hf(tokens).logits)
        extra = set(model.hook_dict) - set(model.module_hook_names)
        assert extra and not extra & set(cache)  # the per-head, projection and norm points: not asked
        _, everything = model.run_with_cache(tokens)
    assert extra & set(everything)
    for name, tensors in want.items():
        assert torch.equal(everything[name], tensors[0]), name
    assert torch_hooks(hf) == 0 and model.list_hooks() == {} and no_live_point(model)


def test_a_gradient_cache_of_a_wrapped_lm_still_records_through_hooks():
    """With ``incl_bwd`` every point gets hooks (the gradients need them): activations as above."""
    hf = tiny_hf("llama")
    model = lm.wrap_lm(hf)
    tokens = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(1))
    names = model.module_hook_names
    with torch.no_grad():
        want = by_hand(hf, lambda: hf(tokens))
    _, cache = model.run_with_cache(tokens, names_filter=names, incl_bwd=True, metric=lambda out: out.sum())
    for name, tensors in want.items():
        assert torch.allclose(cache[name], tensors[0], atol=1e-6), name
        if name + "_grad" in cache:  # not of the token ids, nor of what the loss does not read
            assert cache[name + "_grad"].shape == tensors[0].shape, name
    assert "model.layers.0.mlp.hook_out_grad" in cache and "model.layers.1.hook_in_grad" in cache
    assert torch_hooks(hf) == 0 and model.list_hooks() == {} and no_live_point(model)


@pytest.mark.parametrize(
    "edited", ["blocks.0.ln1.hook_scale", "blocks.0.attn.hook_q", "blocks.1.attn.hook_result"]
)
def test_a_directly_read_point_sees_an_edit_made_inside_its_module(edited):
    """An edit at a point inside a module (a norm's scale, a projection's heads) changes the module's
    output; the module's ``hook_out``, read directly by the cache (nothing attached there), holds the
    edited output: equal to the cache taken with a pass-through hook at every module point, which
    records through hooks."""
    hf = tiny_hf("llama")
    model = lm.wrap_lm(hf)
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    names = model.module_hook_names

    def double(x, hook):
        return x * 2.0

    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names_filter=names)
        model.add_hook(edited, double)
        try:
            _, direct = model.run_with_cache(tokens, names_filter=names)
            for name in names:
                model.add_hook(name, lambda x, hook: x)
            _, through_hooks = model.run_with_cache(tokens, names_filter=names)
        finally:
            model.reset_hooks()
    assert set(direct) == set(through_hooks) == set(clean)  # a ModuleList never runs: not recorded
    changed = [n for n in clean if not torch.equal(direct[n], clean[n])]
    assert changed, "the edit changed nothing: the test would not see a reader in the wrong place"
    for name in clean:
        assert torch.equal(direct[name], through_hooks[name]), name
    assert torch_hooks(hf) == 0 and model.list_hooks() == {} and no_live_point(model)
