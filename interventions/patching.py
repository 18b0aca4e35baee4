"""Activation patching, generic against hook names and batched over many patches.

Activation patching runs a *base* input with the activation at one hook (optionally at one
position, or one time step of a recurrent hook point) replaced by the activation a *source*
input produced there, and measures how the output moves.

* :func:`patch_hook` builds the hook function for one patch.
* :func:`patch` runs one patched forward.
* :func:`patching_pairs` runs that grid for many (base, source) pairs, shared over the ranks
  under ``torchrun``.
* :func:`patching_sweep` measures a grid of patches (hooks x positions): the base batch is
  repeated once per patch and every patch of the grid rides in the same forward, each row
  patched only at its own (hook, position). Hook points that run once per step (an RNN's state)
  take the position as the step. ``chunk`` bounds how many patches share a forward;
  ``batched=False`` gives the one-forward-per-patch loop (TransformerLens's
  ``generic_activation_patch`` pattern), kept as a reference for tests and benchmarks.

Everything goes through ``run_with_cache`` / ``run_with_hooks``, so it runs on any
:class:`hooked.Hookable`: toy models, RNNs, ``hooked.wrap`` and TransformerLens's bridge.

**Padded batches.** A batch may be a dict of keyword arguments, e.g. a language model's padded
batch ``{"input_ids", "attention_mask"}`` (``hooked.lm.tokenize``). A position is then an index
into the padded rows: with *left* padding, negative positions count back from each row's last real
token in base and source alike (``-1``: the last real token); a ``[rows]`` tensor of positions
(``hooked.lm.last_positions(batch)``) names one index per row, for any padding, and
``source_position`` the source rows' own when they differ from the base's.

**Devices.** Source activations are moved to the device of the activation they replace, so a model
split over devices (``hooked.lm.load(..., device_map=...)``) is patched like any other.

**What is refused.** Every path of :func:`patching_sweep` (the reference loop, the plain batched
sweep and a strategy's) checks its arguments with the same functions of :mod:`hooked.checks` before
any patched forward, and so refuses the same inputs with the same message: hooks that are unknown,
given twice or two names of one hook point; positions that are not integers or are out of range of
the source's (or, in the hook, the base's) activation; a chunk that is not a positive integer; a
source whose rows are neither the base's nor one; a metric that does not return one value per row;
whole-activation patches of another shape. A patch whose hook point never ran (or never reached
the step it patches) is an error, not the base's numbers. Sweeps and attribution patching on one
model take turns when started from several threads (:func:`hooked.protocol.exclusive`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from hooked import checks
from hooked.hook_fns import at_step
from hooked.protocol import (
    Batch,
    Hookable,
    cache_batch,
    check_hook,
    exclusive,
    hook_point,
    run_with_hooks,
)
from hooked.sweeps import PatchSweep, SweepStrategy, run_sweep

Metric = Callable[[Any], Tensor]  # forward output -> one value per batch row


def _is_recurrent(model: Hookable, name: str, hooks: Any = None) -> bool:
    """Whether ``name`` runs once per step (``hooks``: the model's ``hook_dict``, when read already;
    a bridge builds it afresh on each read)."""
    return bool(getattr(hook_point(model, name, hooks), "recurrent", False))


Position = int | slice | Tensor | None  # a [rows] tensor: one index per row


def source_activations(model: Hookable, source: Batch, hooks: Sequence[str]) -> dict[str, Tensor]:
    """The source run's activations at ``hooks`` (per-step points stacked on their time axis)."""
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    for h in hooks:
        check_hook(model, h)
    with torch.no_grad():
        _, cache = cache_batch(model, source, hooks)
    not_run = [h for h in hooks if cache.get(h) is None]
    if not_run:
        raise ValueError(
            f"hook point(s) {', '.join(map(repr, not_run))} exist on {type(model).__name__} but did not "
            "run on the source batch, so there is nothing to patch from"
        )
    return {h: cache[h] for h in hooks}


