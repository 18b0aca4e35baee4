"""Circuits (interventions.circuits): edge patching, path patching, EAP / EAP-IG, search, faithfulness.

Known answers: a toy HookedModule with a planted circuit (embed -> a -> c -> logits: every other
edge has no effect by construction) and, on ``hooked.wrap`` of tiny transformers decoders, edge
and path patching compared with hand-written PyTorch hooks on the unhooked transformers model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooked import HookedModule, HookPoint
from hooked.circuit_graph import Graph, Receiver, Sender, graph_of
from interventions.circuits import (
    Circuit,
    MeanAblation,
    acdc,
    edge_attribution_patching,
    edge_patching,
    evaluate_circuit,
    faithfulness_curve,
    load_circuit,
    path_patching,
    run_patched_edges,
    save_circuit,
    top_edges,
)
from interventions.circuits.edges import upstream

PLANTED = {("embed", "a"), ("a", "c"), ("c", "logits")}


class Planted(HookedModule):
    """A residual stack of three nodes whose only path to the output is embed -> a -> c -> logits.

    Residual dims: 0-1 the input, 2-3 what ``a`` writes, 4-5 ``b``'s, 6-7 ``c``'s. ``a`` and ``b``
    read dims 0-1, ``c`` reads 2-3, the output reads 6-7: ``b`` writes where nobody reads.
    """

    reads = {"a": slice(0, 2), "b": slice(0, 2), "c": slice(2, 4), "logits": slice(6, 8)}
    writes = {"a": slice(2, 4), "b": slice(4, 6), "c": slice(6, 8)}

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.zeros(2, 8))
        self.embed.data[:, :2] = torch.randn(2, 2, generator=g)
        self.w = nn.ParameterDict()
        for n in ("a", "b", "c"):
            w = torch.zeros(8, 8)
            w[self.writes[n], self.reads[n]] = torch.randn(2, 2, generator=g)
            self.w[n] = nn.Parameter(w)
        u = torch.zeros(3, 8)
        u[:, 6:8] = torch.randn(3, 2, generator=g)
        self.unembed = nn.Parameter(u)
        self.hook_embed = HookPoint()
        for n in ("a", "b", "c"):
            setattr(self, f"hook_{n}_in", HookPoint())
            setattr(self, f"hook_{n}_out", HookPoint())
        self.hook_logits_in = HookPoint()

    def forward(self, x):
        resid = self.hook_embed(x @ self.embed)
        for n in ("a", "b", "c"):
            inp = getattr(self, f"hook_{n}_in")(resid)
            resid = resid + getattr(self, f"hook_{n}_out")(torch.tanh(2 * inp @ self.w[n].t()))
        return self.hook_logits_in(resid) @ self.unembed.t()

    def circuit_graph(self) -> Graph:
        senders = [Sender("embed", "hook_embed", 0)]
        senders += [Sender(n, f"hook_{n}_out", k + 1) for k, n in enumerate("abc")]
        receivers = [Receiver(n, f"hook_{n}_in", k + 1, n) for k, n in enumerate("abc")]
        receivers.append(Receiver("logits", "hook_logits_in", 4, "logits"))
        return Graph(tuple(senders), tuple(receivers), "planted toy")


def toy_data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)


def toy_metric(out):
    return out[:, 0] - out[:, 1]


def test_empty_circuit_is_the_corrupt_run_and_the_full_graph_the_clean_run():
    model = Planted()
    clean, corrupt = toy_data()
    up = upstream(model.circuit_graph()).float()
    values = run_patched_edges(model, clean, corrupt, torch.stack([up * 0, up]), toy_metric)
    with torch.no_grad():
        assert values[0] == pytest.approx(float(toy_metric(model(clean)).mean()), abs=1e-6)
        assert values[1] == pytest.approx(float(toy_metric(model(corrupt)).mean()), abs=1e-6)


def test_toy_edge_patching_is_nonzero_exactly_on_the_planted_edges_and_matches_a_hand_computation():
    model = Planted()
    clean, corrupt = toy_data()
    exact = edge_patching(model, clean, corrupt, toy_metric, progress=False)
    for s, r, v in exact.edges():
        assert (abs(v) > 1e-4) == ((s, r) in PLANTED), (s, r, v)
    # embed -> a by hand: a reads the corrupt embedding, everything else the clean run's
    with torch.no_grad():
        e_clean, e_corr = clean @ model.embed, corrupt @ model.embed
        resid = e_clean.clone()
        for n in "abc":
            inp = resid + (e_corr - e_clean) if n == "a" else resid
            resid = resid + torch.tanh(2 * inp @ model.w[n].t())
        by_hand = toy_metric(resid @ model.unembed.t()).mean() - toy_metric(model(clean)).mean()
    assert exact["embed", "a"] == pytest.approx(float(by_hand), abs=1e-6)


@pytest.mark.parametrize("steps", [None, 8])
def test_toy_eap_top_edges_are_the_planted_circuit_and_it_is_fully_faithful(steps, tmp_path):
    model = Planted()
    clean, corrupt = toy_data()
    scores = edge_attribution_patching(model, clean, corrupt, toy_metric, steps=steps)
    circuit = top_edges(scores, 3)
    assert circuit.pairs() == PLANTED
    curve = faithfulness_curve(model, clean, corrupt, toy_metric, scores, [0, 1, 3, 6])
    assert curve["metric"][0] == pytest.approx(curve["corrupt"][0], abs=1e-6)
    assert curve["faithfulness"][2] == pytest.approx(1.0, abs=1e-5)
    assert curve["normalized"][3] == pytest.approx(1.0, abs=1e-5)
    path = save_circuit(tmp_path / "c.json", circuit, model.circuit_graph())
    back = load_circuit(path)
    assert back.pairs() == PLANTED and back.edges == tuple(
        (s, r, pytest.approx(v)) for s, r, v in circuit.edges
    )
    assert set(back.what.split()) >= {"top", "3"}


def test_toy_eap_equals_the_gradient_formula_on_an_edge():
    model = Planted()
    clean, corrupt = toy_data()
    scores = edge_attribution_patching(model, clean, corrupt, toy_metric)
    # embed -> c: c ignores dims 0-1, so the gradient of c's input is 0 there and the score 0
    assert scores["embed", "c"] == pytest.approx(0.0, abs=1e-7)
    # c -> logits: the metric is linear in the logits' input, so EAP is exact there
    exact = edge_patching(model, clean, corrupt, toy_metric, edges=[("c", "logits")], progress=False)
    assert scores["c", "logits"] == pytest.approx(exact["c", "logits"], rel=1e-5)


def test_toy_acdc_finds_exactly_the_planted_edges():
    model = Planted()
    clean, corrupt = toy_data()
    circuit = acdc(model, clean, corrupt, toy_metric, threshold=1e-4, progress=False)
    assert circuit.pairs() == PLANTED
    assert evaluate_circuit(model, clean, corrupt, toy_metric, circuit) == pytest.approx(
        float(toy_metric(model(clean).detach()).mean()), abs=1e-5
    )


def test_path_patching_into_every_later_receiver_is_node_patching():
    model = Planted()
    clean, corrupt = toy_data()
    graph = model.circuit_graph()
    later = [r.name for r in graph.receivers if r.rank > graph.sender("a").rank]
    effect = path_patching(model, clean, corrupt, toy_metric, ["a"], later)
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupt, names_filter=["hook_a_out"])
        patched = model.run_with_hooks(
            clean, fwd_hooks=[("hook_a_out", lambda act, hook: cache["hook_a_out"])]
        )
        node = toy_metric(patched).mean() - toy_metric(model(clean)).mean()
    assert float(effect[0]) == pytest.approx(float(node), abs=1e-6)


def test_bad_input_is_refused_with_the_names():
    model = Planted()
    clean, corrupt = toy_data()
    with pytest.raises(ValueError, match="sender c does not run before receiver a"):
        path_patching(model, clean, corrupt, toy_metric, ["c"], ["a"])
    with pytest.raises(KeyError, match="no receiver 'zz'"):
        path_patching(model, clean, corrupt, toy_metric, ["a"], ["zz"])
    with pytest.raises(ValueError, match=r"c -> a is not an edge"):
        edge_patching(model, clean, corrupt, toy_metric, edges=[("c", "a")])
    with pytest.raises(ValueError, match="one value per batch row"):
        edge_attribution_patching(model, clean, corrupt, lambda out: out.sum())
    with pytest.raises(ValueError, match=r"same shapes.*\[\(5, 2\)\].*\[\(4, 2\)\]"):
        edge_attribution_patching(model, clean, corrupt[:4], toy_metric)
    with pytest.raises(ValueError, match="not an edge"):
        evaluate_circuit(model, clean, corrupt, toy_metric, Circuit((("c", "a", 1.0),)))
    with pytest.raises(ValueError, match="no circuit graph for Linear"):
        graph_of(nn.Linear(2, 2))


def test_load_circuit_refuses_other_json(tmp_path):
    (tmp_path / "x.json").write_text('{"edges": []}')
    with pytest.raises(ValueError, match="not a circuit file"):
        load_circuit(tmp_path / "x.json")


def toy_reference(rows: int = 7, seed: int = 5):
    return torch.randn(rows, 2, generator=torch.Generator().manual_seed(seed))


def test_toy_mean_ablation_moves_exactly_the_planted_edges_by_a_hand_computed_amount():
    model = Planted()
    clean, _ = toy_data()
    ref = toy_reference()
    exact = edge_patching(model, clean, MeanAblation(ref), toy_metric, progress=False)
    for s, r, v in exact.edges():
        assert (abs(v) > 1e-4) == ((s, r) in PLANTED), (s, r, v)
    with torch.no_grad():  # a -> c by hand: c reads the mean over the reference of a's output

        def a_out(x):
            return torch.tanh(2 * (x @ model.embed) @ model.w["a"].t())

        e = clean @ model.embed
        a, b = a_out(clean), torch.tanh(2 * e @ model.w["b"].t())
        c = torch.tanh(2 * (e + a + b + a_out(ref).mean(0) - a) @ model.w["c"].t())
        by_hand = toy_metric((e + a + b + c) @ model.unembed.t()).mean() - toy_metric(model(clean)).mean()
    assert exact["a", "c"] == pytest.approx(float(by_hand), abs=1e-6) and abs(float(by_hand)) > 1e-2


@pytest.mark.parametrize("per_position", [True, False])
def test_toy_mean_ablation_search_finds_the_planted_circuit_and_the_empty_circuit_is_the_mean(per_position):
    model = Planted()
    clean, _ = toy_data()
    ref = toy_reference()
    ablation = MeanAblation(ref, per_position=per_position)
    for steps in (None, 8):
        scores = edge_attribution_patching(model, clean, ablation, toy_metric, steps=steps)
        assert top_edges(scores, 3).pairs() == PLANTED
    circuit = acdc(model, clean, ablation, toy_metric, threshold=1e-4, progress=False)
    assert circuit.pairs() == PLANTED
    with torch.no_grad():
        full, mean_run = toy_metric(model(clean)).mean(), toy_metric(model(ref)).mean()
    kept = evaluate_circuit(model, clean, ablation, toy_metric, circuit)
    assert kept == pytest.approx(float(full), abs=1e-5)
    # every edge patched: the logits read the reference's mean residual stream, and the output is
    # linear in it, so the metric is the reference's mean metric
    empty = evaluate_circuit(model, clean, ablation, toy_metric, Circuit(()))
    assert empty == pytest.approx(float(mean_run), abs=1e-5) and abs(float(full - mean_run)) > 1e-2
    curve = faithfulness_curve(model, clean, ablation, toy_metric, scores, [0, 3])
    assert curve["corrupt"][0] == pytest.approx(float(mean_run), abs=1e-5)
    assert curve["normalized"] == pytest.approx([0.0, 1.0], abs=1e-5)


def test_toy_mean_over_a_list_of_batches_is_the_mean_over_their_rows():
    model = Planted()
    clean, _ = toy_data()
    ref = toy_reference(9)
    one = edge_patching(model, clean, MeanAblation(ref), toy_metric, progress=False)
    three = MeanAblation([ref[:2], ref[2:6], ref[6:]])
    parts = edge_patching(model, clean, three, toy_metric, progress=False)
    torch.testing.assert_close(parts.values(), one.values(), atol=1e-6, rtol=1e-5)
    path = path_patching(model, clean, MeanAblation([ref[:4], ref[4:]]), toy_metric, "a", ["c"])
    assert float(path[0]) == pytest.approx(one["a", "c"], abs=1e-6)
    with_empty = edge_patching(
        model, clean, MeanAblation([ref[:0], ref, ref[:0]]), toy_metric, progress=False
    )
    torch.testing.assert_close(with_empty.values(), one.values(), atol=1e-6, rtol=1e-5)


def test_mean_ablation_bad_reference_is_refused_with_the_shapes():
    model = Planted()
    clean, _ = toy_data()
    with pytest.raises(ValueError, match="empty list"):
        edge_patching(model, clean, MeanAblation([]), toy_metric)
    with pytest.raises(ValueError, match=r"reference batch 1 has inputs of shapes \[\(3,\)\].*\[\(2,\)\]"):
        bad = MeanAblation([toy_reference(), torch.zeros(4, 3)])
        edge_attribution_patching(model, clean, bad, toy_metric)
    with pytest.raises(ValueError, match="reference batch 0 has no tensor with a batch axis"):
        acdc(model, clean, MeanAblation("some text"), toy_metric, threshold=0.1)
    nothing = MeanAblation([toy_reference()[:0]])
    for run in (
        lambda: edge_patching(model, clean, nothing, toy_metric, progress=False),  # exact path
        lambda: edge_attribution_patching(model, clean, nothing, toy_metric),  # gradient path
    ):
        with pytest.raises(ValueError, match="no reference token to average"):
            run()
