"""Random orthonormal bases: the one Haar-random rotation helper of the project.

Used wherever a random basis is the control or the null model: the random rotations of a
privileged basis in spotlight resonance, rotated activation functions in the autoencoders,
random subspaces as the baseline of subspace interventions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def random_orthonormal(
    dim: int, seed: int = 0, k: int | None = None, *, dtype: torch.dtype = torch.float64, device: Any = None
) -> Tensor:
    """``k`` (default ``dim``) orthonormal rows in ``R^dim``, Haar-distributed, from ``seed``.

    With ``k = dim`` this is a Haar-random orthogonal matrix (rows: the rotated basis); with
    ``k < dim`` its rows span a uniformly random ``k``-dimensional subspace. The draw is the QR
    decomposition of a Gaussian ``[dim, k]`` matrix with the signs of R's diagonal made positive,
    computed in float64 on the CPU (so the same seed gives the same basis on every device).
    """
    k = dim if k is None else k
    if not 1 <= k <= dim:
        raise ValueError(f"random_orthonormal: k must be in [1, {dim}], got {k}")
    z = torch.randn(dim, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    q = q * torch.sign(torch.diagonal(r))[None, :]
    return q.T.contiguous().to(dtype=dtype, device=device)
