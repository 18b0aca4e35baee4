"""Circuits on ``hooked.wrap`` of tiny transformers decoders, checked against hand-written PyTorch
hooks on the unhooked transformers model (edge patching, path patching = node patching, EAP's
gradient), and the LM graph (heads with q/k/v inputs; residual-level for Gemma 2)."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from hooked.circuit_graph import graph_of
from interventions.circuits import edge_attribution_patching, edge_patching, path_patching
from tests.lm.circuits_by_hand import (
    D,
    H,
    data,
    head_delta,
    head_edge_effects,
    metric,
    query_edge_effects,
)
from tests.lm.tiny_models import tiny_hf


@pytest.mark.parametrize("fam", ["llama", "gpt2"])
def test_edge_patching_equals_hand_written_hooks(fam):
    model = lm.wrap_lm(tiny_hf(fam))
    hf = model.module
    clean, corrupt = data()
    to_logits, to_mlp = head_edge_effects(hf, fam, clean, corrupt)
    scores = edge_patching(model, clean, corrupt, metric, edges=[("a0.h1", "logits"), ("a0.h1", "m1")])
    assert scores["a0.h1", "logits"] == pytest.approx(to_logits, abs=1e-5)
    assert scores["a0.h1", "m1"] == pytest.approx(to_mlp, abs=1e-5)
    assert abs(to_mlp) > 1e-4  # the edge does something, so the comparison means something


def test_edges_into_each_query_equal_hand_written_hooks_llama():
    model = lm.wrap_lm(tiny_hf("llama"))
    hf = model.module
    clean, corrupt = data()
    delta = head_delta(hf, "llama", clean, corrupt, 0, 1)
    by_hand = query_edge_effects(hf, clean, delta)
    edges = [("a0.h1", f"a1.h{k}<q>") for k in range(H)]
    scores = edge_patching(model, clean, corrupt, metric, edges=edges, progress=False)
    assert max(abs(v) for v in by_hand) > 2e-5  # small in a random model, but far above float noise
    assert [scores[e] for e in edges] == pytest.approx(by_hand, rel=1e-3, abs=2e-7)


@pytest.mark.parametrize("fam", ["llama", "gpt_neox"])
def test_path_patching_into_every_later_receiver_equals_node_patching(fam):
    model = lm.wrap_lm(tiny_hf(fam))
    graph = graph_of(model)
    clean, corrupt = data(1)
    later = [r.name for r in graph.receivers if r.rank > graph.sender("a0.h3").rank]
    effect = path_patching(model, clean, corrupt, metric, ["a0.h3", "a0.h0"], later)
    z = lm.act_name(model, "z", 0)
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupt, names_filter=[z])
        for k, head in enumerate([3, 0]):

            def swap(act, hook, head=head):
                act = act.clone()
                act[:, :, head] = cache[z][:, :, head]
                return act

            node = (
                metric(model.run_with_hooks(clean, fwd_hooks=[(z, swap)])).mean()
                - metric(model(clean)).mean()
            )
            assert float(effect[k]) == pytest.approx(float(node), abs=1e-5)


def test_eap_score_into_the_logits_equals_delta_times_a_hand_computed_gradient():
    model = lm.wrap_lm(tiny_hf("llama"))
    hf = model.module
    clean, corrupt = data(2)
    delta = head_delta(hf, "llama", clean, corrupt, 1, 2)
    grabbed = []

    def grab(m, args):
        x = args[0].detach().requires_grad_(True)
        grabbed.append(x)
        return (x,)

    h = hf.model.norm.register_forward_pre_hook(grab)
    (g,) = torch.autograd.grad(metric(hf(clean)).sum(), grabbed)
    h.remove()
    scores = edge_attribution_patching(model, clean, corrupt, metric)
    assert scores["a1.h2", "logits"] == pytest.approx(float((delta * g).sum() / 3), rel=1e-4, abs=1e-7)


def test_eap_ig_tracks_exact_edge_patching_on_a_tiny_llama():
    model = lm.wrap_lm(tiny_hf("llama"))
    clean, corrupt = data()
    exact = edge_patching(model, clean, corrupt, metric, progress=False).values()
    ig = edge_attribution_patching(model, clean, corrupt, metric, steps=8).values()
    rank = torch.corrcoef(torch.stack([exact.argsort().argsort().float(), ig.argsort().argsort().float()]))[
        0, 1
    ]
    assert rank > 0.8


def test_lm_graph_shapes():
    g = graph_of(lm.wrap_lm(tiny_hf("llama")))  # 4 query heads, 2 key-value heads, 2 layers
    assert len(g.senders) == 1 + 2 * (H + 1)
    assert len(g.receivers) == 2 * (H + 2 + 2 + 1) + 1
    assert g.receiver("a1.kv1<v>").node == "a1.kv1" and "heads" in g.note
    g2 = graph_of(lm.wrap_lm(tiny_hf("gemma2")))
    assert [s.name for s in g2.senders] == ["embed", "a0", "m0", "a1", "m1"] and "residual" in g2.note
    neox = graph_of(lm.wrap_lm(tiny_hf("gpt_neox")))  # parallel: no edge from a layer's heads to its MLP
    assert ("a0.h0", "m0") not in neox.edges() and ("a0.h0", "m1") in neox.edges()


def _tl_name(node) -> str:
    kind = node.kind
    if kind == "embed" or kind == "logits":
        return kind
    if kind == "attn_head_out":
        return f"a{node.layer}.h{node.head}"
    if kind in ("mlp_out", "mlp_in"):
        return f"m{node.layer}"
    return f"a{node.layer}.h{node.head}<{kind[0]}>"  # q_input, k_input, v_input


@pytest.mark.slow  # TransformerLens's bridge and its attribution module take a while to import and boot
@pytest.mark.parametrize("fam", ["llama", "gpt2"])
def test_eap_equals_transformerlens_edge_attribution_on_the_bridge(fam):
    """TransformerLens 4.3's own edge attribution (bridge, per position, gradient on the corrupt run)
    summed over positions equals ours with clean and corrupt swapped, edge for edge, on wrap and on
    the same bridge."""
    import copy

    import transformers
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    from tests.lm.tiny_models import tiny_config, tiny_tokenizer, tokenizer_folder

    if fam == "llama":  # TransformerLens refuses grouped-query attention: 4 key-value heads
        cfg = tiny_config("llama")
        cfg.num_key_value_heads = H
        with torch.random.fork_rng():
            torch.manual_seed(0)
            hf = transformers.LlamaForCausalLM(cfg).eval()
            with torch.no_grad():
                for name, p in hf.named_parameters():
                    if "norm" in name:
                        p.add_(0.3 * torch.randn_like(p))
    else:
        hf = tiny_hf(fam)
    wrapped = lm.wrap_lm(copy.deepcopy(hf))
    bridge = lm.bridge(hf, tiny_tokenizer(tokenizer_folder()), f"tiny-{fam}")
    clean, corrupt = data(3)
    ours = edge_attribution_patching(wrapped, corrupt, clean, metric)
    ours_on_the_bridge = edge_attribution_patching(bridge, corrupt, clean, metric)  # our graph, their model
    theirs = attribution_patch(
        bridge,
        clean,
        corrupt,
        lambda logits: metric(logits[None] if logits.dim() == 2 else logits)[0],
        EdgeAttributionConfig(granularity="edge"),
    )
    summed: dict[tuple[str, str], float] = {}
    for (w, r), v in theirs.edge_scores.items():
        key = (_tl_name(w), _tl_name(r))
        summed[key] = summed.get(key, 0.0) + float(v)
    # GPT-2: TransformerLens's embed writer is the token embedding alone (no position embedding)
    pairs = [k for k in summed if not (fam == "gpt2" and k[0] == "embed")]
    assert set(pairs) <= {(s, r) for s, r, _ in ours.edges()} and len(pairs) > 80
    tl = torch.tensor([summed[k] for k in pairs])
    mine = torch.tensor([ours[k] for k in pairs])
    assert tl.abs().max() > 1e-3
    torch.testing.assert_close(mine, tl, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(torch.tensor([ours_on_the_bridge[k] for k in pairs]), tl, atol=1e-6, rtol=1e-4)


def _head_outputs(hf, x, layer, head, attention_mask=None):
    """One head's output written to the residual stream, ``[rows, pos, d_model]``, by hand."""
    proj = hf.model.layers[layer].self_attn.o_proj
    seen = []
    h = proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        hf(x, attention_mask=attention_mask)
    h.remove()
    cols = slice(head * (D // H), (head + 1) * (D // H))
    return seen[0][..., cols] @ proj.weight[:, cols].t()


@pytest.mark.parametrize("per_position", [True, False])
def test_mean_ablation_of_an_edge_equals_a_hand_written_mean_on_a_wrapped_llama(per_position):
    from interventions.circuits import MeanAblation

    model = lm.wrap_lm(tiny_hf("llama"))
    hf = tiny_hf("llama")  # an unhooked copy of the same weights
    clean, _ = data()
    ref = torch.randint(4, 64, (5, 6), generator=torch.Generator().manual_seed(9))
    ref_out = _head_outputs(hf, ref, 0, 1)
    mean = ref_out.mean(0) if per_position else ref_out.mean((0, 1))
    delta = mean - _head_outputs(hf, clean, 0, 1)
    with torch.no_grad():
        base = metric(hf(clean)).mean()
    h = hf.model.norm.register_forward_pre_hook(lambda m, args: (args[0] + delta,))
    with torch.no_grad():
        by_hand = float(metric(hf(clean)).mean() - base)
    h.remove()
    ablation = MeanAblation([ref[:2], ref[2:]], per_position=per_position)  # read in two batches
    scores = edge_patching(model, clean, ablation, metric, edges=[("a0.h1", "logits")], progress=False)
    assert scores["a0.h1", "logits"] == pytest.approx(by_hand, abs=1e-6) and abs(by_hand) > 1e-3
    grabbed = []  # EAP with the mean as the replacement: delta . d metric / d (final norm input), by hand

    def grab(m, args):
        grabbed.append(args[0].detach().requires_grad_(True))
        return (grabbed[-1],)

    h = hf.model.norm.register_forward_pre_hook(grab)
    (g,) = torch.autograd.grad(metric(hf(clean)).sum(), grabbed)
    h.remove()
    eap = edge_attribution_patching(model, clean, ablation, metric)
    assert eap["a0.h1", "logits"] == pytest.approx(float((delta * g).sum() / 3), rel=1e-4, abs=1e-7)


def test_mean_ablation_leaves_out_padding_and_needs_per_position_lengths_to_match():
    from interventions.circuits import MeanAblation
    from interventions.circuits.ablation import mean_outputs

    model = lm.wrap_lm(tiny_hf("llama"))
    hf = tiny_hf("llama")
    graph = graph_of(model)
    ref = torch.randint(4, 64, (3, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])  # right padding
    batch = {"input_ids": ref, "attention_mask": mask}
    out = _head_outputs(hf, ref, 1, 2, attention_mask=mask)  # causal: real tokens never see the padding
    i = [s.name for s in graph.senders].index("a1.h2")
    over = mean_outputs(model, graph, MeanAblation(batch, per_position=False))[i]
    torch.testing.assert_close(over, out[mask.bool()].mean(0), atol=1e-6, rtol=1e-5)
    per = mean_outputs(model, graph, MeanAblation(batch))[i]
    mean_by_hand = torch.stack([out[mask[:, p].bool(), p].mean(0) for p in range(6)])
    torch.testing.assert_close(per, mean_by_hand, atol=1e-6, rtol=1e-5)
    clean, corrupt = data()
    padded = edge_patching(model, clean, MeanAblation(batch), metric, edges=[("a1.h2", "logits")])
    delta = mean_by_hand - _head_outputs(hf, clean, 1, 2)  # the padded reference's mean, by hand
    with torch.no_grad():
        base = metric(hf(clean)).mean()
        h = hf.model.norm.register_forward_pre_hook(lambda m, args: (args[0] + delta,))
        by_hand = float(metric(hf(clean)).mean() - base)
        h.remove()
    assert padded["a1.h2", "logits"] == pytest.approx(by_hand, abs=1e-6)
    with pytest.raises(ValueError, match=r"per_position=True.*\[\(5,\)\].*\[\(6,\)\]"):
        edge_patching(model, clean, MeanAblation(ref[:, :5]), metric)
    ok = edge_patching(model, clean, MeanAblation(ref[:, :5], per_position=False), metric, progress=False)
    assert ok.values().abs().max() > 1e-3
