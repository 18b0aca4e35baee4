"""Hand-written PyTorch references for the circuit tests on tiny transformers decoders.

Both ``test_circuits_lm.py`` (wrap) and ``test_circuits_bridge.py`` (the bridge) check edge
patching against these: forward hooks on an unhooked transformers model with the same weights,
written out per family without the library's layouts.
"""

from __future__ import annotations

import torch

H, D = 4, 32  # tiny models: heads, d_model


def metric(out):
    logits = getattr(out, "logits", out)  # hooked models give logits, the transformers model an output
    return logits[:, -1, 5] - logits[:, -1, 7]


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 64, (3, 6), generator=g), torch.randint(4, 64, (3, 6), generator=g)


def blocks(hf, fam):
    """(layers, output projection path, the MLP's norm path, the final norm) of the plain model."""
    if fam == "gpt2":
        return hf.transformer.h, "attn.c_proj", "ln_2", hf.transformer.ln_f
    if fam == "gpt_neox":
        return hf.gpt_neox.layers, "attention.dense", "post_attention_layernorm", hf.gpt_neox.final_layer_norm
    return hf.model.layers, "self_attn.o_proj", "post_attention_layernorm", hf.model.norm


def head_delta(hf, fam, clean, corrupt, layer, head):
    """(z_corrupt - z_clean) of one head times its columns of the output projection."""
    layers, o_proj, _, _ = blocks(hf, fam)
    proj = layers[layer].get_submodule(o_proj)
    seen = []
    h = proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        hf(clean)
        hf(corrupt)
    h.remove()
    cols = slice(head * (D // H), (head + 1) * (D // H))
    w = proj.weight[cols, :] if fam == "gpt2" else proj.weight[:, cols].t()  # [d_head, d_model]
    return (seen[1] - seen[0])[..., cols] @ w


def metric_with(hf, clean, module, pre_hook) -> float:
    """The mean metric of ``hf(clean)`` with ``pre_hook`` on ``module`` (removed afterwards)."""
    h = module.register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            return float(metric(hf(clean)).mean())
    finally:
        h.remove()


def query_edge_effects(hf, clean, delta, layer=1) -> list[float]:
    """Per query head of Llama ``layer``: the metric's change when only that head's query reads
    ``resid + delta`` (its own copy of the residual through the layer's norm)."""
    block = hf.model.layers[layer]
    dh = D // H
    with torch.no_grad():
        base = float(metric(hf(clean)).mean())
    resid = []
    grab = block.register_forward_pre_hook(
        lambda m, args, kwargs: resid.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    by_hand = []
    try:
        for head in range(H):
            cols = slice(head * dh, (head + 1) * dh)

            def query_from_patched_copy(m, args, out, cols=cols):
                out = out.clone()
                out[..., cols] = block.input_layernorm(resid[-1] + delta) @ m.weight[cols].t()
                return out

            h = block.self_attn.q_proj.register_forward_hook(query_from_patched_copy)
            with torch.no_grad():
                by_hand.append(float(metric(hf(clean)).mean()) - base)
            h.remove()
    finally:
        grab.remove()
    return by_hand


def head_edge_effects(hf, fam, clean, corrupt) -> tuple[float, float]:
    """The metric's change when head 0.1's corrupt-minus-clean output is added to what the final
    norm reads (edge into the logits) and to what layer 1's MLP norm reads (edge into MLP 1)."""
    delta = head_delta(hf, fam, clean, corrupt, 0, 1)
    layers, _, ln2, final = blocks(hf, fam)
    with torch.no_grad():
        base = float(metric(hf(clean)).mean())
    add = lambda m, args: (args[0] + delta, *args[1:])  # noqa: E731
    return metric_with(hf, clean, final, add) - base, metric_with(
        hf, clean, layers[1].get_submodule(ln2), add
    ) - base
