"""The wrap backend's hook points inside a module (norm scale, per-head inputs, q / k / v, per-head
results) run before the module's own ``hook_out``, whichever was attached first: two edits compose
in TransformerLens's order (inside the module, then its output), equal to the same edits made by
hand-written PyTorch hooks, and a backward hook at ``hook_out`` gets its gradient."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from tests.lm.tiny_models import tiny_hf, tiny_tokenizer, tokenizer_folder


@pytest.fixture(scope="module")
def model():
    return lm.wrap_lm(tiny_hf("llama"), tiny_tokenizer(tokenizer_folder()))


X = torch.randint(4, 64, (2, 6), generator=torch.Generator().manual_seed(1))
P = "model.layers.0"


def run_both_orders(model, first, second):
    outs = []
    for specs in ((first, second), (second, first)):
        for name, fn in specs:
            model.add_hook(name, fn)
        try:
            outs.append(model(X))
        finally:
            model.reset_hooks()
    return outs


def by_hand(model, module, hook):
    """Logits with one plain PyTorch forward hook on a transformers module (nothing of hooked's)."""
    handle = model.module.get_submodule(module).register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model.module(X).logits
    finally:
        handle.remove()


def test_an_edited_norm_scale_then_the_norms_output(model):
    norm = model.module.model.layers[0].input_layernorm
    got = run_both_orders(
        model,
        ("blocks.0.ln1.hook_out", lambda a, hook: a * 0.5),
        ("blocks.0.ln1.hook_scale", lambda a, hook: a * 2),
    )

    def hand(module, args, output):
        x = args[0]
        rms = x.pow(2).mean(-1, keepdim=True).add(norm.variance_epsilon).sqrt()
        return norm.weight * (x / (2 * rms)) * 0.5

    want = by_hand(model, f"{P}.input_layernorm", hand)
    for out in got:
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)


def test_edited_head_results_then_the_output_projections_output(model):
    heads = model.cfg.n_heads
    got = run_both_orders(
        model,
        (f"{P}.self_attn.o_proj.hook_out", lambda a, hook: a * 0.5),
        ("blocks.0.attn.hook_result", lambda a, hook: a + 1),
    )
    want = by_hand(model, f"{P}.self_attn.o_proj", lambda m, args, out: (out + heads) * 0.5)
    for out in got:
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)


def test_edited_queries_then_the_query_projections_output(model):
    got = run_both_orders(
        model,
        (f"{P}.self_attn.q_proj.hook_out", lambda a, hook: a * 0.5),
        ("blocks.0.attn.hook_q", lambda a, hook: a + 1),
    )
    want = by_hand(model, f"{P}.self_attn.q_proj", lambda m, args, out: (out + 1) * 0.5)
    for out in got:
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("after", ["blocks.0.attn.hook_q", f"{P}.self_attn.q_proj.hook_out"])
def test_edited_head_inputs_then_the_queries(model, after):
    """The per-head inputs recompute the projection: an edit of the queries (or of the projection's
    output) made as well applies on top of it, in either attach order."""
    first, second = run_both_orders(
        model, (after, lambda a, hook: a + 1), ("blocks.0.hook_q_input", lambda a, hook: a * 0.5)
    )
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    inputs_only = model.run_with_hooks(X, fwd_hooks=[("blocks.0.hook_q_input", lambda a, hook: a * 0.5)])
    assert (first - inputs_only).abs().max() > 1e-3  # the query edit was not dropped


@pytest.mark.parametrize("first", ["blocks.0.ln1.hook_out", "blocks.0.ln1.hook_scale"])
def test_a_backward_hook_at_the_norms_output_gets_its_gradient_beside_hook_scale(model, first):
    names = [first] + [n for n in ("blocks.0.ln1.hook_out", "blocks.0.ln1.hook_scale") if n != first]
    grads = {}
    with model.hooks(bwd_hooks=[(n, lambda g, hook: grads.__setitem__(hook.name, g)) for n in names]):
        model(X).logsumexp(-1).sum().backward()
    kept = {}

    def hand(module, args, output):
        output.register_hook(lambda g: kept.__setitem__("out", g))

    handle = model.module.model.layers[0].input_layernorm.register_forward_hook(hand)
    try:
        model.module(X).logits.logsumexp(-1).sum().backward()
    finally:
        handle.remove()
    assert set(grads) == set(names)
    torch.testing.assert_close(grads["blocks.0.ln1.hook_out"], kept["out"], atol=1e-6, rtol=1e-5)