def patch_hook(
    source: Tensor,
    position: Position = None,
    *,
    pos_dim: int = 1,
    step: int | None = None,
    source_position: Position = None,
) -> Callable[[Tensor, Any], Tensor]:
    """A hook function that writes ``source`` into the activation.

    Args:
        source: the source activation, the same shape as the activation (for a per-step hook
            point: the stacked [batch, time, ...] tensor; the hook takes step ``step``); one row
            is written into every row. With a ``position``, only the other axes than ``pos_dim``
            must match.
        position: patch only this index (or slice) along ``pos_dim``, or one index per row (a
            ``[rows]`` tensor); ``None`` patches all.
        pos_dim: the position axis of the activation.
        step: for a per-step hook point, the step to patch (the hook runs only there).
        source_position: where to read in ``source`` (default: ``position``).
    """
    return _patch_hook(source, position, pos_dim, step, source_position, None, "patch_hook")


def _patch_hook(
    source: Tensor,
    position: Position,
    pos_dim: int,
    step: int | None,
    source_position: Position,
    seen: set | None,
    caller: str,
) -> Callable[[Tensor, Any], Tensor]:
    """:func:`patch_hook`, adding each step it runs at to ``seen``."""
    if source_position is None:
        source_position = position

    def hook(act: Tensor, hook: Any) -> Tensor:
        if seen is not None:
            seen.add(getattr(hook, "step", 0))
        src = source if step is None else source.select(1, step)
        src = src.to(act.device, act.dtype)  # the source may have run on another device
        _same_rows(src, act, hook.name, caller)
        if position is None:
            _same_shape(src.shape[1:], act.shape[1:], hook.name, caller)
            return src.expand_as(act).clone()
        out = act.movedim(pos_dim, 1).clone()
        src = src.movedim(pos_dim, 1)
        _same_shape(
            src.shape[2:], out.shape[2:], hook.name, caller, f"besides the positions (axis {pos_dim})"
        )
        for p, t, whose in ((position, out, "base"), (source_position, src, "source")):
            if not isinstance(p, slice):
                where = f"the {whose}'s activation at {hook.name!r} (axis {pos_dim})"
                checks.position_in_range(p, t.shape[1], caller, where)
        if isinstance(position, Tensor) or isinstance(source_position, Tensor):
            rows = torch.arange(out.shape[0], device=out.device)
            src_rows = rows if src.shape[0] == out.shape[0] else torch.zeros_like(rows)
            out[rows, _row_index(position, rows)] = src[src_rows, _row_index(source_position, rows)]
        else:
            out[:, position] = src[:, source_position]
        return out.movedim(1, pos_dim)

    return hook if step is None else at_step(step, hook)


def _same_rows(src: Tensor, act: Tensor, name: str | None, caller: str) -> None:
    if src.dim() == 0 or act.dim() == 0 or src.shape[0] not in (act.shape[0], 1):
        raise ValueError(
            f"{caller}: the source's activation at {name!r} has shape {tuple(src.shape)}, the base's "
            f"{tuple(act.shape)}; the source needs the base's rows (or one row for all of them)"
        )


def _same_shape(src: Any, act: Any, name: str | None, caller: str, what: str = "per row") -> None:
    if tuple(src) != tuple(act):
        raise ValueError(
            f"{caller}: the source's activation at {name!r} is {tuple(src)} {what}, the base's "
            f"{tuple(act)}; patching needs the same shapes (e.g. prompts of the same number of tokens)"
        )


def _row_index(position: Any, rows: Tensor) -> Tensor:
    if isinstance(position, Tensor):
        if position.shape != rows.shape:
            raise ValueError(
                f"per-row positions must be [rows] = {tuple(rows.shape)}, got {tuple(position.shape)}"
            )
        return position.to(rows.device)
    if isinstance(position, int):
        return torch.full_like(rows, position)
    raise TypeError(
        f"with per-row positions, the other position must be an int or a tensor, got {position!r}"
    )


