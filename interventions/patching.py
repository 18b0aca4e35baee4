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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from hooked.hook_fns import at_step
from hooked.protocol import (
    Batch,
    Hookable,
    cache_batch,
    check_hook,
    check_hooks,
    hook_point,
    run_with_hooks,
    split_batch,
)
from hooked.sweeps import PatchSweep, SweepStrategy, run_sweep

Metric = Callable[[Any], Tensor]  # forward output -> one value per batch row


def _is_recurrent(model: Hookable, name: str) -> bool:
    return bool(getattr(hook_point(model, name), "recurrent", False))


Position = int | slice | Tensor | None  # a [rows] tensor: one index per row


def source_activations(model: Hookable, source: Batch, hooks: Sequence[str]) -> dict[str, Tensor]:
    """The source run's activations at ``hooks`` (per-step points stacked on their time axis)."""
    check_hooks(model, hooks)
    with torch.no_grad():
        _, cache = cache_batch(model, source, list(hooks))
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
            point: the stacked [batch, time, ...] tensor; the hook takes step ``step``). With a
            ``position``, only the batch size must match.
        position: patch only this index (or slice) along ``pos_dim``, or one index per row (a
            ``[rows]`` tensor); ``None`` patches all.
        pos_dim: the position axis of the activation.
        step: for a per-step hook point, the step to patch (the hook runs only there).
        source_position: where to read in ``source`` (default: ``position``).
    """
    if source_position is None:
        source_position = position

    def hook(act: Tensor, hook: Any) -> Tensor:
        src = source if step is None else source.select(1, step)
        src = src.to(act.device, act.dtype)  # the source may have run on another device
        if position is None:
            return src.expand_as(act).clone()
        out = act.movedim(pos_dim, 1).clone()
        src = src.movedim(pos_dim, 1)
        if isinstance(position, Tensor) or isinstance(source_position, Tensor):
            rows = torch.arange(out.shape[0], device=out.device)
            out[rows, _row_index(position, rows)] = src[rows, _row_index(source_position, rows)]
        else:
            out[:, position] = src[:, source_position]
        return out.movedim(1, pos_dim)

    return hook if step is None else at_step(step, hook)


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
    batch), read in the source at ``source_position`` (default: the same indices).
    """
    check_hook(model, hook)
    acts = source if _are_activations(model, source) else source_activations(model, source, [hook])
    if _is_recurrent(model, hook):
        fn = _all_steps_hook(acts[hook]) if position is None else patch_hook(acts[hook], step=position)
    else:
        fn = patch_hook(acts[hook], position, pos_dim=pos_dim, source_position=source_position)
    return run_with_hooks(model, base, [(hook, fn)])


def _are_activations(model: Hookable, source: Any) -> bool:
    """Whether ``source`` is cached activations (a dict keyed by hook names), not a dict batch."""
    if not isinstance(source, dict) or not source:
        return False
    hooks = model.hook_dict
    return all(isinstance(k, str) and k in hooks for k in source)


def _all_steps_hook(stacked: Tensor) -> Callable[[Tensor, Any], Tensor]:
    def hook(act: Tensor, hook: Any) -> Tensor:
        return stacked.select(1, hook.step).to(act.device, act.dtype).clone()

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
        hooks: the hook points to patch (e.g. every layer's residual stream).
        metric: output of a forward -> one value per batch row ([rows]).
        positions: indices along ``pos_dim`` to patch one at a time (for per-step hook points:
            steps), each an int or a ``[rows]`` tensor of one index per base row (the same
            indices are read in the source). ``None`` patches each hook's whole activation once.
        chunk: at most this many patches per forward (default: all of them).
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
    hooks = list(hooks)
    acts = source_activations(model, source, hooks)
    grid = [(h, p) for h in hooks for p in (positions if positions is not None else [None])]
    shape = (len(hooks), len(positions)) if positions is not None else (len(hooks),)
    if not batched:
        values = []
        with torch.no_grad():
            for h, p in _progress(grid, progress):
                values.append(metric(patch(model, base, acts, h, p, pos_dim=pos_dim)).float().mean())
        return torch.stack(values).reshape(shape)

    n_rows = _batch_rows(base)
    chunk = chunk or len(grid)
    hook_dict = model.hook_dict  # read once: a bridge builds it afresh on each read
    recurrent = {h: bool(getattr(hook_point(model, h, hook_dict), "recurrent", False)) for h in hooks}
    if reuse_prefix is not False:
        per_row = None if positions is None else [_positions_of(p, n_rows, acts[h].device) for h, p in grid]
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
                recurrent, [grid[j] for j in patches], acts, n_rows, pos_dim, start
            ),
        )
        values = run_sweep(sweep, strategy)
        if values is not None:
            return values.reshape(shape)
    results = []
    with torch.no_grad():
        for start in _progress(range(0, len(grid), chunk), progress):
            part = grid[start : start + chunk]
            repeated = _repeat_batch(base, len(part))
            fwd_hooks = _grid_hooks(recurrent, part, acts, n_rows, pos_dim)
            out = run_with_hooks(model, repeated, fwd_hooks)
            values = metric(out).float().reshape(len(part), n_rows).mean(dim=1)
            results.append(values)
    return torch.cat(results).reshape(shape)


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
    metrics = list(metric) if isinstance(metric, (list, tuple)) else [metric] * len(pairs)
    if len(metrics) != len(pairs):
        raise ValueError(f"patching_pairs: {len(metrics)} metrics for {len(pairs)} pairs")

    def one(i: int) -> Tensor:
        base, source = pairs[i]
        return patching_sweep(model, base, source, hooks, metrics[i], positions, pos_dim=pos_dim, chunk=chunk)

    return torch.stack(distributed.sweep(one, range(len(pairs)), gather="all"))


