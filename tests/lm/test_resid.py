"""The residual-stream toolkit on both backends for every decoder family, against the transformers
model's own computation: the lens at the last layer is the model's logits, decompositions sum to
the residual stream, head results sum to the attention output, norms applied to a stack sum to the
norm's output, logit attributions sum to the logit; and the bridge gives wrap's numbers."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from tests.lm.tiny_models import FAMILIES, VOCAB, final_norm, tiny_bridge, tiny_hf

LLAMA_LIKE = ("llama", "qwen2", "mistral", "gemma", "gemma2")


def hand_names(family: str, layer: int) -> dict[str, str]:
    """Module paths written out per family (independent of hooked.lm.names.layouts)."""
    if family == "gpt2":
        block = f"transformer.h.{layer}"
        return {"ln1": f"{block}.ln_1", "attn": f"{block}.attn", "final": "transformer.ln_f"}
    if family == "gpt_neox":
        block = f"gpt_neox.layers.{layer}"
        return {
            "ln1": f"{block}.input_layernorm",
            "attn": f"{block}.attention",
            "final": "gpt_neox.final_layer_norm",
        }
    block = f"model.layers.{layer}"
    attn = f"{block}.post_attention_layernorm" if family == "gemma2" else f"{block}.self_attn"
    return {"ln1": f"{block}.input_layernorm", "attn": attn, "final": "model.norm"}


def tokens(seed=0):
    return torch.randint(4, VOCAB, (2, 6), generator=torch.Generator().manual_seed(seed))


def softcap(hf, logits):
    cap = getattr(hf.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def wrapped(family):
    return lm.wrap_lm(tiny_hf(family))


@pytest.fixture(scope="module")
def bridge(family):
    return tiny_bridge(family)


@pytest.fixture(scope="module")
def runs(family, wrapped, bridge):
    """``{backend: (model, logits, cache)}`` with everything the toolkit reads (and a few hand names)."""
    x = tokens()
    out = {}
    hand = [hand_names(family, 1)[k] + ".hook_out" for k in ("ln1", "attn", "final")]
    with torch.no_grad():
        names = list(dict.fromkeys(lm.stream_hooks(wrapped) + hand))
        logits, cache = wrapped.run_with_cache(x, names_filter=names)
        out["wrap"] = (wrapped, logits, cache)
        logits, cache = bridge.run_with_cache(x, names_filter=lm.stream_hooks(bridge))
        out["bridge"] = (bridge, logits, cache)
    return out


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_logit_lens_at_the_last_layer_is_the_models_logits(runs, backend, family):
    model, logits, cache = runs[backend]
    lens, labels = lm.logit_lens(model, cache, return_labels=True)
    assert lens.shape == (3, 2, 6, VOCAB) and labels == ["0_pre", "1_pre", "final_post"]
    torch.testing.assert_close(lens[-1], logits, atol=1e-5, rtol=1e-5)
    # at a middle layer: the final norm and the unembedding of the transformers model, by hand
    hf = tiny_hf(family)
    with torch.no_grad():
        want = softcap(
            hf, hf.get_output_embeddings()(final_norm(hf)(cache[lm.act_name(model, "resid_pre", 1)]))
        )
        torch.testing.assert_close(lens[1], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lm.unembed(model, cache[lm.act_name(model, "resid_pre", 1)]), want)


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_decompose_resid_sums_to_the_residual_stream(runs, backend, family):
    model, _, cache = runs[backend]
    stack, labels = lm.decompose_resid(model, cache, return_labels=True)
    embeds = ["embed", "pos_embed"] if family == "gpt2" else ["embed"]
    assert labels == embeds + ["0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    torch.testing.assert_close(stack.sum(0), cache[lm.act_name(model, "resid_post", 1)], atol=1e-5, rtol=1e-5)
    at1 = lm.decompose_resid(model, cache, 1)
    torch.testing.assert_close(at1.sum(0), cache[lm.act_name(model, "resid_pre", 1)], atol=1e-5, rtol=1e-5)
    attn_only = lm.decompose_resid(model, cache, mode="attn", incl_embeds=False, return_labels=True)
    assert attn_only[1] == ["0_attn_out", "1_attn_out"]
    if family == "gpt_neox":  # parallel attention and MLP: no stream between them
        with pytest.raises(ValueError, match="parallel"):
            lm.accumulated_resid(model, cache, incl_mid=True)
    else:
        mid = lm.decompose_resid(model, cache, 1, mlp_input=True)
        torch.testing.assert_close(
            mid.sum(0), cache[lm.act_name(model, "resid_mid", 1)], atol=1e-5, rtol=1e-5
        )
        acc, labels = lm.accumulated_resid(model, cache, 1, incl_mid=True, mlp_input=True, return_labels=True)
        assert labels == ["0_pre", "0_mid", "1_pre", "1_mid"]


def test_head_results_sum_to_the_attention_output_by_hand(runs, family):
    model, _, cache = runs["wrap"]
    hf = model.module
    results = lm.head_results(model, cache, 1)
    assert results.shape == (2, 6, 4, 32)
    attn_out = cache[hand_names(family, 1)["attn"] + ".hook_out"]
    o_proj = {"gpt2": "transformer.h.1.attn.c_proj", "gpt_neox": "gpt_neox.layers.1.attention.dense"}
    bias = hf.get_submodule(o_proj[family]).bias if family in o_proj else None  # Llama-likes: none
    torch.testing.assert_close(
        results.sum(-2) + (0 if bias is None else bias), attn_out, atol=1e-5, rtol=1e-5
    )
    stack, labels = lm.stack_head_results(model, cache, return_labels=True, incl_remainder=True)
    assert stack.shape == (9, 2, 6, 32) and labels[:2] == ["L0H0", "L0H1"] and labels[-1] == "remainder"


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_norms_applied_to_a_stack_sum_to_the_norms_output(runs, backend, family):
    model, _, cache = runs[backend]
    _, _, wcache = runs["wrap"]
    hf = runs["wrap"][0].module
    names = hand_names(family, 1)
    final, ln1 = hf.get_submodule(names["final"]), hf.get_submodule(names["ln1"])
    bias = lambda m: 0 if getattr(m, "bias", None) is None else m.bias  # noqa: E731
    stack = lm.apply_ln_to_stack(model, cache, lm.decompose_resid(model, cache))
    torch.testing.assert_close(
        stack.sum(0) + bias(final), wcache[names["final"] + ".hook_out"], atol=1e-5, rtol=1e-5
    )
    stack = lm.apply_ln_to_stack(model, cache, lm.decompose_resid(model, cache, 1), 1)
    torch.testing.assert_close(
        stack.sum(0) + bias(ln1), wcache[names["ln1"] + ".hook_out"], atol=1e-5, rtol=1e-5
    )
    # accumulated_resid(apply_ln) at a layer: that layer's norm at the stream's own scale
    acc = lm.accumulated_resid(model, cache, 1, apply_ln=True)
    torch.testing.assert_close(acc[-1] + bias(ln1), wcache[names["ln1"] + ".hook_out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_logit_attributions_sum_to_the_logit(runs, backend, family):
    model, logits, cache = runs[backend]
    hf = runs["wrap"][0].module
    x = tokens()
    answers, wrong = x[:, -1], x[:, 0]
    stack = lm.decompose_resid(model, cache)
    attrs = lm.logit_attrs(model, cache, stack, answers)
    assert attrs.shape == (stack.shape[0], 2, 6)
    unembedding = hf.get_output_embeddings()
    norm_bias = getattr(final_norm(hf), "bias", None)
    const = unembedding(norm_bias if norm_bias is not None else torch.zeros(32))  # bias terms of no component
    with torch.no_grad():
        raw = unembedding(final_norm(hf)(cache[lm.act_name(model, "resid_post", 1)]))  # before soft-capping
    want = raw.gather(-1, answers[:, None, None].expand(2, 6, 1))[..., 0]
    torch.testing.assert_close(attrs.sum(0) + const[answers][:, None], want, atol=1e-4, rtol=1e-4)
    # a logit difference at the last position, with the positions sliced
    diff = lm.logit_attrs(model, cache, stack[:, :, -1], answers, wrong, pos_slice=-1)
    want = raw[:, -1].gather(-1, answers[:, None])[:, 0] - raw[:, -1].gather(-1, wrong[:, None])[:, 0]
    torch.testing.assert_close(diff.sum(0) + const[answers] - const[wrong], want, atol=1e-4, rtol=1e-4)


def test_bridge_and_wrap_give_the_same_numbers(runs, family):
    results = {}
    for backend, (model, _, cache) in runs.items():
        x = tokens()
        stack = lm.decompose_resid(model, cache)
        results[backend] = [
            lm.logit_lens(model, cache),
            stack,
            lm.accumulated_resid(model, cache, 1, apply_ln=True),
            lm.stack_head_results(model, cache, incl_remainder=True, apply_ln=True),
            lm.logit_attrs(model, cache, stack, x[:, -1]),
            lm.accumulated_resid(model, cache, pos_slice=[0, 5]),
        ]
    for got, want in zip(results["bridge"], results["wrap"]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_transformerlens_shorthand_and_names(runs, backend, family):
    model, _, cache = runs[backend]
    pre1 = cache[lm.act_name(model, "resid_pre", 1)]
    assert torch.equal(cache["resid_pre", 1], pre1)
    assert torch.equal(cache["blocks.1.hook_resid_pre"], pre1)
    assert torch.equal(cache["z", 1], cache[lm.act_name(model, "z", -1)])
    assert lm.act_name(model, "resid_post", -1) == lm.act_name(model, "resid_post", 1)
    if backend == "wrap":
        layers = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}.get(family, "model.layers")
        assert lm.act_name(model, "resid_pre", 1) == f"{layers}.1.hook_in"
    else:
        assert lm.act_name(model, "resid_pre", 1) == "blocks.1.hook_resid_pre"
    with pytest.raises(KeyError, match="act_name"):
        cache["resid_pre", -1]


def test_pos_slice_follows_transformerlens_helpers(runs):
    model, _, cache = runs["wrap"]
    assert lm.accumulated_resid(model, cache, pos_slice=-1).shape == (3, 2, 32)  # an int drops the axis
    assert lm.accumulated_resid(model, cache, pos_slice=slice(1, 3)).shape == (3, 2, 2, 32)
    full = lm.decompose_resid(model, cache)
    last = lm.decompose_resid(model, cache, pos_slice=-1, apply_ln=True)
    torch.testing.assert_close(last, lm.apply_ln_to_stack(model, cache, full)[:, :, -1])


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_a_stack_sliced_without_its_pos_slice_is_refused_not_broadcast(runs, backend, family):
    """Issue 22: a stack sliced to positions without the same ``pos_slice`` was divided by every
    position's scale ([C, B, 1, d] / [B, T, 1] -> [C, B, T, d]) and tokens of another shape broadcast
    too; both now raise, and the sliced answer equals the full one at those positions."""
    model, _, cache = runs[backend]
    x = tokens()
    stack = lm.decompose_resid(model, cache)
    full = lm.logit_attrs(model, cache, stack, x[:, -1])
    for sliced, pos_slice in (
        (stack[:, :, -1:], [-1]),
        (stack[:, :, 2:4], slice(2, 4)),
        (stack[:, :, -1], -1),
    ):
        with pytest.raises(ValueError, match="pos_slice"):
            lm.logit_attrs(model, cache, sliced, x[:, -1])
        with pytest.raises(ValueError, match="pos_slice"):
            lm.apply_ln_to_stack(model, cache, sliced)
        got = lm.logit_attrs(model, cache, sliced, x[:, -1], pos_slice=pos_slice)
        want = (
            full[:, :, -1] if pos_slice == -1 else full[:, :, -1:] if pos_slice == [-1] else full[:, :, 2:4]
        )
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not fit the stack"):  # [batch, pos] tokens, one position kept
        lm.logit_attrs(model, cache, stack[:, :, -1:], x, pos_slice=[-1])
    with pytest.raises(ValueError, match="do not fit the stack"):  # 3 answers for 2 rows
        lm.logit_attrs(model, cache, stack, torch.tensor([4, 5, 6])[:, None].expand(3, 6))


def test_a_cache_without_the_names_says_what_to_cache(wrapped):
    with torch.no_grad():
        _, cache = wrapped.run_with_cache(tokens(), names_filter=lm.residual_hooks(wrapped))
    with pytest.raises(KeyError, match="stream_hooks"):
        lm.decompose_resid(wrapped, cache)
    with pytest.raises(TypeError, match="hooked.lm.load"):
        lm.stream_hooks(torch.nn.Linear(2, 2))


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_toolkit_on_both_backends():
    """On the real model: the lens ends at the model's logits, DLA sums to the logit difference, and
    the bridge gives wrap's numbers (also checked against the transformers model's own logits)."""
    from papers.lm.prompt_patching import EIFFEL

    models = {b: lm.load("smollm2-135m", backend=b) for b in ("wrap", "bridge")}
    hf = lm.load("smollm2-135m", backend="hf")
    x = lm.to_tokens(hf, EIFFEL.clean)
    paris, rome = lm.token_id(hf, EIFFEL.answer), lm.token_id(hf, EIFFEL.wrong)
    with torch.no_grad():
        want = hf(x).logits
    found = {}
    for backend, model in models.items():
        with torch.no_grad():
            logits, cache = model.run_with_cache(x, names_filter=lm.stream_hooks(model))
            lens = lm.logit_lens(model, cache, pos_slice=-1)
            stack = lm.decompose_resid(model, cache, pos_slice=-1)
            dla = lm.logit_attrs(model, cache, stack, paris, rome, pos_slice=-1)
            heads = lm.stack_head_results(model, cache, pos_slice=-1)
            head_dla = lm.logit_attrs(model, cache, heads, paris, rome, pos_slice=-1)
        torch.testing.assert_close(logits, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(lens[-1], want[:, -1], atol=1e-4, rtol=1e-4)
        diff = want[0, -1, paris] - want[0, -1, rome]
        torch.testing.assert_close(dla.sum(0)[0], diff, atol=1e-3, rtol=1e-4)  # Llama: no biases
        found[backend] = (lens, stack, dla, head_dla)
    for got, ref in zip(found["bridge"], found["wrap"]):
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    top = found["wrap"][3][:, 0].abs().topk(3)
    print(
        f"\nlogit difference Paris - Rome {diff.item():.3f}; largest head DLAs: "
        + ", ".join(f"L{int(i) // 9}H{int(i) % 9} {found['wrap'][3][i, 0].item():+.2f}" for i in top.indices)
    )