def patch(
    model: Hookable,
    base: Batch,
    source: Batch | dict[str, Tensor],
    hook: str,
    position: Position = None,
    *,
    pos_dim: int = 1,
    source_position: Position = None,
) -> Any:
    """Run ``base`` with the activation at ``hook`` (at ``position``) taken from ``source``.

    ``source`` is a batch, or the source activations already cached (a dict whose keys are hook
    names: ``{hook: tensor}``). For a per-step hook point ``position`` is the step. A ``[rows]``
    tensor ``position`` patches one index per row (e.g. each row's last real token of a padded
    batch), read in the source at ``source_position`` (default: the same indices). A source of
    one row is patched into every base row. A hook point that does not run on ``base`` (or does
    not reach the step) is an error.
    """
    caller = "patch"
    check_hook(model, hook)
    n_rows = checks.batch_rows(base, caller, "base batch")
    position = _one_position(position, caller, n_rows)
    source_position = _one_position(source_position, caller, n_rows)
    with exclusive(model):
        acts = source if _are_activations(model, source) else source_activations(model, source, [hook])
        if hook not in acts:
            raise KeyError(
                f"patch: the source activations have no entry for {hook!r} (they hold {list(acts)})"
            )
        src = acts[hook]
        if not isinstance(src, Tensor) or src.dim() == 0:
            raise ValueError(f"patch: the source activation at {hook!r} must be a tensor with a batch axis")
        checks.source_rows(src.shape[0], n_rows, caller, f"'s activation at {hook!r}")
        recurrent = _is_recurrent(model, hook)
        seen: set = set()
        if recurrent:
            same_step = source_position is None or (
                isinstance(source_position, int) and source_position == position
            )
            if (position is not None and not isinstance(position, int)) or not same_step:
                raise TypeError(
                    f"patch: {hook!r} runs once per step; its position is one step (an int), read at the "
                    "same step of the source"
                )
            if position is None:
                fn = _all_steps_hook(src, seen)
                steps = set(range(src.shape[1]))
            else:
                _check_step(position, src, hook, caller)
                fn = _patch_hook(src, None, pos_dim, position, None, seen, caller)
                steps = {position}
        else:
            if position is not None:
                checks.axis(pos_dim, src.dim(), caller, "pos_dim", f"the activation at {hook!r}")
            fn = _patch_hook(src, position, pos_dim, None, source_position, seen, caller)
            steps = None
        out = run_with_hooks(model, base, [(hook, fn)])
        _check_applied(caller, [(hook, steps, seen)])
    return out


def _one_position(position: Any, caller: str, rows: int) -> Position:
    """A position of :func:`patch`: None, a slice, an int, or a ``[rows]`` integer tensor."""
    if position is None or isinstance(position, slice):
        return position
    (checked,) = checks.positions([position], caller, rows=rows)
    return checked


def _check_step(step: int, src: Tensor, hook: str, caller: str) -> None:
    if not 0 <= step < src.shape[1]:
        raise ValueError(
            f"{caller}: step {step} is out of range for {hook!r}, whose source ran {src.shape[1]} steps "
            f"(0 .. {src.shape[1] - 1}); a per-step hook point takes steps counted from 0"
        )


def _check_applied(caller: str, patches: Sequence[tuple[str, set | None, set]]) -> None:
    """Each ``(hook, steps, seen)``: the patch's hook ran (at every step of ``steps``, where given),
    else the forward's numbers are the base's, not the patch's."""
    for name, steps, seen in patches:
        if not seen:
            raise ValueError(
                f"{caller}: hook point {name!r} did not run in the patched forward, so its patch was never "
                "applied; patch hook points that run on the base batch"
            )
        if steps is not None and not steps <= seen:
            missing = sorted(steps - seen)
            raise ValueError(
                f"{caller}: hook point {name!r} ran {len(seen)} step(s) on the base batch, so step(s) "
                f"{missing[:10]} of the patch (from the source's {max(steps) + 1} steps) never ran; "
                "give base and source the same number of steps"
            )


def _are_activations(model: Hookable, source: Any) -> bool:
    """Whether ``source`` is cached activations (a dict keyed by hook names), not a dict batch."""
    if not isinstance(source, dict) or not source:
        return False
    hooks = model.hook_dict
    return all(isinstance(k, str) and k in hooks for k in source)