def _grid_hooks(
    recurrent_at: dict[str, bool],
    part: list[tuple[str, int | None]],
    acts: dict[str, Tensor],
    n_rows: int,
    pos_dim: int,
    start: int = 0,
) -> list[tuple[str, Callable]]:
    """One hook per hook point; it patches, in one indexing op, the rows of every patch aimed at it.
    ``start > 0``: the forward computes only the positions from ``start`` on (along ``pos_dim``).
    ``recurrent_at``: whether each hook point is recurrent (patched by step)."""
    fwd = []
    for h, (rows, src_rows, positions) in _rows_by_hook(part, acts, n_rows).items():
        src = acts[h]
        recurrent = recurrent_at[h]
        if start and (positions[0] is None or recurrent):
            raise ValueError(
                f"patching_sweep: {h!r} is patched {'by step' if recurrent else 'whole'}; only patches at "
                "positions can run on the positions from a later one on"
            )
        if positions[0] is None:
            fwd.append((h, _rows_hook(src, rows, src_rows, recurrent=recurrent)))
            continue
        pos = torch.cat([_positions_of(p, n_rows, src.device) for p in positions])
        if recurrent:
            fwd.append((h, _step_rows_hook(src, rows, src_rows, pos)))
        else:
            fwd.append((h, _position_rows_hook(h, src, rows, src_rows, pos, pos_dim, start)))
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


def _rows_hook(src: Tensor, rows: Tensor, src_rows: Tensor, recurrent: bool) -> Callable:
    def hook(act: Tensor, hook: Any) -> Tensor:
        s = src.select(1, hook.step) if recurrent else src
        out = act.clone()
        out[rows.to(act.device)] = s[src_rows].to(act.device, act.dtype)
        return out

    return hook


def _position_rows_hook(
    name: str, src: Tensor, rows: Tensor, src_rows: Tensor, pos: Tensor, pos_dim: int, start: int = 0
) -> Callable:
    if start:  # the activation holds positions start.. only: index it from there
        length = src.shape[pos_dim]
        pos = pos % length

    def hook(act: Tensor, hook: Any) -> Tensor:
        if start and (act.dim() <= pos_dim or act.shape[pos_dim] != length - start):
            raise ValueError(
                f"patching_sweep: hook {name!r} gives {tuple(act.shape)}, not the {length - start} positions "
                f"from {start} on along axis {pos_dim}; patch it with reuse_prefix=False"
            )
        out = act.movedim(pos_dim, 1).clone()
        d = act.device  # a model split over devices: the source may sit on another one
        out[rows.to(d), (pos - start).to(d)] = src.movedim(pos_dim, 1)[src_rows, pos].to(d, act.dtype)
        return out.movedim(1, pos_dim)

    return hook


def _step_rows_hook(src: Tensor, rows: Tensor, src_rows: Tensor, steps: Tensor) -> Callable:
    wanted = sorted(set(steps.tolist()))

    def hook(act: Tensor, hook: Any) -> Tensor:
        at = steps == hook.step
        out = act.clone()
        out[rows[at].to(act.device)] = src.select(1, hook.step)[src_rows[at]].to(act.device, act.dtype)
        return out

    return at_step(wanted, hook)


def _batch_rows(batch: Batch) -> int:
    args, kwargs = split_batch(batch)
    for v in (*args, *kwargs.values()):
        if isinstance(v, Tensor) and v.dim() > 0:
            return v.shape[0]
    raise ValueError("patching_sweep: the base batch must contain at least one tensor with a batch axis")


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
