"""Circuit discovery over the edges of a hooked model's computational graph (:mod:`hooked.circuit_graph`).

* :mod:`.edges`: :class:`~.edges.EdgeScores`; running a model with any set of edges patched to a
  corrupt run, batched (:func:`~.edges.run_patched_edges`), the exact effect of every edge
  (:func:`~.edges.edge_patching`) and path patching (:func:`~.edges.path_patching`).
* :mod:`.eap`: edge attribution patching (EAP) and its integrated-gradients form (EAP-IG).
* :mod:`.ablation`: :class:`~.ablation.MeanAblation`, the senders' mean over a reference set as the
  replacement, wherever a corrupt batch is taken.
* :mod:`.search`: circuits (top-n edges by score, greedy pruning), their faithfulness curve, JSON.

Written against the core's protocol only: the graph comes from :func:`hooked.circuit_graph.graph_of`
(a model's own ``circuit_graph()``, or the language-model layer's provider), so the same code runs
on a toy :class:`~hooked.hooked_module.HookedModule`, on ``hooked.wrap`` of a transformers model
and on TransformerLens's bridge.
Pictures: :func:`hooked.views.circuit_view` (HTML) and :func:`hooked.views.draw_circuit` (PNG).
"""

from interventions.circuits.ablation import MeanAblation
from interventions.circuits.eap import edge_attribution_patching
from interventions.circuits.edges import EdgeScores, edge_patching, path_patching, run_patched_edges
from interventions.circuits.search import (
    Circuit,
    acdc,
    evaluate_circuit,
    faithfulness_curve,
    load_circuit,
    save_circuit,
    top_edges,
)

__all__ = [
    "Circuit",
    "EdgeScores",
    "MeanAblation",
    "acdc",
    "edge_attribution_patching",
    "edge_patching",
    "evaluate_circuit",
    "faithfulness_curve",
    "load_circuit",
    "path_patching",
    "run_patched_edges",
    "save_circuit",
    "top_edges",
]
