"""Circuits on TransformerLens's bridge (``hooked.lm.bridge`` of tiny transformers decoders).

Known answers: edge patching on the bridge equals hand-written PyTorch hooks on an unhooked copy of
the same weights; every score (exact, EAP, EAP-IG, ACDC, a circuit's metric) equals ``hooked.wrap``'s
on the same weights, edge for edge; the graph is wrap's graph under TransformerLens's names; a
replacement equal to the input leaves the output as it was; bad input is refused with the names.
"""

from __future__ import annotations

import functools

import pytest
import torch

from hooked import lm
from hooked.circuit_graph import graph_of
from interventions.circuits import (
    MeanAblation,
    acdc,
    edge_attribution_patching,
    edge_patching,
    evaluate_circuit,
    path_patching,
    run_patched_edges,
    top_edges,
)
from interventions.circuits.edges import upstream
from tests.lm.circuits_by_hand import (
    H,
    data,
    head_delta,
    head_edge_effects,
    metric,
    query_edge_effects,
)
from tests.lm.tiny_models import tiny_bridge, tiny_hf

SLOW = pytest.mark.slow


@functools.cache
def models(fam):
    """(the bridge, wrap of a copy, an unhooked transformers model): three copies of the same weights."""
    bridge, wrapped, plain = tiny_bridge(fam), lm.wrap_lm(tiny_hf(fam)), tiny_hf(fam)
    for a, b in zip(plain.parameters(), wrapped.module.parameters()):
        assert torch.equal(a, b)
    return bridge, wrapped, plain


def fams(default="llama", slow=("gpt2", "gpt_neox")):
    return [default, *(pytest.param(f, marks=SLOW) for f in slow)]


@pytest.mark.parametrize("fam", [*fams(slow=("gpt2", "gpt_neox", "gemma2"))])
def test_the_bridge_graph_is_wraps_under_transformerlens_names(fam):
    bridge, wrapped, _ = models(fam)
    gb, gw = graph_of(bridge), graph_of(wrapped)
    assert [(s.name, s.rank, s.index) for s in gb.senders] == [(s.name, s.rank, s.index) for s in gw.senders]
    assert [(r.name, r.rank, r.node, r.index) for r in gb.receivers] == [
        (r.name, r.rank, r.node, r.index) for r in gw.receivers
    ]
    assert "TransformerLens bridge" in gb.note
    hooks = {s.hook for s in gb.senders} | {r.hook for r in gb.receivers}
    assert all(h in bridge.hook_dict for h in hooks)
    if fam != "gemma2":
        assert gb.receiver("a1.h2<q>").hook == "blocks.1.attn.hook_q_input"
        assert gb.sender("a0.h3").hook == "blocks.0.attn.hook_z"


@pytest.mark.parametrize("fam", fams(slow=("gpt2",)))
def test_bridge_edge_patching_equals_hand_written_pytorch(fam):
    bridge, _, hf = models(fam)
    clean, corrupt = data()
    to_logits, to_mlp = head_edge_effects(hf, fam, clean, corrupt)
    scores = edge_patching(bridge, clean, corrupt, metric, edges=[("a0.h1", "logits"), ("a0.h1", "m1")])
    assert scores["a0.h1", "logits"] == pytest.approx(to_logits, abs=1e-5)
    assert scores["a0.h1", "m1"] == pytest.approx(to_mlp, abs=1e-5)
    assert abs(to_mlp) > 1e-4 and abs(to_logits) > 1e-4  # the edges do something


def test_bridge_edges_into_each_query_equal_hand_written_pytorch():
    bridge, _, hf = models("llama")
    clean, corrupt = data()
    delta = head_delta(hf, "llama", clean, corrupt, 0, 1)
    by_hand = query_edge_effects(hf, clean, delta)
    edges = [("a0.h1", f"a1.h{k}<q>") for k in range(H)]
    scores = edge_patching(bridge, clean, corrupt, metric, edges=edges, progress=False)
    assert max(abs(v) for v in by_hand) > 2e-5
    assert [scores[e] for e in edges] == pytest.approx(by_hand, rel=1e-3, abs=2e-7)


@pytest.mark.parametrize("fam", fams())
def test_bridge_scores_equal_wraps_edge_for_edge(fam):
    bridge, wrapped, _ = models(fam)
    clean, corrupt = data(1)
    reference = torch.randint(4, 64, (5, 6), generator=torch.Generator().manual_seed(7))
    for what, fn in [
        ("exact", lambda m: edge_patching(m, clean, corrupt, metric, progress=False)),
        ("EAP", lambda m: edge_attribution_patching(m, clean, corrupt, metric)),
        ("EAP-IG", lambda m: edge_attribution_patching(m, clean, corrupt, metric, steps=3)),
        ("mean", lambda m: edge_patching(m, clean, MeanAblation(reference), metric, progress=False)),
        ("mean EAP", lambda m: edge_attribution_patching(m, clean, MeanAblation(reference, False), metric)),
    ]:
        on_bridge, on_wrap = fn(bridge), fn(wrapped)
        assert on_bridge.senders == on_wrap.senders and on_bridge.receivers == on_wrap.receivers
        assert on_wrap.values().abs().max() > 1e-2, what
        torch.testing.assert_close(on_bridge.values(), on_wrap.values(), atol=1e-6, rtol=1e-4, msg=what)


