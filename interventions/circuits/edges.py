"""Patching edges: a model run with chosen edges of its graph carrying the corrupt run's values.

An edge ``s -> r`` (sender ``s``, receiver ``r`` of :mod:`hooked.circuit_graph`) is *patched* when
``r`` reads what ``s`` wrote in the corrupt run instead of what ``s`` writes in this run, every
other edge unchanged: at ``r``'s hook point the input becomes

    x_r  +  sum over patched edges s -> r  of  (out_s(corrupt run) - out_s(this run))

(``out_s(this run)`` is read at ``s``'s hook point during the same forward, so that patching many
edges at once, as a circuit does, is exact too: a sender whose own inputs were patched has a new
output, and the receivers of its unpatched edges see that new output). Patching one edge changes
only that receiver's input; patching every edge out of ``s`` is patching ``s``'s output itself.

:func:`run_patched_edges` runs any number of edge sets (one mask each) in batched forwards: the
clean batch repeated once per set, set-major, like :func:`interventions.patching.patching_sweep`.
:func:`edge_patching` gives each edge's exact effect on the metric (the ground truth that
:func:`interventions.circuits.eap.edge_attribution_patching` estimates), :func:`path_patching` the
effect of a sender through chosen receivers only (the rest of the model reading the clean values),
for one sender or a sweep over senders.

Wherever a corrupt batch is taken, :class:`~.ablation.MeanAblation` may stand in for it: each
sender's output then carries its mean over a reference set (:mod:`.ablation`).

Conventions (as the node sweep's): the metric maps the forward output to one value per batch row
and results are its mean over the rows; effects are ``metric(patched) - metric(clean)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hooked.circuit_graph import Graph, Receiver, graph_of
from hooked.protocol import (
    Batch,
    Hookable,
    cache_batch,
    check_hook,
    check_hookable,
    run_with_hooks,
)
from interventions.circuits.ablation import (
    MeanAblation,
    batch_tensors,
    check_reference,
    expand_mean,
    mean_outputs,
    needs_clean_shape,
)

Metric = Callable[[Any], Tensor]  # forward output -> one value per batch row


@dataclass(frozen=True)
class EdgeScores:
    """A score for every edge: ``scores[i, j]`` for ``senders[i] -> receivers[j]`` (NaN: no edge)."""

    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    scores: Tensor  # [senders, receivers]
    what: str = ""

    def __getitem__(self, edge: tuple[str, str]) -> float:
        s, r = edge
        if s not in self.senders or r not in self.receivers:
            raise KeyError(f"no edge {s} -> {r} in these scores")
        value = float(self.scores[self.senders.index(s), self.receivers.index(r)])
        if value != value:
            raise KeyError(f"{s} -> {r} is not an edge of the graph (the sender does not come before)")
        return value

    def edges(self) -> list[tuple[str, str, float]]:
        """Every edge with its score, largest ``|score|`` first."""
        ok = ~torch.isnan(self.scores)
        i, j = ok.nonzero(as_tuple=True)
        vals = self.scores[i, j]
        order = torch.argsort(vals.abs(), descending=True, stable=True)
        return [(self.senders[int(i[k])], self.receivers[int(j[k])], float(vals[k])) for k in order]

    def values(self) -> Tensor:
        """The scores of every edge, in :meth:`hooked.circuit_graph.Graph.edges` order."""
        return self.scores.t()[~torch.isnan(self.scores.t())]


def upstream(graph: Graph) -> Tensor:
    """``[senders, receivers]`` bool: which pairs are edges."""
    s = torch.tensor([x.rank for x in graph.senders])
    r = torch.tensor([x.rank for x in graph.receivers])
    return s[:, None] < r[None, :]


def check_pair(clean: Batch, corrupt: Batch | MeanAblation) -> int:
    """The rows of ``clean``; a ValueError naming the shapes when ``corrupt`` does not match it (or,
    for a :class:`~.ablation.MeanAblation`, when its reference cannot be averaged for ``clean``)."""
    a = batch_tensors(clean)
    if not a:
        raise ValueError("circuits: the clean batch must contain at least one tensor with a batch axis")
    if isinstance(corrupt, MeanAblation):
        check_reference(corrupt, clean)
        return a[0].shape[0]
    b = batch_tensors(corrupt)
    shapes_a = [tuple(t.shape) for t in a]
    shapes_b = [tuple(t.shape) for t in b]
    if shapes_a != shapes_b:
        raise ValueError(
            f"circuits: clean and corrupt inputs must have the same shapes (the same number of prompts "
            f"and of tokens, token for token), got clean {shapes_a} and corrupt {shapes_b}; pad or choose "
            "prompts whose tokenizations have equal lengths"
        )
    return shapes_a[0][0]


def check_metric(values: Any, rows: int) -> Tensor:
    """``values`` as ``[rows]``; a ValueError when the metric did not give one value per row."""
    if not isinstance(values, Tensor) or values.dim() != 1 or values.shape[0] != rows:
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(
            f"circuits: the metric must return one value per batch row, shape [{rows}], got {got}"
        )
    return values


def prepare(model: Hookable, graph: Graph | None) -> Graph:
    check_hookable(model)
    graph = graph_of(model) if graph is None else graph
    if not isinstance(graph, Graph):
        raise TypeError(f"circuits: graph must be a hooked.circuit_graph.Graph, got {type(graph).__name__}")
    for x in (*graph.senders, *graph.receivers):
        check_hook(model, x.hook)
    return graph


@torch.no_grad()
def sender_outputs(model: Hookable, graph: Graph, batch: Batch) -> Tensor:
    """Every sender's output on ``batch``, stacked: ``[senders, rows, ..., d_model]``."""
    hooks = sorted({s.hook for s in graph.senders})
    _, cache = cache_batch(model, batch, hooks)
    return torch.stack([s.read(cache[s.hook]).detach() for s in graph.senders])


