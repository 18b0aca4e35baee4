"""The worked case of circuit discovery: indirect-object identification (IOI) on SmolLM2-135M.

Prompts (every name is one token in SmolLM2's tokenizer, so clean and corrupt prompts have the same
length, 16 tokens): the template :data:`TEMPLATE` filled with the pairs of :data:`PAIRS`, the
subject repeated (``"Then, when Mary and John went to the store, John gave a drink to"``, answer
``" Mary"``); the corrupt prompts put three other names in the three slots (:data:`CORRUPT`: the
"ABC" distribution of Wang et al. 2022), which takes away the information of which name is repeated.
Metric: the logit of the indirect object minus the logit of the subject at the last position.

:func:`ioi_circuit` (``hooked repro circuits-ioi``) scores every edge of the model's graph with
EAP-IG, keeps the top edges and writes ``scores.safetensors``, ``curve.json`` (faithfulness
against edges kept), ``circuit.json``, ``circuit.png`` and ``circuit.html`` into the run folder.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from hooked.circuit_graph import graph_of
from hooked.io import write_tensors
from hooked.views import circuit_view, draw_circuit
from interventions.circuits import (
    edge_attribution_patching,
    faithfulness_curve,
    save_circuit,
    top_edges,
)

TEMPLATE = "Then, when{a} and{b} went to the store,{s} gave a drink to"
PAIRS = [(" Mary", " John"), (" Tom", " James"), (" Anna", " Paul"), (" Sarah", " David")]
CORRUPT = [
    (" Emma", " Mark", " Paul"),
    (" Sarah", " David", " Mary"),
    (" John", " Mary", " Emma"),
    (" James", " Tom", " Anna"),
]


def ioi_batch(model: Any, n: int = len(PAIRS)) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(clean ids, corrupt ids, indirect-object ids, subject ids)`` of the first ``n`` pairs."""
    from hooked.lm import to_tokens, token_id

    pairs, corrupt = PAIRS[:n], CORRUPT[:n]
    clean = to_tokens(model, [TEMPLATE.format(a=a, b=b, s=b) for a, b in pairs])
    bad = to_tokens(model, [TEMPLATE.format(a=x, b=y, s=z) for x, y, z in corrupt])
    io = torch.tensor([token_id(model, a) for a, _ in pairs], device=clean.device)
    subject = torch.tensor([token_id(model, b) for _, b in pairs], device=clean.device)
    return clean, bad, io, subject


def logit_diff(io: Tensor, subject: Tensor):
    """Metric: logit(indirect object) - logit(subject) at the last position, one value per row (the
    rows of a batch repeated k times, as patched runs are, get the answers repeated)."""
    from hooked.lm import logits_of

    def metric(out: Any) -> Tensor:
        last = logits_of(out)[:, -1]
        k = last.shape[0] // io.shape[0]
        return last.gather(1, io.repeat(k)[:, None])[:, 0] - last.gather(1, subject.repeat(k)[:, None])[:, 0]

    return metric


def ioi_circuit(run_dir: Any, *, steps: int = 5, keep: int = 400, quick: bool = False) -> dict:
    """IOI on SmolLM2-135M: EAP-IG over every edge, the top edges as the circuit, its faithfulness.

    Args:
        steps: EAP-IG interpolation steps.
        keep: edges kept in the circuit written to circuit.json / circuit.png.
        quick: one prompt pair and plain EAP (a smoke run).
    """
    from hooked import lm

    started = time.perf_counter()
    model = lm.load("smollm2-135m", backend="wrap")
    clean, corrupt, io, subject = ioi_batch(model, 1 if quick else len(PAIRS))
    metric = logit_diff(io, subject)
    graph = graph_of(model)
    scores = edge_attribution_patching(model, clean, corrupt, metric, steps=None if quick else steps)
    ns = [25, 100, 400] if quick else [25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800]
    curve = faithfulness_curve(model, clean, corrupt, metric, scores, ns, chunk=4, progress=True)
    circuit = top_edges(scores, keep)
    save_circuit(run_dir / "circuit.json", circuit, graph)
    draw_circuit(run_dir / "circuit.png", top_edges(scores, min(keep, 40)), graph, title="IOI, top 40 edges")
    circuit_view(scores, top_edges(scores, 40), curve, title="IOI on SmolLM2-135M").save(
        run_dir / "circuit.html"
    )
    write_tensors(run_dir / "scores.safetensors", {"scores": scores.scores})
    heads = sorted({n for n in circuit.nodes(graph) if ".h" in n or ".kv" in n})
    out = {
        "prompts": [TEMPLATE.format(a=a, b=b, s=b) for a, b in PAIRS[: clean.shape[0]]],
        "tokens": int(clean.shape[1]),
        "edges": len(graph.edges()),
        "scores": scores.what,
        "curve": curve,
        "kept": keep,
        "heads_kept": heads,
        "seconds": time.perf_counter() - started,
    }
    run_dir.json("curve.json", out)
    return out
