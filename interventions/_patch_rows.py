"""Which rows of a repeated batch each patch of a batched patching sweep owns (shared by the plain
and the prefix-reusing sweeps: :mod:`interventions.patching`, :mod:`interventions.prefix_reuse`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def rows_by_hook(
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