def _all_steps_hook(stacked: Tensor, seen: set | None = None) -> Callable[[Tensor, Any], Tensor]:
    def hook(act: Tensor, hook: Any) -> Tensor:
        if seen is not None:
            seen.add(getattr(hook, "step", 0))
        if hook.step >= stacked.shape[1]:
            raise ValueError(
                f"patch: hook point {hook.name!r} runs more steps on the base batch than the source's "
                f"{stacked.shape[1]}; give base and source the same number of steps"
            )
        src = stacked.select(1, hook.step).to(act.device, act.dtype)
        _same_rows(src, act, hook.name, "patch")
        _same_shape(src.shape[1:], act.shape[1:], hook.name, "patch")
        return src.expand_as(act).clone()

    return hook


def patching_sweep(
    model: Hookable,
    base: Batch,
    source: Batch,
    hooks: Sequence[str],
    metric: Metric,
    positions: Sequence[int | Tensor] | None = None,
    *,
    pos_dim: int = 1,
    chunk: int | None = None,
    batched: bool = True,
    reuse_prefix: bool | None = None,
    strategy: SweepStrategy | None = None,
    progress: bool = False,
) -> Tensor:
    """The metric after every (hook, position) patch from ``source`` into ``base``.

    Args:
        hooks: the hook points to patch (e.g. every layer's residual stream); each once (a name
            given twice, or two names of one hook point, is refused).
        metric: output of a forward -> one value per batch row ([rows]).
        positions: indices along ``pos_dim`` to patch one at a time (for per-step hook points:
            steps, from 0), each an int or a ``[rows]`` tensor of one index per base row (the same
            indices are read in the source). ``None`` patches each hook's whole activation once.
        chunk: at most this many patches per forward, a positive integer (default: all of them).
        batched: ``False`` runs one forward per patch (the reference loop).
        reuse_prefix: whether the model's sweep strategy (:mod:`hooked.sweeps`) runs the
            batched sweep, reusing what the base run computed before each patch (a causal
            language model: the keys, values and layer outputs before each patch's position and
            layer; same results within float noise). ``None`` (default): where a strategy takes
            the sweep; ``True``: required (an error where none does); ``False``: the plain
            batched path, every row computing everything.
        strategy: the sweep strategy to ask instead of the installed ones (e.g. one with other
            cost constants).
    Returns:
        [len(hooks), len(positions)] (or [len(hooks)] when ``positions`` is None): the metric
        averaged over the base batch's rows.
    """
    caller = "patching_sweep"
    hooks = checks.hook_list(model, hooks, caller)
    checks.function(metric, "metric", caller)
    n_rows = checks.batch_rows(base, caller, "base batch")
    positions = checks.positions(positions, caller, rows=n_rows)
    if chunk is not None:
        checks.positive(chunk=chunk)
    checks.flag(batched, "batched", caller)
    checks.flag(reuse_prefix, "reuse_prefix", caller, none=True)
    if strategy is not None:
        checks.function(strategy, "strategy", caller)
    points = model.hook_dict  # read once: a bridge builds it afresh on each read
    recurrent = {h: _is_recurrent(model, h, points) for h in hooks}  # patched by step
    with exclusive(model):
        acts = _sources(model, source, hooks, recurrent, n_rows, positions, pos_dim, caller)
        grid = [(h, p) for h in hooks for p in (positions if positions is not None else [None])]
        shape = (len(hooks), len(positions)) if positions is not None else (len(hooks),)
        applied: list[tuple[str, set | None, set]] = []
        if not batched:
            values = []
            with torch.no_grad():
                for h, p in _progress(grid, progress):
                    out = run_with_hooks(
                        model, base, [(h, _reference_hook(recurrent[h], acts[h], h, p, pos_dim, applied))]
                    )
                    values.append(checks.metric_values(metric(out), n_rows, caller).float().mean())
            _check_applied(caller, applied)
            return torch.stack(values).reshape(shape)

        chunk = chunk or len(grid)
        if reuse_prefix is not False:
            per_row = (
                None if positions is None else [_positions_of(p, n_rows, acts[h].device) for h, p in grid]
            )
            sweep = PatchSweep(
                model=model,
                base=base,
                hooks=tuple(h for h, _ in grid),
                positions=None if per_row is None else tuple(per_row),
                pos_dim=pos_dim,
                sources=acts,
                metric=metric,
                rows=n_rows,
                chunk=chunk,
                required=bool(reuse_prefix),
                progress=progress,
                make_hooks=lambda patches, start=0: _grid_hooks(
                    recurrent, [grid[j] for j in patches], acts, n_rows, pos_dim, start, applied
                ),
            )
            values = run_sweep(sweep, strategy)
            if values is not None:
                _check_applied(caller, applied)
                return values.reshape(shape)
        results = []
        with torch.no_grad():
            for start in _progress(range(0, len(grid), chunk), progress):
                part = grid[start : start + chunk]
                repeated = _repeat_batch(base, len(part))
                fwd_hooks = _grid_hooks(recurrent, part, acts, n_rows, pos_dim, 0, applied)
                out = run_with_hooks(model, repeated, fwd_hooks)
                values = checks.metric_values(metric(out), len(part) * n_rows, caller)
                results.append(values.float().reshape(len(part), n_rows).mean(dim=1))
        _check_applied(caller, applied)
        return torch.cat(results).reshape(shape)


