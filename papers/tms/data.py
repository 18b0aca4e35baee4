"""The data of the TMS sweeps: feature densities 1 - S, geometric from dense to sparse.

The features themselves are :func:`hooked.models.toy_relu.sparse_uniform`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def density_sweep(k: int, min_density: float = 0.05) -> Tensor:
    """k feature densities 1 - S from 1 down to ``min_density``, geometric (the paper's
    ``20 ** -linspace(0, 1, k)`` for ``min_density`` 0.05)."""
    if not 0 < min_density <= 1:
        raise ValueError(f"min_density must be in (0, 1], got {min_density}")
    return min_density ** torch.linspace(0, 1, k)
