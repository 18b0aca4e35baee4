"""Patching sweeps on causal language models that recompute only what a patch changes.

In a causal LM, patching an activation at position ``p`` changes nothing at the positions before
``p``: the patched run's keys, values and logits there are the base run's. So the base run is
done once with a key-value cache, and each patch reruns only positions ``p .. T-1`` on top of the
base run's cache cropped to ``p``. Patches that start at the same position share one forward
(rows of a batch, as in :func:`interventions.patching.patching_sweep`'s plain path). With a
per-row position (a padded batch, where the same token sits at other indices), a patch reuses the
positions before the earliest of its rows' positions.

The metric sees the whole sequence's logits, as it would after a full forward: the reused
positions' logits are the base run's. On a T-token prompt with every position patched once, a
layer x position sweep computes about ``(T + 1) / 2`` positions per patch instead of ``T``; the
results equal the full recomputation within float noise (``tests/interventions``).

Used by :func:`interventions.patching.patching_sweep` on models from :func:`hooked.lm.load`
(``bridge`` and ``wrap``): see its ``reuse_prefix`` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from hooked.protocol import Batch
from interventions._patch_rows import rows_by_hook

Metric = Callable[[Any], Tensor]


def causal_lm_forward(model: Any, base: Batch) -> Any | None:
    """An :class:`hooked.lm.forward.LMForward` for ``model`` when it is a causal language model
    from :func:`hooked.lm.load` (or a ``hooked.wrap`` / bridge of one) and ``base`` is a token
    batch; ``None`` otherwise."""
    if not hasattr(model, "hook_dict"):
        return None
    from hooked.lm.forward import LMForward
    from hooked.lm.tokens import batch_ids_and_mask

    try:
        ids, _ = batch_ids_and_mask(base)
        forward = LMForward(model, ())
    except (TypeError, ValueError, AttributeError):
        return None
    can_generate = getattr(forward.hf, "can_generate", None)
    if ids.dim() != 2 or ids.is_floating_point() or not callable(can_generate) or not can_generate():
        return None
    return forward


def prefix_reuse_sweep(
    model: Any,
    forward: Any,
    base: Batch,
    acts: dict[str, Tensor],
    grid: Sequence[tuple[str, Tensor]],
    metric: Metric,
    *,
    chunk: int,
    progress: bool = False,
) -> Tensor:
    """The metric (mean over the base rows) after each patch of ``grid``, reusing the base run.

    Args:
        forward: from :func:`causal_lm_forward`.
        acts: the source run's activations at the grid's hooks (``[rows, T, ...]``).
        grid: ``(hook, positions)`` pairs, ``positions`` a ``[rows]`` tensor of indices in ``0..T-1``.
        chunk: at most this many patches per forward.
    Returns:
        ``[len(grid)]``.
    """
    from hooked.lm.forward import prefix_cache
    from hooked.lm.tokens import batch_ids_and_mask

    ids, mask = batch_ids_and_mask(base)
    mask = torch.ones_like(ids) if mask is None else mask.to(ids.device).long()
    n_rows, length = ids.shape
    position_ids = (mask.cumsum(dim=1) - 1).clamp_min(0)
    cache = forward.new_cache()
    with torch.no_grad():
        base_logits = forward(ids, mask, position_ids, cache)

    # patches that reuse the same prefix share forwards; chunks of at most `chunk` patches
    starts = [int(pos.min()) for _, pos in grid]
    order = sorted(range(len(grid)), key=lambda j: starts[j])
    groups: list[list[int]] = []
    for j in order:
        if groups and starts[groups[-1][0]] == starts[j] and len(groups[-1]) < chunk:
            groups[-1].append(j)
        else:
            groups.append([j])

    values: Tensor | None = None
    for group in _progress(groups, progress):
        start = starts[group[0]]
        k = len(group)
        rows = torch.arange(n_rows, device=ids.device).repeat(k)  # patch-major, as the plain path
        hooks = _suffix_hooks([grid[j] for j in group], acts, n_rows, start, length)
        suffix = ids[:, start:].repeat(k, 1)
        with torch.no_grad(), forward.hooks(hooks):
            if start == 0:
                logits = forward(suffix, mask.repeat(k, 1), position_ids.repeat(k, 1), None)
            else:
                past = prefix_cache(cache, start, rows)
                logits = forward(suffix, mask.repeat(k, 1), position_ids[:, start:].repeat(k, 1), past)
            if start:
                logits = torch.cat([base_logits[:, :start].repeat(k, 1, 1), logits], dim=1)
            got = metric(logits).float().reshape(k, n_rows).mean(dim=1)
        if values is None:
            values = got.new_empty(len(grid))
        values[torch.tensor(group, device=got.device)] = got
    return values


def _suffix_hooks(
    items: Sequence[tuple[str, Tensor]], acts: dict[str, Tensor], n_rows: int, start: int, length: int
) -> list[tuple[str, Callable]]:
    """One hook per hook point: row r of patch i (batch row ``i * n_rows + r``) takes the source
    activation at position ``pos[r]``, which sits at ``pos[r] - start`` in the recomputed part."""
    hooks = []
    for h, (rows, src_rows, positions) in rows_by_hook(items, acts, n_rows).items():
        pos = torch.cat([p.to(rows.device) for p in positions])
        hooks.append((h, _suffix_hook(h, acts[h], rows, src_rows, pos, start, length)))
    return hooks


def _suffix_hook(
    name: str, src: Tensor, rows: Tensor, src_rows: Tensor, pos: Tensor, start: int, length: int
) -> Callable:
    def hook(act: Tensor, hook: Any) -> Tensor:
        if act.dim() < 2 or act.shape[1] != length - start:
            raise ValueError(
                f"reuse_prefix: hook {name!r} gives {tuple(act.shape)}, not [batch, {length - start}, ...] "
                "(positions on axis 1, one per recomputed token); patch it with reuse_prefix=False"
            )
        out = act.clone()
        d = act.device  # a model split over devices: the source may sit on another one
        out[rows.to(d), (pos - start).to(d)] = src[src_rows, pos].to(d, act.dtype)
        return out

    return hook


def _progress(it: Any, progress: bool) -> Any:
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="patching (prefix reuse)", leave=False)