def _sources(
    model: Hookable,
    source: Batch,
    hooks: list[str],
    recurrent: Mapping[str, bool],
    n_rows: int,
    positions: list[int | Tensor] | None,
    pos_dim: int,
    caller: str,
) -> dict[str, Tensor]:
    """The source's activations at ``hooks``, checked against the base's rows and the positions
    (a source of one row repeated for every base row)."""
    acts = source_activations(model, source, hooks)
    out = {}
    for h in hooks:
        a = acts[h]
        where = f"the source's activation at {h!r}"
        if a.dim() == 0:
            raise ValueError(f"{caller}: {where} is a scalar; there is nothing to patch row by row")
        checks.source_rows(a.shape[0], n_rows, caller, f"'s activation at {h!r}")
        if positions is not None:
            if recurrent[h]:
                for p in positions:
                    if isinstance(p, Tensor):
                        raise TypeError(
                            f"{caller}: {h!r} runs once per step; its positions are steps, one int per patch"
                        )
                    _check_step(p, a, h, caller)
            else:
                axis = checks.axis(pos_dim, a.dim(), caller, "pos_dim", where)
                for p in positions:
                    checks.position_in_range(p, a.shape[axis], caller, f"{where} (axis {axis})")
        out[h] = a.expand(n_rows, *a.shape[1:]) if a.shape[0] != n_rows else a
    return out


def _reference_hook(
    recurrent: bool, src: Tensor, h: str, p: int | Tensor | None, pos_dim: int, applied: list
) -> Callable:
    """The one-patch hook of the reference loop (:func:`patch_hook`, as :func:`patch` builds it;
    ``recurrent``: ``h`` runs once per step)."""
    seen: set = set()
    if recurrent:
        if p is None:
            applied.append((h, set(range(src.shape[1])), seen))
            return _all_steps_hook(src, seen)
        applied.append((h, {p}, seen))
        return _patch_hook(src, None, pos_dim, p, None, seen, "patching_sweep")
    applied.append((h, None, seen))
    return _patch_hook(src, p, pos_dim, None, None, seen, "patching_sweep")


