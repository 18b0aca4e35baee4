"""Edge attribution patching (EAP) and its integrated-gradients form (EAP-IG): every edge from a few passes.

Patching edge ``s -> r`` adds ``delta_s = out_s(corrupt) - out_s(clean)`` to ``r``'s input
(:mod:`.edges`), so to first order (Syed et al. 2023, "Attribution patching outperforms automated
circuit discovery")

    metric(clean, s -> r patched) - metric(clean)  ~=  delta_s . d metric / d x_r      (EAP)

with the gradient taken on the clean run and the dot product summed over positions and the model
dimension (the mean over batch rows, as everywhere here). One forward on the corrupt input, one
forward and one backward on the clean input give every edge: the senders' differences
``[senders, rows, ..., d]`` and the receivers' gradients ``[receivers, rows, ..., d]`` are held,
and the scores are one matrix product of the two; no per-edge activation is ever formed.

EAP-IG (Hanna et al. 2024, "Have faith in faithfulness") replaces the clean-run gradient by its
mean over ``steps`` runs whose input (the graph's first senders: the embeddings) is interpolated
from the corrupt run's to the clean run's, ``corrupt + (k / steps) (clean - corrupt)`` for
``k = 1 .. steps``; it costs ``steps`` forward and backward passes and follows the metric where it
saturates or bends, where EAP's straight line does not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hooked.circuit_graph import Graph, take
from hooked.protocol import Batch, Hookable, run_with_hooks
from interventions.circuits.ablation import MeanAblation
from interventions.circuits.edges import (
    EdgeScores,
    Metric,
    check_metric,
    check_pair,
    prepare,
    replacement_outputs,
    sender_outputs,
    upstream,
)


def edge_attribution_patching(
    model: Hookable,
    clean: Batch,
    corrupt: Batch | MeanAblation,
    metric: Metric,
    *,
    graph: Graph | None = None,
    steps: int | None = None,
) -> EdgeScores:
    """EAP scores of every edge (``steps=None``) or EAP-IG scores with ``steps`` interpolation steps.

    Args:
        metric: forward output -> one value per batch row (differentiable).
        steps: ``None`` for EAP (gradient on the clean run); an int ``k >= 1`` for EAP-IG.

    Returns:
        :class:`~.edges.EdgeScores` estimating ``metric(edge patched) - metric(clean)``.
    """
    graph = prepare(model, graph)
    rows = check_pair(clean, corrupt)
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"edge_attribution_patching: steps must be None (EAP) or an int >= 1, got {steps!r}")
    if steps is None:  # the clean run that gives the gradients also gives the senders' outputs
        grads, clean_out = _receiver_grads(model, graph, clean, metric, rows)
        corr = replacement_outputs(model, graph, clean, corrupt, like=clean_out)
    else:
        clean_out = sender_outputs(model, graph, clean)
        corr = replacement_outputs(model, graph, clean, corrupt, like=clean_out)
        first = min(s.rank for s in graph.senders)
        inputs = [i for i, s in enumerate(graph.senders) if s.rank == first]
        grads = None
        for k in range(1, steps + 1):
            g, _ = _receiver_grads(model, graph, clean, metric, rows, (inputs, corr, clean_out, k / steps))
            grads = g if grads is None else grads + g
        grads = grads / steps
    delta = corr - clean_out  # [S, rows, ..., d]
    S, R = len(graph.senders), len(graph.receivers)
    scores = delta.reshape(S, -1).double() @ grads.reshape(R, -1).double().t() / rows
    scores = scores.float().cpu()
    scores[~upstream(graph)] = float("nan")
    what = "EAP" if steps is None else f"EAP-IG ({steps} steps)"
    what += ", mean ablation" if isinstance(corrupt, MeanAblation) else ""
    return EdgeScores(
        tuple(s.name for s in graph.senders), tuple(r.name for r in graph.receivers), scores, what
    )


def _receiver_grads(
    model: Hookable,
    graph: Graph,
    clean: Batch,
    metric: Metric,
    rows: int,
    interpolate: tuple[list[int], Tensor, Tensor, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """``d sum(metric) / d x_r`` for every receiver ``r``, stacked ``[receivers, rows, ..., d]``, and
    the senders' outputs in that run ``[senders, rows, ..., d]``."""
    probes: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def probe(act: Tensor, hook: Any) -> Tensor:
        p = torch.zeros_like(act, requires_grad=True)
        probes[hook.name] = p
        return act + p

    def keep(act: Tensor, hook: Any) -> None:
        outputs[hook.name] = act.detach()

    hooks: list[tuple[str, Any]] = []
    if interpolate is not None:
        idx, corr, clean_out, alpha = interpolate
        by_hook: dict[str, list[int]] = {}
        for i in idx:
            by_hook.setdefault(graph.senders[i].hook, []).append(i)
        for name, ids in by_hook.items():
            hooks.append((name, _interpolation_hook(graph, ids, corr, clean_out, alpha)))
    receiver_hooks = sorted({r.hook for r in graph.receivers})
    hooks += [(name, probe) for name in receiver_hooks]
    hooks += [(name, keep) for name in sorted({s.hook for s in graph.senders})]
    with torch.enable_grad():
        out = run_with_hooks(model, clean, hooks)
        values = check_metric(metric(out), rows)
        missing = [n for n in receiver_hooks if n not in probes]
        if missing:
            raise RuntimeError(
                f"circuits: the receivers' hook points {missing[:3]} did not run in the forward"
            )
        grads = torch.autograd.grad(values.sum(), [probes[n] for n in receiver_hooks], allow_unused=True)
    by_name = {
        n: (g if g is not None else torch.zeros_like(probes[n])) for n, g in zip(receiver_hooks, grads)
    }
    grads_out = torch.stack([take(by_name[r.hook], r.index).detach() for r in graph.receivers])
    with torch.no_grad():
        senders = torch.stack([s.read(outputs[s.hook]) for s in graph.senders])
    return grads_out, senders


def _interpolation_hook(graph: Graph, ids: list[int], corr: Tensor, clean_out: Tensor, alpha: float) -> Any:
    """Replace the input senders' outputs by ``corrupt + alpha (clean - corrupt)``."""

    def fn(act: Tensor, hook: Any) -> Tensor:
        new = act.clone()
        for i in ids:
            s = graph.senders[i]
            if s.project is not None:
                raise ValueError(
                    f"EAP-IG: the input sender {s.name} must be a residual-stream vector (no project)"
                )
            view = take(new, s.index) if s.index else new
            view += ((1 - alpha) * (corr[i] - clean_out[i])).to(view.dtype)
        return new

    return fn