def replacement_outputs(
    model: Hookable, graph: Graph, clean: Batch, corrupt: Batch | MeanAblation, like: Tensor | None = None
) -> Tensor:
    """What each sender's patched edges carry, for the rows of ``clean``: ``[senders, rows, ..., d]``,
    the senders' outputs on the corrupt batch, or their means (:class:`~.ablation.MeanAblation`).

    ``like``: the senders' outputs on ``clean``, if known (a mean over positions needs their shape;
    without it one forward on ``clean`` finds it)."""
    if not isinstance(corrupt, MeanAblation):
        return sender_outputs(model, graph, corrupt)
    rows = check_pair(clean, corrupt)
    mean = mean_outputs(model, graph, corrupt)
    if like is None and needs_clean_shape(corrupt):
        like = sender_outputs(model, graph, clean)
    return expand_mean(mean, rows, None if like is None else tuple(like.shape))


def run_patched_edges(
    model: Hookable,
    clean: Batch,
    corrupt: Batch | MeanAblation,
    masks: Tensor,
    metric: Metric,
    *,
    graph: Graph | None = None,
    chunk: int = 16,
    corrupt_outputs: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    """The metric (mean over rows) of the clean run with each mask's edges patched to ``corrupt``.

    Args:
        masks: ``[sets, senders, receivers]``, nonzero where an edge is patched (a float mask
            patches that fraction of the difference); every nonzero entry must be an edge.
        chunk: edge sets per forward (the batch is the clean batch repeated ``chunk`` times).
        corrupt_outputs: the senders' outputs on ``corrupt`` (:func:`sender_outputs`), if known.

    Returns:
        ``[sets]``.
    """
    graph = prepare(model, graph)
    rows = check_pair(clean, corrupt)
    S, R = len(graph.senders), len(graph.receivers)
    if masks.dim() != 3 or tuple(masks.shape[1:]) != (S, R):
        raise ValueError(
            f"circuits: masks must be [sets, {S} senders, {R} receivers], got {tuple(masks.shape)}"
        )
    bad = (masks != 0) & ~upstream(graph).to(masks.device)
    if bad.any():
        _, i, j = bad.nonzero(as_tuple=True)
        raise ValueError(
            f"circuits: {graph.senders[int(i[0])].name} -> {graph.receivers[int(j[0])].name} is not an edge "
            "of the model's graph (the sender does not run before the receiver)"
        )
    if chunk < 1:
        raise ValueError(f"circuits: chunk must be >= 1, got {chunk}")
    corr = replacement_outputs(model, graph, clean, corrupt) if corrupt_outputs is None else corrupt_outputs
    out = []
    starts = range(0, masks.shape[0], chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="patching edges", leave=False)
    for start in starts:
        m = masks[start : start + chunk]
        out.append(_patched_forward(model, graph, clean, rows, corr, m, metric))
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def _patched_forward(
    model: Hookable, graph: Graph, clean: Batch, rows: int, corr: Tensor, masks: Tensor, metric: Metric
) -> Tensor:
    g, S = masks.shape[0], len(graph.senders)
    tail = tuple(corr.shape[2:])
    masks = masks.to(device=corr.device, dtype=corr.dtype)
    nonzero = (masks != 0).any(0)  # [S, R]
    live = nonzero.any(0)
    # only the senders some edge is patched from are followed (all of them for a circuit, a few for a
    # chunk of single edges): diff[slot[s]] = out_s(corrupt) - out_s(this run), for each row of the
    # repeated batch (set-major)
    used = nonzero.any(1).nonzero().flatten().tolist()
    slot = {i: k for k, i in enumerate(used)}
    diff = corr[used].repeat(1, g, *([1] * len(tail)))
    fired = torch.zeros(S, dtype=torch.bool)
    by_hook: dict[str, tuple[list[int], list[int]]] = {}
    for i, s in enumerate(graph.senders):
        by_hook.setdefault(s.hook, ([], []))[0].append(i)
    reads: dict[int, tuple[Tensor, slice | Tensor]] = {}  # receiver -> (its senders, their slots in diff)
    for j, r in enumerate(graph.receivers):
        if live[j]:
            by_hook.setdefault(r.hook, ([], []))[1].append(j)
            senders = nonzero[:, j].nonzero().flatten()
            slots = [slot[int(i)] for i in senders]
            contiguous = slots == list(range(slots[0], slots[-1] + 1))
            reads[j] = (senders, slice(slots[0], slots[-1] + 1) if contiguous else torch.tensor(slots))

    def make(sends: list[int], recvs: list[int]) -> Callable:
        def fn(act: Tensor, hook: Any) -> Tensor:
            new = act
            if recvs:
                new = act.clone()
                for j in recvs:
                    r = graph.receivers[j]
                    senders, slots = reads[j]
                    if not bool(fired[senders].all()):
                        s = graph.senders[int(senders[~fired[senders]][0])]
                        raise RuntimeError(
                            f"circuits: receiver {r.name} ({r.hook}) ran before sender {s.name} ({s.hook}); "
                            "the graph's ranks do not follow the model's order"
                        )
                    part = diff[slots]
                    m = masks[:, senders, j]  # [g, senders of j]
                    d = torch.einsum("gs,sg...->g...", m, part.view(part.shape[0], g, rows, *tail))
                    view = new[(Ellipsis, *r.index, slice(None))] if r.index else new
                    view += d.reshape(view.shape).to(view.dtype)
            for i in sends:
                if i in slot:
                    diff[slot[i]] -= graph.senders[i].read(new).to(diff.dtype)
                fired[i] = True
            return new

        return fn

    hooks = [(name, make(*ix)) for name, ix in by_hook.items()]
    output = run_with_hooks(model, _repeat(clean, g), hooks)
    values = check_metric(metric(output), g * rows)
    return values.detach().float().view(g, rows).mean(1).cpu()


def edge_patching(
    model: Hookable,
    clean: Batch,
    corrupt: Batch | MeanAblation,
    metric: Metric,
    *,
    graph: Graph | None = None,
    edges: Sequence[tuple[str, str]] | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> EdgeScores:
    """The exact effect of patching each edge alone: ``metric(clean, edge patched) - metric(clean)``.

    ``edges``: ``(sender, receiver)`` names (default: every edge of the graph). One forward per
    ``chunk`` edges; other entries of the result are NaN.
    """
    graph = prepare(model, graph)
    pairs = graph.edges() if edges is None else list(edges)
    si, rj = _edge_indices(graph, pairs)
    S, R = len(graph.senders), len(graph.receivers)
    rows = check_pair(clean, corrupt)
    corr = replacement_outputs(model, graph, clean, corrupt)
    base = _clean_metric(model, clean, metric, rows)
    effects = []
    starts = range(0, len(pairs), chunk)
    if progress and len(pairs) > chunk:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="edge patching", leave=False)
    for start in starts:
        idx = torch.arange(start, min(start + chunk, len(pairs)))
        m = torch.zeros(len(idx), S, R)
        m[torch.arange(len(idx)), si[idx], rj[idx]] = 1
        effects.append(
            run_patched_edges(
                model, clean, corrupt, m, metric, graph=graph, chunk=chunk, corrupt_outputs=corr
            )
        )
    scores = torch.full((S, R), float("nan"))
    if pairs:
        scores[si, rj] = torch.cat(effects) - base
    what = "edge patching" + (", mean ablation" if isinstance(corrupt, MeanAblation) else "")
    names = tuple(x.name for x in graph.senders), tuple(x.name for x in graph.receivers)
    return EdgeScores(*names, scores, what)


def path_patching(
    model: Hookable,
    clean: Batch,
    corrupt: Batch | MeanAblation,
    metric: Metric,
    senders: str | Sequence[str],
    receivers: str | Sequence[str],
    *,
    graph: Graph | None = None,
    chunk: int = 16,
) -> Tensor:
    """The effect of each sender (alone) through ``receivers`` only: ``[len(senders)]``.

    Each sender's corrupt output reaches the receivers' inputs; every other node reads the clean
    run's values (the receivers' own outputs then flow on through the model). ``receivers`` are
    receiver names or node names (a head's node stands for its query, key and value inputs).
    Patching a sender into every receiver after it equals patching its output (node patching).
    """
    graph = prepare(model, graph)
    senders = [senders] if isinstance(senders, str) else list(senders)
    recv = resolve_receivers(graph, [receivers] if isinstance(receivers, str) else receivers)
    rows = check_pair(clean, corrupt)
    S, R = len(graph.senders), len(graph.receivers)
    m = torch.zeros(len(senders), S, R)
    for k, name in enumerate(senders):
        s = graph.sender(name)
        i = graph.senders.index(s)
        for r in recv:
            if s.rank >= r.rank:
                raise ValueError(
                    f"path_patching: sender {s.name} does not run before receiver {r.name} (the sender is "
                    "downstream of, or level with, the receiver), so there is no such path"
                )
            m[k, i, graph.receivers.index(r)] = 1
    base = _clean_metric(model, clean, metric, rows)
    return run_patched_edges(model, clean, corrupt, m, metric, graph=graph, chunk=chunk) - base


def resolve_receivers(graph: Graph, names: Iterable[str]) -> list[Receiver]:
    """Receivers named directly or through their node (a head's node gives its q, k and v inputs)."""
    out: list[Receiver] = []
    for name in names:
        found = [r for r in graph.receivers if r.name == name] or [
            r for r in graph.receivers if r.node == name
        ]
        if not found:
            graph.receiver(name)  # raises, listing the receivers
        out.extend(r for r in found if r not in out)
    return out


def _edge_indices(graph: Graph, pairs: Sequence[tuple[str, str]]) -> tuple[Tensor, Tensor]:
    sidx = {s.name: i for i, s in enumerate(graph.senders)}
    ridx = {r.name: j for j, r in enumerate(graph.receivers)}
    si, rj = [], []
    for s, r in pairs:
        if s not in sidx:
            graph.sender(s)
        if r not in ridx:
            graph.receiver(r)
        if graph.senders[sidx[s]].rank >= graph.receivers[ridx[r]].rank:
            raise ValueError(
                f"circuits: {s} -> {r} is not an edge of the model's graph (the sender is downstream)"
            )
        si.append(sidx[s])
        rj.append(ridx[r])
    return torch.tensor(si, dtype=torch.long), torch.tensor(rj, dtype=torch.long)


@torch.no_grad()
def _clean_metric(model: Hookable, clean: Batch, metric: Metric, rows: int) -> Tensor:
    return check_metric(metric(run_with_hooks(model, clean)), rows).detach().float().mean().cpu()


def _repeat(batch: Batch, times: int) -> Batch:
    """Every batched tensor of ``batch`` repeated ``times`` times along the batch axis (set-major)."""

    def rep(v: Any) -> Any:
        return v.repeat(times, *([1] * (v.dim() - 1))) if isinstance(v, Tensor) and v.dim() > 0 else v

    if isinstance(batch, dict):
        return {k: rep(v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(rep(v) for v in batch)
    return rep(batch)
