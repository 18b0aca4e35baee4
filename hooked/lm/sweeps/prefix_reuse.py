"""Patching sweeps on causal language models that recompute only what a patch changes.

In a causal LM, a patch at position ``p`` in decoder layer ``l`` changes nothing at the positions
before ``p`` and nothing that layers ``0 .. l-1`` compute. So the base run is done once, keeping
its key-value cache and every layer's output, and a patched run recomputes only positions
``p .. T-1`` (on top of the base cache cropped to ``p``) of layers ``l ..`` (on the base run's
output of layer ``l-1``, :mod:`hooked.lm.sweeps.layer_skip`). Patches share forwards as rows of one
batch, as in :func:`interventions.patching.patching_sweep`'s plain path; a forward runs from its
patches' earliest position, and each patch's rows from its own layer on (a ragged forward,
:func:`hooked.lm.sweeps.layer_skip.ragged`: a layer runs the rows of the patches started by
then, its key-value cache cut to as many rows; where the cache cannot be, from the patches'
earliest layer). :func:`plan` chooses which patches go together by a cost model of the forward
(a fixed cost, :data:`FORWARD_OVERHEAD`, plus a cost per row and position, per layer run).
With a per-row position (a padded batch, where the same token sits at other indices), a patch
reuses the positions before the earliest of its rows' positions. A hook
point outside the decoder layers (the embedding, the final norm) is patched with every layer run.

The metric sees the whole sequence's logits, as it would after a full forward: the reused
positions' logits are the base run's. On a T-token prompt with every residual position patched,
a patch recomputes about ``(T + 1) / 2`` positions of half the layers instead of every position
of every layer; the results equal the full recomputation within float noise (``tests/lm``).

A metric that declared the positions it reads (:func:`hooked.sweeps.reads_positions`) gets the
output head run there only (the planner charges the head there only, and a forward whose positions
hold none of them is not run: the base run answers); the logits it is handed are NaN elsewhere, in
one buffer reused from forward to forward unless the metric kept part of it.

:func:`reuse_sweep` is the engine; :class:`hooked.lm.sweeps.strategy.LMSweep` decides when it runs
(``patching_sweep``'s ``reuse_prefix``) and with which cost constants.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from hooked import checks
from hooked.lm.backends.forward import LMForward, per_layer_rows, prefix_cache
from hooked.lm.sweeps import layer_skip
from hooked.lm.text.tokens import batch_ids_and_mask
from hooked.protocol import Batch
from hooked.sweeps import PatchSweep, metric_positions

# A forward's fixed cost (dispatch, reading every weight once) in row-tokens of its compute, the
# one constant of the planner's cost model. Measured for SmolLM2-135M on a 2-core CPU at two
# threads: a forward costs about 60 ms plus 1.6 ms per added row-token, 60 / 1.6 = 37
# (benchmarks/lm.py times the sweeps). It sets how many patches are worth one forward: a larger
# value (a GPU, where a forward's launch cost dwarfs a few more rows) packs more patches per
# forward, a smaller one recomputes fewer positions. Override per sweep:
# patching_sweep(..., strategy=hooked.lm.LMSweep(forward_overhead=...)).
FORWARD_OVERHEAD = 37.0
# At most this many start positions share a band (planning time grows with the cube of the width;
# wider bands recompute many positions for their later patches).
WIDEST_BAND = 8


def causal_lm_forward(model: Any, base: Batch) -> LMForward | None:
    """An :class:`hooked.lm.backends.forward.LMForward` for ``model`` when it is a causal language
    model from :func:`hooked.lm.load` (or a ``hooked.wrap`` / bridge of one) and ``base`` is a token
    batch; ``None`` otherwise."""
    if not hasattr(model, "hook_dict"):
        return None
    try:
        ids, _ = batch_ids_and_mask(base)
        forward = LMForward(model, ())
    except (TypeError, ValueError, AttributeError):
        return None
    can_generate = getattr(forward.hf, "can_generate", None)
    if ids.dim() != 2 or ids.is_floating_point() or not callable(can_generate) or not can_generate():
        return None
    if getattr(getattr(forward.hf, "config", None), "is_encoder_decoder", False):
        return None  # its encoder sees every position: nothing before a patch can be reused
    return forward


def reuse_sweep(
    forward: LMForward,
    sweep: PatchSweep,
    starts: Sequence[int],
    *,
    overhead: float = FORWARD_OVERHEAD,
    widest_band: int = WIDEST_BAND,
) -> Tensor:
    """The metric (mean over the base rows) after each patch of ``sweep``, patch ``j`` run from
    position ``starts[j]`` (0: every position) and from the decoder layer its hook fires in, the
    earlier positions and layers taken from one base run.

    Args:
        forward: from :func:`causal_lm_forward`.
        sweep: the patches, and ``sweep.make_hooks(patches, start)`` that applies them to a forward
            of the positions from ``start`` on.
        starts: each patch's first position to recompute (at most its earliest row's position).
        overhead, widest_band: the planner's constants (:func:`plan`).
    Returns:
        ``[len(sweep.hooks)]``.
    """
    base, names, metric, chunk = sweep.base, sweep.hooks, sweep.metric, sweep.chunk
    ids, mask = batch_ids_and_mask(base)
    mask = torch.ones_like(ids) if mask is None else mask.to(ids.device).long()
    n_rows, length = ids.shape
    position_ids = (mask.cumsum(dim=1) - 1).clamp_min(0)
    stack = forward.backend.layers
    firsts = [layer_skip.layer_of(h, stack[0]) if stack else 0 for h in names]
    reuse_positions = any(starts)
    cache = forward.new_cache(every_position=True) if reuse_positions else None
    with torch.no_grad(), layer_skip.layer_outputs(stack[1] if stack else torch.nn.ModuleList()) as base_run:
        base_logits = forward(ids, mask, position_ids, cache)
    n_layers = len(stack[1]) if stack else 1
    head = layer_skip.head_share(forward.hf, stack[1]) if stack else 0.0

    reads = _read_positions(sweep.metric, length)
    # one forward may hold patches at several layers, each row run from its patch's layer on
    ragged = stack is not None and (cache is None or per_layer_rows(cache))
    scratch: dict[str, Any] = {}  # the declared metric's logits buffer and its version (_declared)

    def run(group: list[int], skip_layers: bool = True) -> Tensor:
        """The metric after each patch of ``group``, in one forward."""
        start, k = min(starts[j] for j in group), len(group)
        if reads is not None and start > reads[-1]:
            # every patch of the group starts after the last position the metric reads, which a
            # decoder computes without looking ahead: the base run's logits answer, no forward runs
            return _declared(metric, reads, forward, (), base_logits, start, k, n_rows, scratch)
        first = min(firsts[j] for j in group) if skip_layers else 0
        uneven = skip_layers and ragged and any(firsts[j] != first for j in group)
        if uneven and any(firsts[a] > firsts[b] for a, b in zip(group, group[1:])):
            # patches in order of first layer: those started by layer l are a prefix of the batch
            order = sorted(range(k), key=lambda i: firsts[group[i]])
            values = run([group[i] for i in order])
            return values[torch.tensor(order, device=values.device).argsort()]
        rows = torch.arange(n_rows, device=ids.device).repeat(k)  # patch-major, as the plain path
        suffix = ids[:, start:].repeat(k, 1)
        skip: Any = contextlib.nullcontext()
        layer_rows = None
        if uneven:  # layer l runs the rows of the patches started by l (layer_skip.ragged)
            assert stack is not None  # ragged: only with a stack
            started = [sum(1 for j in group if firsts[j] <= layer) * n_rows for layer in range(n_layers)]
            joining = [
                _joining(base_run["outputs"], started, first, layer, start)
                for layer in range(first, n_layers)
            ]
            skip = layer_skip.ragged(stack[1], first, started[first:], joining, k * n_rows)
            layer_rows = [max(n, started[first]) for n in started]  # skipped layers: any rows will do
        elif first:  # layers before the group's first patched one: the base run's output
            assert stack is not None  # layers are skipped only on a known stack
            given = base_run["outputs"][first - 1][:, start:].repeat(k, 1, 1)
            skip = layer_skip.skipping(stack[1], first, given, base_run["tuple_len"])
        with torch.no_grad(), forward.hooks(sweep.make_hooks(group, start)), skip:
            past = None if start == 0 else prefix_cache(cache, start, rows, layer_rows)
            args = (suffix, mask.repeat(k, 1), position_ids[:, start:].repeat(k, 1), past)
            if reads is not None:  # the output head only where the metric reads
                return _declared(metric, reads, forward, args, base_logits, start, k, n_rows, scratch)
            logits = forward(*args)
            if start:
                logits = torch.cat([base_logits[:, :start].repeat(k, 1, 1), logits], dim=1)
            values = checks.metric_values(metric(logits), k * n_rows, "patching_sweep")
            return values.float().reshape(k, n_rows).mean(dim=1)

    def plan_for(layer_firsts: Sequence[int]) -> list[list[int]]:
        key = (tuple(starts), tuple(layer_firsts), n_layers, head, n_rows, length, chunk, overhead)
        return [
            list(g) for g in _plan_once(*key, widest_band, None if reads is None else tuple(reads), ragged)
        ]

    groups = plan_for(firsts)
    values = _sweep(run, groups, len(names), sweep.progress)
    # Skipping layers assumes that a layer reads nothing of the layers before it but the residual
    # stream (true of every layout hooked.lm knows; not of models that share keys and values
    # across layers). The first sweep on a stack of layers recomputes one patch (the one with the
    # fewest positions) through every layer to check it; later sweeps on the same layers trust it.
    skipped = [j for g in groups if min(firsts[j] for j in g) > 0 for j in g]
    if skipped and stack is not None and not _checked(stack[1]):  # skipped: only with a stack
        j = max(skipped, key=lambda i: starts[i])
        again = run([j], skip_layers=False)
        if torch.allclose(again, values[j : j + 1], atol=1e-4, rtol=1e-4):
            _CHECKED[stack[1]] = tuple(map(id, stack[1]))
        else:
            warnings.warn(
                f"reuse_prefix: starting at the patched layer changed the result of a patch at "
                f"{names[j]!r} ({values[j].item():.6g} against {again.item():.6g} through every "
                "layer); this model's layers depend on each other beyond the residual stream, so "
                "every layer is recomputed",
                stacklevel=3,
            )
            every_layer = plan_for([0] * len(names))
            values = _sweep(lambda g: run(g, skip_layers=False), every_layer, len(names), sweep.progress)
    return values


def _joining(
    outputs: dict[int, Tensor], started: list[int], first: int, layer: int, start: int
) -> Tensor | None:
    """The rows that join a ragged forward (:func:`layer_skip.ragged`) at ``layer``: the base run's
    output of the layer before (positions ``start ..``), once per patch that starts there
    (``started[l]``: the rows started by layer ``l``); ``None`` where none does, or where the rows
    of the forward's first layer ``first == 0`` come from the embedding."""
    if layer == 0:
        return None
    new = started[layer] - (started[layer - 1] if layer > first else 0)
    if not new:
        return None
    base = outputs[layer - 1][:, start:]
    return base.repeat(new // base.shape[0], 1, 1)


def _read_positions(metric: Callable, length: int) -> list[int] | None:
    """The positions (``0 .. length-1``, sorted) ``metric`` declared it reads; ``None``: all."""
    declared = metric_positions(metric)
    if declared is None:
        return None
    bad = [p for p in declared if not -length <= p < length]
    if bad:
        raise ValueError(
            f"patching_sweep: the metric reads positions {bad}, outside a prompt of {length} tokens"
        )
    return sorted({p % length for p in declared})


def _declared(
    metric: Callable,
    reads: list[int],
    forward: LMForward,
    args: tuple,
    base: Tensor,
    start: int,
    k: int,
    rows: int,
    scratch: dict[str, Any],
) -> Tensor:
    """The metric of a forward (``args``: from position ``start`` on, ``k`` patches of ``rows``
    rows) whose output head runs only at the positions the metric reads (``reads``); the earlier
    ones are the base run's, every other position is NaN (a metric reading one shows NaN: an error).

    The logits handed to the metric live in ``scratch["logits"]``, kept for the next forward of
    the sweep (a fresh tensor of that size costs several times its filling, in page faults); the
    buffer is let go, never refilled, when the metric kept any part of it. Every forward writes
    the same positions, so the NaN elsewhere is filled in once, and again only after a metric
    wrote into its logits (torch's version counter of the buffer says so)."""
    new = [p - start for p in reads if p >= start]
    old = [p for p in reads if p < start]
    head = forward(*args, keep=torch.tensor(new, device=base.device)) if new else None
    n = k * rows
    buffer = scratch.get("logits")
    if buffer is None or buffer.shape[0] < n:
        buffer = scratch["logits"] = base.new_full((n, base.shape[1], base.shape[2]), math.nan)
    elif scratch.get("version") != buffer._version:  # written since it was last NaN off the reads
        buffer.fill_(math.nan)
    logits = buffer[:n]
    if head is not None:
        logits[:, [p + start for p in new]] = head.to(logits.dtype)
    if old:
        logits[:, old] = base[:, old].repeat(k, 1, 1)
    version = buffer._version
    values = checks.metric_values(metric(logits), n, "patching_sweep").float()
    if values.isnan().any():
        raise ValueError(
            f"patching_sweep: the metric gave NaN on logits computed only at the positions it declared "
            f"(reads_positions: {reads}); it reads other positions too: declare them, or none"
        )
    out = values.reshape(k, rows).mean(dim=1)
    del values, logits
    if not _alone(buffer):
        del scratch["logits"]  # the metric kept (a view of) the logits: they stay as they were given
    else:  # the metric wrote into its logits: fill them again before the next forward
        scratch["version"] = version if buffer._version == version else -1
    return out


def _alone(t: Tensor) -> bool:
    """Whether ``t`` is the only tensor on its memory (``False`` where torch cannot say)."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:
        return False
    storage = t.untyped_storage()  # a second holder of the memory, beside ``t``
    return use_count(storage._cdata) == 2


# layer stacks on which skipping was checked -> the ids of their layers then
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _checked(layers: torch.nn.ModuleList) -> bool:
    return _CHECKED.get(layers) == tuple(map(id, layers))


def _sweep(run: Callable[[list[int]], Tensor], groups: list[list[int]], n: int, progress: bool) -> Tensor:
    values: Tensor | None = None
    for group in _progress(groups, progress):
        got = run(group)
        if values is None:
            values = got.new_empty(n)
        values[torch.tensor(group, device=got.device)] = got
    assert values is not None
    return values


def plan(
    starts: Sequence[int],
    firsts: Sequence[int],
    *,
    n_layers: int,
    head: float,
    rows: int,
    length: int,
    chunk: int,
    overhead: float = FORWARD_OVERHEAD,
    widest_band: int = WIDEST_BAND,
    head_reads: Sequence[int] | None = None,
    ragged: bool = False,
) -> list[list[int]]:
    """Which patches share a forward: groups of indices into ``starts`` / ``firsts``.

    Patch ``j`` needs positions ``starts[j] ..`` of layers ``firsts[j] ..`` recomputed (and the
    output head, worth ``head`` layers, at every position run, or only at the positions of
    ``head_reads`` it runs, when the metric declared them); a forward runs from its patches'
    earliest position and earliest layer. The patches are cut into bands of up to ``widest_band``
    neighbouring start positions and each band, in order of first layer, into forwards of at most
    ``chunk`` patches, so that the modelled cost ``sum over forwards of layers run * (overhead +
    rows * patches * positions run) + head * (overhead + rows * patches * head positions)`` is
    least (exact dynamic programmes, over bands and over the cuts within a band). A forward whose
    positions hold none of ``head_reads`` costs nothing (the base run answers it). ``ragged``: a
    patch's rows run only the layers from its own first one on (:func:`layer_skip.ragged`), so
    ``rows * patches * positions run`` is counted per layer for the patches started by then.
    """
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: expected at least 1 patch per forward")
    distinct = sorted(set(starts))

    # positions at which the head runs in a forward from each position (``None``: every one run)
    read_from = (
        None if head_reads is None else [sum(1 for r in head_reads if r >= p) for p in range(length + 1)]
    )

    def cost_of(layers: int, patches: int, first_pos: int, depth: int) -> float:
        """The modelled cost of a forward of ``patches`` patches from ``first_pos``, ``layers`` deep,
        its patches' rows run through ``depth`` layers in all."""
        positions = length - first_pos
        read = positions if read_from is None else read_from[first_pos]
        if not read:
            return 0.0  # none the metric reads: the base run answers, no forward runs
        return layers * overhead + rows * depth * positions + head * (overhead + rows * patches * read)

    by_start: dict[int, list[int]] = {s: [] for s in distinct}
    for j in range(len(starts)):
        by_start[starts[j]].append(j)

    def band(i: int, k: int) -> tuple[float, list[list[int]]]:
        """The best forwards for the patches starting at ``distinct[i:k]``."""
        items = sorted((j for s in distinct[i:k] for j in by_start[s]), key=lambda j: (firsts[j], starts[j]))
        # a forward may begin where the first layer changes, and every `chunk` patches from there
        # or from the band's beginning (so that plain packing in this order is one of the plans)
        runs = [a for a in range(len(items)) if a == 0 or firsts[items[a]] != firsts[items[a - 1]]]
        cuts = {c for a, b in zip(runs, runs[1:] + [len(items)]) for c in range(a, b, chunk)}
        cuts = sorted(cuts | set(range(0, len(items), chunk)) | {len(items)})
        seg_first = [min(starts[j] for j in items[a:b]) for a, b in zip(cuts, cuts[1:])]
        depth_to = [0]  # layers run by the patches items[:a], each from its own first layer
        for j in items:
            depth_to.append(depth_to[-1] + n_layers - firsts[j])
        best, back = [0.0] + [math.inf] * (len(cuts) - 1), [0] * len(cuts)
        for e in range(1, len(cuts)):
            first_pos = length
            for c in range(e - 1, -1, -1):
                n = cuts[e] - cuts[c]
                if n > chunk:
                    break
                first_pos = min(first_pos, seg_first[c])
                layers = n_layers - firsts[items[cuts[c]]]
                depth = depth_to[cuts[e]] - depth_to[cuts[c]] if ragged else layers * n
                cost = best[c] + cost_of(layers, n, first_pos, depth)
                if cost < best[e]:
                    best[e], back[e] = cost, c
        groups, e = [], len(cuts) - 1
        while e:
            groups.append(items[cuts[back[e]] : cuts[e]])
            e = back[e]
        return best[-1], groups[::-1]

    best, back = [0.0] + [math.inf] * len(distinct), [0] * (len(distinct) + 1)
    bands: dict[tuple[int, int], list[list[int]]] = {}
    for k in range(1, len(distinct) + 1):
        for i in range(max(0, k - widest_band), k):
            cost, bands[i, k] = band(i, k)
            if best[i] + cost < best[k]:
                best[k], back[k] = best[i] + cost, i
    groups, k = [], len(distinct)
    while k:
        groups = bands[back[k], k] + groups
        k = back[k]
    return groups


@functools.lru_cache(maxsize=32)
def _plan_once(
    starts: tuple[int, ...],
    firsts: tuple[int, ...],
    n_layers: int,
    head: float,
    rows: int,
    length: int,
    chunk: int,
    overhead: float,
    widest_band: int,
    head_reads: tuple[int, ...] | None,
    ragged: bool,
) -> tuple[tuple[int, ...], ...]:
    """:func:`plan`, remembered: a sweep run again on the same grid plans nothing again."""
    groups = plan(
        starts,
        firsts,
        n_layers=n_layers,
        head=head,
        rows=rows,
        length=length,
        chunk=chunk,
        overhead=overhead,
        widest_band=widest_band,
        head_reads=head_reads,
        ragged=ragged,
    )
    return tuple(tuple(g) for g in groups)


def _progress(it: Any, progress: bool) -> Any:
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="patching (prefix reuse)", leave=False)
