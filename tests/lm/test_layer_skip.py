"""Starting a forward at a later layer on the base run's residual stream gives the full forward's
logits, and leaves the model as it was."""

from __future__ import annotations

import pytest
import torch

from hooked.lm.names.layouts import decoder_layers
from hooked.lm.sweeps.layer_skip import layer_of, layer_outputs, skipping


@pytest.mark.parametrize(
    "kind, path",
    [
        ("llama", "model.layers"),
        ("gpt2", "transformer.h"),
        ("neox", "gpt_neox.layers"),
        ("gemma2", "model.layers"),
    ],
)
def test_skipped_layers_give_the_full_forwards_logits(kind, path):
    from tests.lm.conftest import tiny_causal_lm

    hf = tiny_causal_lm(kind).eval()
    found = decoder_layers(hf)
    assert found is not None and found[0] == path
    layers = found[1]
    ids = torch.randint(0, hf.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), layer_outputs(layers) as base:
        full = hf(input_ids=ids).logits
    assert sorted(base["outputs"]) == list(range(len(layers)))
    for n in range(1, len(layers) + 1):
        with torch.no_grad(), skipping(layers, n, base["outputs"][n - 1], base["tuple_len"]):
            skipped = hf(input_ids=ids).logits
        torch.testing.assert_close(skipped, full, atol=1e-5, rtol=1e-5)
    # a wrong residual stream changes the logits: the stand-in's output is what the next layer reads
    # (noise, not a constant: LayerNorm would take a constant away)
    wrong = base["outputs"][0] + torch.randn(base["outputs"][0].shape)
    with torch.no_grad(), skipping(layers, 1, wrong, base["tuple_len"]):
        assert not torch.allclose(hf(input_ids=ids).logits, full, atol=1e-3)


def test_skipping_puts_the_layers_back_even_after_an_error():
    from tests.lm.conftest import tiny_causal_lm

    hf = tiny_causal_lm("llama").eval()
    _, layers = decoder_layers(hf)
    before = list(layers)
    ids = torch.randint(0, hf.config.vocab_size, (1, 5))
    with pytest.raises(ValueError, match="given residual stream"):
        with torch.no_grad(), skipping(layers, 1, torch.zeros(3, 3, 3)):
            hf(input_ids=ids)  # the stand-in refuses a residual stream of another shape
    assert list(layers) == before
    assert all(type(m).__name__ != "_Skipped" for m in hf.modules())
    with pytest.raises(ValueError, match="n=9"):
        with skipping(layers, 9, torch.zeros(1)):
            pass


def test_layer_of_reads_both_backends_names():
    assert layer_of("model.layers.3.mlp.hook_out", "model.layers") == 3
    assert layer_of("model.layers.12.hook_in", "model.layers") == 12
    assert layer_of("blocks.7.attn.hook_z", "model.layers") == 7
    assert layer_of("transformer.h.2.attn.hook_out", "transformer.h") == 2
    # outside the decoder layers: nothing is skipped
    for name in (
        "hook_embed",
        "model.embed_tokens.hook_out",
        "ln_final.hook_normalized",
        "model.norm.hook_in",
    ):
        assert layer_of(name, "model.layers") == 0
    assert layer_of("model.layers_extra.3.hook_out", "model.layers") == 0


def test_a_family_without_a_layout_has_its_stack_of_layers_and_residual_stream():
    """OPT matches no layout (its MLP is no module of its own): the stack of layers is still found
    (the one ModuleList of num_hidden_layers modules), so its residual stream is named and its
    layers can be skipped; the parts a layout names are refused with a message saying so."""
    import transformers

    from hooked import lm

    config = transformers.OPTConfig(
        vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = transformers.OPTForCausalLM(config).eval()
    model = lm.wrap_lm(hf)
    assert model.arch is None and decoder_layers(hf)[0] == "model.decoder.layers"
    hooks = lm.residual_hooks(model)
    assert hooks == [
        "model.decoder.layers.0.hook_in",
        "model.decoder.layers.1.hook_in",
        "model.decoder.layers.1.hook_out",
    ]
    ids = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=["model.decoder.layers.0.hook_out", *hooks])
    assert torch.equal(cache["model.decoder.layers.0.hook_out"], cache[hooks[1]])
    with pytest.raises(ValueError, match="known layout"):
        lm.stream_hooks(model)
