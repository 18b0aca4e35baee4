"""Privileged bases for the spotlight resonance method: standard, random rotations, Thomson points.

* :func:`standard_basis` - the neuron basis (identity rows).
* :func:`random_orthonormal` - a Haar-random rotation of it (QR of a Gaussian matrix, signs fixed);
  also the null model against which alignment with a basis is judged.
* :func:`thomson` - ``n`` points spread evenly on the unit sphere in ``d`` dimensions (the Thomson
  problem: minimum Riesz energy ``sum_{i<j} |x_i - x_j|^-s``, Coulomb ``s = 1`` by default), an
  overcomplete "basis" when ``n > d``. Solved by projected gradient descent with an adaptive step,
  all pairs at once through the Gram matrix.
* :func:`resolve_basis` - a basis from a tensor or a short text spec (the command line's ``--basis``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hooked.rotations import random_orthonormal
from hooked.typecheck import Float, typechecked


def standard_basis(dim: int, dtype: torch.dtype = torch.float64, device: Any = None) -> Float[Tensor, "d d"]:
    return torch.eye(dim, dtype=dtype, device=device)


def thomson_energy(points: Tensor, power: float = 1.0) -> Tensor:
    """Riesz energy ``sum_{i<j} |x_i - x_j|^-power`` of unit-norm rows."""
    gram = points @ points.T
    dist2 = (2 - 2 * gram).clamp_min(1e-300)
    iu = torch.triu_indices(points.shape[0], points.shape[0], 1, device=points.device)
    return dist2[iu[0], iu[1]].pow(-power / 2).sum()


@typechecked
def thomson(
    n_points: int,
    dim: int,
    *,
    power: float = 1.0,
    steps: int = 5000,
    tol: float = 1e-10,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: Any = None,
) -> Float[Tensor, "n d"]:
    """``n_points`` unit vectors in ``dim`` dimensions with (locally) minimal Riesz energy.

    Projected gradient descent from a seeded random start: the energy gradient of point i is
    ``power * sum_j |x_i - x_j|^(-power-2) x_j`` (through the Gram matrix), its tangent part is
    followed with a step that grows 10% after each step that lowers the energy and halves
    after one that does not (which is then undone). Stops when the relative energy change stays
    below ``tol`` or after ``steps`` steps. Known answers: 4 points in 3-d form a tetrahedron,
    6 an octahedron, ``dim + 1`` points a regular simplex.
    """
    if n_points < 2 or dim < 2:
        raise ValueError(f"thomson: need n_points >= 2 and dim >= 2, got n_points={n_points}, dim={dim}")
    if power <= 0:
        raise ValueError(f"thomson: power must be > 0, got {power}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_points, dim, generator=g, dtype=torch.float64).to(device)
    x = x / x.norm(dim=1, keepdim=True)
    eye = torch.eye(n_points, dtype=torch.bool, device=x.device)

    def energy_and_grad(p: Tensor) -> tuple[float, Tensor]:
        dist2 = (2 - 2 * (p @ p.T)).clamp_min(1e-300).masked_fill(eye, 1.0)
        pair = dist2.pow(-power / 2).masked_fill(eye, 0.0)
        energy = float(pair.sum()) / 2
        weight = (pair / dist2).masked_fill(eye, 0.0)  # |x_i - x_j|^(-power-2)
        grad = -power * (weight.sum(1, keepdim=True) * p - weight @ p)  # dE/dx_i
        grad = grad - (grad * p).sum(1, keepdim=True) * p  # tangent part
        return energy, grad

    energy, grad = energy_and_grad(x)
    lr = 0.1 / max(1.0, float(grad.norm(dim=1).max()))
    calm = 0
    for _ in range(steps):
        trial = x - lr * grad
        trial = trial / trial.norm(dim=1, keepdim=True)
        e_new, g_new = energy_and_grad(trial)
        if e_new < energy:
            change = (energy - e_new) / energy
            x, energy, grad, lr = trial, e_new, g_new, lr * 1.1
            calm = calm + 1 if change < tol else 0
            if calm >= 10:
                break
        else:
            lr *= 0.5
            if lr < 1e-16:
                break
    return x.to(dtype)


def resolve_basis(
    spec: Tensor | str | None, dim: int, *, device: Any = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """A basis [n_basis, dim] from a tensor or a spec.

    Specs: ``None`` / ``"standard"``; ``"random"`` or ``"random:SEED"`` (a random rotation);
    ``"thomson:N"`` or ``"thomson:N:SEED"`` (N Thomson points, overcomplete when N > dim); a path
    to a ``.safetensors`` file holding a tensor named ``basis`` (or its only tensor), rows = directions.
    """
    if isinstance(spec, Tensor):
        return spec.to(device=device)
    if spec is None or spec == "standard":
        return standard_basis(dim, dtype, device)
    if not isinstance(spec, str):
        raise TypeError(f"basis must be a tensor or a spec string, got {type(spec).__name__}")
    name, _, rest = spec.partition(":")
    try:
        if name == "random":
            return random_orthonormal(dim, int(rest or 0), dtype=dtype, device=device)
        if name == "thomson":
            parts = rest.split(":")
            n = int(parts[0])
            seed = int(parts[1]) if len(parts) > 1 else 0
            return thomson(n, dim, seed=seed, dtype=dtype, device=device)
    except ValueError as e:
        if "invalid literal" in str(e):
            raise ValueError(
                f"basis spec {spec!r}: expected 'random[:SEED]' or 'thomson:N[:SEED]' with integers"
            ) from None
        raise
    path = Path(spec)
    if path.suffix == ".safetensors":
        from hooked.io import read_tensors

        tensors = read_tensors(path)
        if "basis" in tensors:
            return tensors["basis"].to(device=device)
        if len(tensors) == 1:
            return next(iter(tensors.values())).to(device=device)
        raise ValueError(f"{path} holds {sorted(tensors)}; name the basis tensor 'basis'")
    raise ValueError(
        f"unknown basis {spec!r}: use 'standard', 'random[:SEED]', 'thomson:N[:SEED]' or a .safetensors file"
    )