def patching_pairs(
    model: Hookable,
    pairs: Sequence[tuple[Batch, Batch]],
    hooks: Sequence[str],
    metric: Metric | Sequence[Metric],
    positions: Sequence[int] | None = None,
    *,
    pos_dim: int = 1,
    chunk: int | None = None,
) -> Tensor:
    """:func:`patching_sweep` for every ``(base, source)`` pair: ``[pairs, hooks(, positions)]``.

    ``metric`` is one function for every pair or one per pair (e.g. each pair's own answer). Under
    ``torchrun`` the pairs are shared over the ranks (:func:`hooked.distributed.sweep`) and every
    rank gets the whole result, the same as in one process.
    """
    from hooked import distributed

    pairs = list(pairs)
    if not pairs:
        raise ValueError("patching_pairs: pairs is empty; give at least one (base, source) pair")
    bad = [i for i, p in enumerate(pairs) if not (isinstance(p, (tuple, list)) and len(p) == 2)]
    if bad:
        raise TypeError(
            f"patching_pairs: pair {bad[0]} is not a (base, source) pair: {type(pairs[bad[0]]).__name__}"
        )
    metrics = list(metric) if isinstance(metric, (list, tuple)) else [metric] * len(pairs)
    if len(metrics) != len(pairs):
        raise ValueError(f"patching_pairs: {len(metrics)} metrics for {len(pairs)} pairs")
    for m in metrics:
        checks.function(m, "metric", "patching_pairs")
    hooks = checks.hook_list(model, hooks, "patching_pairs")  # refused before any pair runs

    def one(i: int) -> Tensor:
        base, source = pairs[i]
        return patching_sweep(model, base, source, hooks, metrics[i], positions, pos_dim=pos_dim, chunk=chunk)

    return torch.stack(distributed.sweep(one, range(len(pairs)), gather="all"))


def _grid_hooks(
    recurrent_at: Mapping[str, bool],
    part: list[tuple[str, int | None]],
    acts: dict[str, Tensor],
    n_rows: int,
    pos_dim: int,
    start: int = 0,
    applied: list | None = None,
) -> list[tuple[str, Callable]]:
    """One hook per hook point; it patches, in one indexing op, the rows of every patch aimed at it.
    ``start > 0``: the forward computes only the positions from ``start`` on (along ``pos_dim``).
    ``recurrent_at``: whether each hook point runs once per step (patched by step).
    ``applied`` collects ``(hook, steps, seen)`` for :func:`_check_applied`."""
    fwd = []
    for h, (rows, src_rows, positions) in _rows_by_hook(part, acts, n_rows).items():
        src = acts[h]
        recurrent = recurrent_at[h]
        if start and (positions[0] is None or recurrent):
            raise ValueError(
                f"patching_sweep: {h!r} is patched {'by step' if recurrent else 'whole'}; only patches at "
                "positions can run on the positions from a later one on"
            )
        seen: set = set()
        if positions[0] is None:
            steps = set(range(src.shape[1])) if recurrent else None
            fn = _rows_hook(h, src, rows, src_rows, recurrent, seen)
        else:
            pos = torch.cat([_positions_of(p, n_rows, src.device) for p in positions])
            if recurrent:
                steps = set(pos.tolist())
                fn = _step_rows_hook(src, rows, src_rows, pos, seen)
            else:
                steps = None
                fn = _position_rows_hook(h, src, rows, src_rows, pos, pos_dim, start, seen)
        if applied is not None:
            applied.append((h, steps, seen))
        fwd.append((h, fn))
    return fwd


def _rows_by_hook(
    part: Sequence[tuple[str, Any]], acts: dict[str, Tensor], n_rows: int
) -> dict[str, tuple[Tensor, Tensor, list[Any]]]:
    """For each hook point of ``part`` (``(hook, position)`` patches, one per ``n_rows`` block of the
    repeated batch: row r of patch k is batch row ``k * n_rows + r``): the batch rows it patches,
    the source rows they read, and its patches' positions."""
    by_hook: dict[str, list[tuple[int, Any]]] = {}
    for k, (h, p) in enumerate(part):
        by_hook.setdefault(h, []).append((k, p))
    out = {}
    for h, items in by_hook.items():
        device = acts[h].device
        ks = torch.tensor([k for k, _ in items], device=device)
        rows = (ks[:, None] * n_rows + torch.arange(n_rows, device=device)).reshape(-1)  # [patches*rows]
        src_rows = torch.arange(n_rows, device=device).repeat(len(items))
        out[h] = (rows, src_rows, [p for _, p in items])
    return out


