"""Circuits: a set of edges kept, every other edge patched to the corrupt run; search and faithfulness.

A :class:`Circuit` is the edges it keeps (with their scores). :func:`evaluate_circuit` runs the
clean input with every edge *not* in the circuit patched to the corrupt run (:mod:`.edges`, exact:
the circuit's nodes see each other's new outputs); the empty circuit is the corrupt run, the full
graph the clean run. :func:`faithfulness_curve` does that for the top ``n`` edges by ``|score|``
for several ``n``, batched, and reports ``metric(circuit) / metric(full model)`` (as asked of a
circuit: how much of the behaviour it keeps) and the normalised form
``(metric(circuit) - metric(corrupt)) / (metric(clean) - metric(corrupt))``.

:func:`acdc` is a greedy pruning with exact patching in the spirit of ACDC (Conmy et al. 2023):
receivers from the last to the first; for each, every incoming edge still kept is tried alone
against the current circuit, all in one batched forward, and those whose removal moves the metric
by less than ``threshold`` are removed together before the next receiver.

Circuits are saved as JSON (:func:`save_circuit`: nodes, edges, scores, what found them) and read
back with checks (:func:`load_circuit`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hooked.circuit_graph import Graph
from hooked.io import read_json, write_json
from hooked.protocol import Batch, Hookable
from interventions.circuits.ablation import MeanAblation
from interventions.circuits.edges import (
    EdgeScores,
    Metric,
    check_pair,
    prepare,
    replacement_outputs,
    run_patched_edges,
    upstream,
)

FORMAT = "hooked.circuit/1"


@dataclass(frozen=True)
class Circuit:
    """Edges kept, as ``(sender, receiver, score)``; ``nodes`` every sender and receiver node they touch."""

    edges: tuple[tuple[str, str, float], ...]
    what: str = ""
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def nodes(self, graph: Graph | None = None) -> list[str]:
        """Senders and receiver nodes (``graph`` maps receivers to their nodes), in first-seen order."""
        out: list[str] = []
        for s, r, _ in self.edges:
            node = graph.receiver(r).node if graph is not None else r
            for n in (s, node):
                if n not in out:
                    out.append(n)
        return out

    def pairs(self) -> set[tuple[str, str]]:
        return {(s, r) for s, r, _ in self.edges}


def top_edges(scores: EdgeScores, n: int) -> Circuit:
    """The ``n`` edges of largest ``|score|``."""
    if n < 0:
        raise ValueError(f"top_edges: n must be >= 0, got {n}")
    return Circuit(tuple(scores.edges()[:n]), f"top {n} by {scores.what or 'score'}")


def circuit_mask(graph: Graph, kept: set[tuple[str, str]]) -> Tensor:
    """``[senders, receivers]``: 1 on every edge of ``graph`` not in ``kept`` (those get patched)."""
    sidx = {s.name: i for i, s in enumerate(graph.senders)}
    ridx = {r.name: j for j, r in enumerate(graph.receivers)}
    mask = upstream(graph).float()
    for s, r in kept:
        if s not in sidx:
            graph.sender(s)
        if r not in ridx:
            graph.receiver(r)
        if mask[sidx[s], ridx[r]] == 0:
            raise ValueError(f"circuit: {s} -> {r} is not an edge of the model's graph")
        mask[sidx[s], ridx[r]] = 0
    return mask


def evaluate_circuit(
    model: Hookable,
    clean: Batch,
    corrupt: Batch | MeanAblation,
    metric: Metric,
    circuit: Circuit,
    *,
    graph: Graph | None = None,
) -> float:
    """The metric (mean over rows) of the clean run with every edge outside ``circuit`` patched."""
    graph = prepare(model, graph)
    mask = circuit_mask(graph, circuit.pairs())[None]
    return float(run_patched_edges(model, clean, corrupt, mask, metric, graph=graph)[0])


def faithfulness_curve(
    model: Hookable,
    clean: Batch,
    corrupt: Batch | MeanAblation,
    metric: Metric,
    scores: EdgeScores,
    ns: Sequence[int],
    *,
    graph: Graph | None = None,
    chunk: int = 8,
    progress: bool = False,
) -> dict[str, list[float]]:
    """The circuit of the top ``n`` edges for each ``n`` in ``ns``: its metric and faithfulness.

    ``chunk`` circuits per forward; ``progress``: a progress bar over the forwards.

    Returns ``{"n", "metric", "faithfulness", "normalized"}`` (lists over ``ns``) and the
    ``"clean"`` / ``"corrupt"`` metrics (full graph / empty circuit), each a one-item list.
    """
    graph = prepare(model, graph)
    check_pair(clean, corrupt)
    ranked = [(s, r) for s, r, _ in scores.edges()]
    ns = [int(n) for n in ns]
    if any(n < 0 for n in ns):
        raise ValueError(f"faithfulness_curve: every n must be >= 0, got {ns}")
    full = upstream(graph).float()
    masks = torch.stack([full * 0, full] + [circuit_mask(graph, set(ranked[:n])) for n in ns])
    corr = replacement_outputs(model, graph, clean, corrupt)
    values = run_patched_edges(
        model,
        clean,
        corrupt,
        masks,
        metric,
        graph=graph,
        chunk=chunk,
        corrupt_outputs=corr,
        progress=progress,
    )
    clean_m, corrupt_m, curve = float(values[0]), float(values[1]), values[2:].tolist()
    span = clean_m - corrupt_m
    return {
        "n": ns,
        "metric": curve,
        "faithfulness": [v / clean_m if clean_m != 0 else float("nan") for v in curve],
        "normalized": [(v - corrupt_m) / span if span != 0 else float("nan") for v in curve],
        "clean": [clean_m],
        "corrupt": [corrupt_m],
    }


def acdc(
    model: Hookable,
    clean: Batch,
    corrupt: Batch | MeanAblation,
    metric: Metric,
    *,
    threshold: float,
    graph: Graph | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> Circuit:
    """Greedy pruning with exact patching (see the module docstring); scores are each kept edge's
    effect when it was tried (metric with it removed minus the circuit's metric)."""
    graph = prepare(model, graph)
    check_pair(clean, corrupt)
    if threshold < 0:
        raise ValueError(f"acdc: threshold must be >= 0, got {threshold}")
    corr = replacement_outputs(model, graph, clean, corrupt)
    edges = upstream(graph)
    patched = torch.zeros(edges.shape)
    current = float(
        run_patched_edges(model, clean, corrupt, patched[None], metric, graph=graph, corrupt_outputs=corr)[0]
    )
    kept: dict[tuple[int, int], float] = {}
    order = sorted(range(len(graph.receivers)), key=lambda j: -graph.receivers[j].rank)
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(order, desc="acdc", leave=False)
    for j in order:
        senders = edges[:, j].nonzero().flatten().tolist()
        if not senders:
            continue
        trial = patched[None].repeat(len(senders), 1, 1)
        trial[torch.arange(len(senders)), torch.tensor(senders), j] = 1
        values = run_patched_edges(
            model, clean, corrupt, trial, metric, graph=graph, chunk=chunk, corrupt_outputs=corr
        )
        effect = values - current
        for i, e in zip(senders, effect.tolist()):
            if abs(e) < threshold:
                patched[i, j] = 1
            else:
                kept[(i, j)] = e
        current = float(
            run_patched_edges(
                model, clean, corrupt, patched[None], metric, graph=graph, corrupt_outputs=corr
            )[0]
        )
    out = sorted(kept.items(), key=lambda kv: -abs(kv[1]))
    return Circuit(
        tuple((graph.senders[i].name, graph.receivers[j].name, e) for (i, j), e in out),
        f"acdc (threshold {threshold})",
        {"metric": current},
    )


def save_circuit(path: str | os.PathLike, circuit: Circuit, graph: Graph | None = None) -> Path:
    """Write ``circuit`` as JSON (atomically): format, what, nodes, edges with scores, info."""
    return write_json(
        path,
        {
            "format": FORMAT,
            "what": circuit.what,
            "nodes": circuit.nodes(graph),
            "edges": [{"sender": s, "receiver": r, "score": float(v)} for s, r, v in circuit.edges],
            "info": circuit.info,
        },
    )


def load_circuit(path: str | os.PathLike) -> Circuit:
    """A circuit written by :func:`save_circuit`; a ValueError naming the file when it is not one."""
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("edges"), list):
        raise ValueError(
            f"{path}: not a circuit file (expected JSON with format {FORMAT!r} and a list of edges)"
        )
    edges = []
    for k, e in enumerate(data["edges"]):
        if not (
            isinstance(e, dict) and isinstance(e.get("sender"), str) and isinstance(e.get("receiver"), str)
        ):
            raise ValueError(f"{path}: edge {k} must have string 'sender' and 'receiver', got {e!r}")
        edges.append((e["sender"], e["receiver"], float(e.get("score", float("nan")))))
    return Circuit(tuple(edges), str(data.get("what", "")), dict(data.get("info") or {}))