def test_bridge_path_patching_and_circuits_equal_wraps():
    bridge, wrapped, _ = models("llama")
    clean, corrupt = data(2)
    graph = graph_of(bridge)
    later = [r.name for r in graph.receivers if r.rank > graph.sender("a0.h3").rank]
    paths = [path_patching(m, clean, corrupt, metric, ["a0.h3", "a0.h0"], later) for m in (bridge, wrapped)]
    torch.testing.assert_close(paths[0], paths[1], atol=1e-6, rtol=1e-4)
    z = "blocks.0.attn.hook_z"  # path through every later receiver = patching the head itself
    with torch.no_grad():
        _, cache = bridge.run_with_cache(corrupt, names_filter=[z])

        def swap(act, hook):
            act = act.clone()
            act[:, :, 3] = cache[z][:, :, 3]
            return act

        node = (
            metric(bridge.run_with_hooks(clean, fwd_hooks=[(z, swap)])).mean() - metric(bridge(clean)).mean()
        )
    assert float(paths[0][0]) == pytest.approx(float(node), abs=1e-5) and abs(float(node)) > 1e-4
    circuit = top_edges(edge_attribution_patching(wrapped, clean, corrupt, metric), 10)
    kept = [evaluate_circuit(m, clean, corrupt, metric, circuit) for m in (bridge, wrapped)]
    assert kept[0] == pytest.approx(kept[1], abs=1e-5)


@SLOW  # two greedy searches: ~40 patched forwards each
def test_bridge_acdc_keeps_the_edges_wrap_keeps():
    bridge, wrapped, _ = models("llama")
    clean, corrupt = data(2)
    found = [acdc(m, clean, corrupt, metric, threshold=2e-3, progress=False) for m in (bridge, wrapped)]
    assert found[0].pairs() == found[1].pairs() and 0 < len(found[0].edges) < len(graph_of(bridge).edges())
    assert [v for _, _, v in found[0].edges] == pytest.approx([v for _, _, v in found[1].edges], abs=1e-5)


def test_bridge_replacement_equal_to_the_input_leaves_the_output_unchanged():
    bridge, _, _ = models("llama")
    clean, _ = data()
    graph = graph_of(bridge)
    with torch.no_grad():
        base = bridge(clean)
    # every edge patched from a "corrupt" run that is the clean run: every receiver gets + 0
    every = upstream(graph).float()[None]
    value = run_patched_edges(bridge, clean, clean.clone(), every, metric, graph=graph)
    assert float(value[0]) == pytest.approx(float(metric(base).mean()), abs=1e-6)
    # the per-head inputs returned as they came: the logits as without hooks (TransformerLens's
    # per-head projection rounds differently from the fused one, so equal to float precision)
    same = lambda act, hook: act.clone()  # noqa: E731
    hooks = [(r.hook, same) for r in graph.receivers] + [(s.hook, same) for s in graph.senders]
    with torch.no_grad():
        out = bridge.run_with_hooks(clean, fwd_hooks=list(dict.fromkeys(hooks)))
    torch.testing.assert_close(out, base, atol=1e-6, rtol=1e-5)
    assert (
        not bridge.cfg.use_split_qkv_input
    )  # the per-head split is off again: the plain bridge is as before


def test_bridge_bad_input_is_refused_with_the_names():
    bridge, _, _ = models("llama")
    clean, corrupt = data()
    with pytest.raises(ValueError, match="a1.h0 -> a0.h2<q>"):
        edge_patching(bridge, clean, corrupt, metric, edges=[("a1.h0", "a0.h2<q>")])
    with pytest.raises(KeyError, match="a9.h0"):
        edge_patching(bridge, clean, corrupt, metric, edges=[("a9.h0", "logits")])
    with pytest.raises(ValueError, match="does not run before receiver a0.h1<q>"):
        path_patching(bridge, clean, corrupt, metric, "m1", "a0.h1<q>")
    with pytest.raises(ValueError, match="same shapes"):
        edge_attribution_patching(bridge, clean, corrupt[:, :5], metric)
    with pytest.raises(ValueError, match=r"one value per batch row, shape \[3\]"):
        edge_attribution_patching(bridge, clean, corrupt, lambda out: out[:, -1].sum())