def _positions_of(p: int | Tensor, n_rows: int, device: torch.device) -> Tensor:
    """One position per base row: an int repeated, or a [rows] tensor as is."""
    if isinstance(p, Tensor):
        if p.shape != (n_rows,):
            raise ValueError(
                f"a per-row position must be a [{n_rows}] tensor (one per base row), got {tuple(p.shape)}"
            )
        return p.to(device=device, dtype=torch.long)
    return torch.full((n_rows,), int(p), dtype=torch.long, device=device)


def _rows_hook(
    name: str, src: Tensor, rows: Tensor, src_rows: Tensor, recurrent: bool, seen: set
) -> Callable:
    def hook(act: Tensor, hook: Any) -> Tensor:
        seen.add(getattr(hook, "step", 0))
        if recurrent and hook.step >= src.shape[1]:
            raise ValueError(
                f"patching_sweep: hook point {name!r} runs more steps on the base batch than the source's "
                f"{src.shape[1]}; give base and source the same number of steps"
            )
        s = src.select(1, hook.step) if recurrent else src
        _same_shape(s.shape[1:], act.shape[1:], name, "patching_sweep")
        out = act.clone()
        out[rows.to(act.device)] = s[src_rows].to(act.device, act.dtype)
        return out

    return hook


def _position_rows_hook(
    name: str,
    src: Tensor,
    rows: Tensor,
    src_rows: Tensor,
    pos: Tensor,
    pos_dim: int,
    start: int = 0,
    seen: set | None = None,
) -> Callable:
    length = src.shape[pos_dim]
    if start:  # the activation holds positions start.. only: index it from there
        pos = pos % length
    low, high = int(pos.min()), int(pos.max())

    def hook(act: Tensor, hook: Any) -> Tensor:
        if seen is not None:
            seen.add(getattr(hook, "step", 0))
        if act.dim() <= pos_dim:
            raise ValueError(
                f"patching_sweep: hook {name!r} gives {tuple(act.shape)}, which has no axis {pos_dim} "
                "(pos_dim) to patch along"
            )
        if start and act.shape[pos_dim] != length - start:
            raise ValueError(
                f"patching_sweep: hook {name!r} gives {tuple(act.shape)}, not the {length - start} positions "
                f"from {start} on along axis {pos_dim}; patch it with reuse_prefix=False"
            )
        if not start:  # the base's own length, as the reference path checks it
            where = f"the base's activation at {name!r} (axis {pos_dim})"
            checks.position_in_range(low, act.shape[pos_dim], "patching_sweep", where)
            checks.position_in_range(high, act.shape[pos_dim], "patching_sweep", where)
        out = act.movedim(pos_dim, 1).clone()
        moved = src.movedim(pos_dim, 1)
        _same_shape(
            moved.shape[2:], out.shape[2:], name, "patching_sweep", f"besides the positions (axis {pos_dim})"
        )
        d = act.device  # a model split over devices: the source may sit on another one
        out[rows.to(d), (pos - start).to(d)] = moved[src_rows, pos].to(d, act.dtype)
        return out.movedim(1, pos_dim)

    return hook


def _step_rows_hook(src: Tensor, rows: Tensor, src_rows: Tensor, steps: Tensor, seen: set) -> Callable:
    wanted = sorted(set(steps.tolist()))

    def hook(act: Tensor, hook: Any) -> Tensor:
        seen.add(getattr(hook, "step", 0))
        at = steps == hook.step
        out = act.clone()
        out[rows[at].to(act.device)] = src.select(1, hook.step)[src_rows[at]].to(act.device, act.dtype)
        return out

    return at_step(wanted, hook)


def _repeat_batch(batch: Batch, times: int) -> Batch:
    """Repeat every batched tensor of a batch ``times`` times along the batch axis."""

    def rep(v: Any) -> Any:
        if isinstance(v, Tensor) and v.dim() > 0:
            return v.repeat(times, *([1] * (v.dim() - 1)))
        return v

    if isinstance(batch, dict):
        return {k: rep(v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(rep(v) for v in batch)
    return rep(batch)


def _progress(it: Any, progress: bool) -> Any:
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="patching", leave=False)
