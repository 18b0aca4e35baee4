"""Synthetic Bag-of-Words Superposition data (``docs/methods/bows.md``): binary features with a known
co-activation structure.

Each sample i has a latent position; feature j has a fixed direction; feature j is active with
probability sigmoid(sharpness * <latent_i, direction_j> + base_log_odds):

* ``circular``: 12 features on a circle, phi_j = 2 pi j / n; latent theta_i = 2 pi (i mod n) / n
  (features next to each other co-occur; months are the real-text analogue).
* ``figure8``: directions (sin phi_j, sin 2 phi_j) and latents (sin theta_i, sin 2 theta_i),
  a Lissajous figure-eight.
* ``sphere``: directions on a Fibonacci lattice of the 2-sphere, latents uniform on the sphere.
* ``iid``: every feature independently active with the mean density of the circular data.

All generators are vectorised over samples and features.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Kind = Literal["circular", "figure8", "sphere", "iid"]
KINDS: tuple[str, ...] = ("circular", "figure8", "sphere", "iid")


def _positions(n_samples: int, n_features: int, noise: float, g: torch.Generator) -> Tensor:
    theta = 2 * math.pi * (torch.arange(n_samples) % n_features).double() / n_features
    if noise > 0:
        theta = theta + noise * torch.randn(n_samples, generator=g, dtype=torch.float64)
    return theta


def _fibonacci_sphere(n: int) -> Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.arccos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    return torch.stack(
        [torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], dim=1
    )


def activation_probability(
    kind: Kind,
    n_samples: int,
    n_features: int = 12,
    *,
    sharpness: float = 10.0,
    base_log_odds: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Tensor:
    """P(feature j active in sample i) for a structured kind: [n_samples, n_features]."""
    g = torch.Generator().manual_seed(seed)
    if kind == "circular":
        phi = 2 * math.pi * torch.arange(n_features, dtype=torch.float64) / n_features
        dots = torch.cos(_positions(n_samples, n_features, noise, g)[:, None] - phi[None, :])
    elif kind == "figure8":
        phi = 2 * math.pi * torch.arange(n_features, dtype=torch.float64) / n_features
        theta = _positions(n_samples, n_features, noise, g)
        dirs = torch.stack([torch.sin(phi), torch.sin(2 * phi)], dim=1)
        lat = torch.stack([torch.sin(theta), torch.sin(2 * theta)], dim=1)
        dots = lat @ dirs.T
    elif kind == "sphere":
        dirs = _fibonacci_sphere(n_features)
        lat = torch.randn(n_samples, 3, generator=g, dtype=torch.float64)
        lat = lat / lat.norm(dim=1, keepdim=True)
        if noise > 0:
            lat = lat + noise * torch.randn(n_samples, 3, generator=g, dtype=torch.float64)
            lat = lat / lat.norm(dim=1, keepdim=True)
        dots = lat @ dirs.T
    else:
        raise ValueError(
            f"activation_probability: kind must be one of circular, figure8, sphere; got {kind!r}"
        )
    return torch.sigmoid(sharpness * dots + base_log_odds)


def synthetic_bows(
    kind: Kind,
    n_samples: int = 10_000,
    n_features: int = 12,
    *,
    sharpness: float = 10.0,
    base_log_odds: float = 0.0,
    noise: float = 0.0,
    seed: int = 42,
) -> Tensor:
    """Binary samples [n_samples, n_features] of one kind (``iid`` matches the circular mean density)."""
    if kind not in KINDS:
        raise ValueError(f"synthetic_bows: kind must be one of {', '.join(KINDS)}; got {kind!r}")
    structured = "circular" if kind == "iid" else kind
    p = activation_probability(
        structured,
        n_samples,
        n_features,
        sharpness=sharpness,
        base_log_odds=base_log_odds,
        noise=noise,
        seed=seed,
    )
    if kind == "iid":
        p = torch.full_like(p, float(p.mean()))
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.rand(p.shape, generator=g, dtype=torch.float64) < p).float()
