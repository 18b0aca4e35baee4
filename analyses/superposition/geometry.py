"""Feature geometry in the hidden space (Toy Models of Superposition, ``docs/methods/tms.md``).

``W`` is ``[..., d, n]``: n features, each a column W_i in a d-dimensional hidden space, with any
leading axes (ToyReLU's instances). All functions here are vectorised over those axes.

* :func:`feature_dimensionality`: D_i = ||W_i||² / Σ_j (Ŵ_i · W_j)², the fraction of a dimension
  feature i gets (1: its own dimension; 1/2: an antipodal pair; 2/5: a pentagon; 0: absent).
* :func:`dimensions_per_feature`: D* = d / ||W||_F² (``docs/methods/tms.md``), the hidden dimensions per
  represented feature.
* :func:`describe` / :func:`describe_2d`: which features are represented (norm above a
  threshold), antipodal pairs, orthogonal sets, regular polygons in two dimensions.
* :func:`nearest_fraction`: D_i snapped to the uniform-polytope fractions 1, 3/4, 2/3, 1/2,
  2/5, 3/8 that the paper reports as sticky points.

Registered analyses (``python -m hooked run NAME --model toy-relu --hook hook_hidden``):
``feature-dimensionality`` and ``feature-geometry``; both read W through the hook with
:func:`~analyses.superposition.weights.feature_directions`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from analyses.superposition.weights import feature_directions
from hooked.checks import require_finite
from hooked.typecheck import Float, typechecked

REFERENCE_FRACTIONS: tuple[Fraction, ...] = (
    Fraction(1),
    Fraction(3, 4),
    Fraction(2, 3),
    Fraction(1, 2),
    Fraction(2, 5),
    Fraction(3, 8),
)
"""The feature dimensionalities of the uniform polytopes the paper finds (dedicated dimension,
tetrahedron, triangle, antipodal pair, pentagon, square antiprism)."""

POLYTOPE_NAMES = {
    Fraction(1): "dedicated dimension",
    Fraction(3, 4): "tetrahedron",
    Fraction(2, 3): "triangle",
    Fraction(1, 2): "antipodal pair",
    Fraction(2, 5): "pentagon",
    Fraction(3, 8): "square antiprism",
}


@typechecked
def feature_norms(W: Float[Tensor, "*batch d n"]) -> Float[Tensor, "*batch n"]:
    """||W_i|| for every feature."""
    return W.norm(dim=-2)


@typechecked
def cosine_matrix(W: Float[Tensor, "*batch d n"], eps: float = 1e-8) -> Float[Tensor, "*batch n n"]:
    """cos(W_i, W_j) for every pair (0 where a feature has zero norm)."""
    unit = W / W.norm(dim=-2, keepdim=True).clamp_min(eps)
    return unit.transpose(-1, -2) @ unit


@typechecked
def feature_dimensionality(W: Float[Tensor, "*batch d n"], eps: float = 1e-12) -> Float[Tensor, "*batch n"]:
    """D_i = ||W_i||² / Σ_j (Ŵ_i · W_j)² (0 for a feature whose column is zero)."""
    norms = W.norm(dim=-2)
    unit = W / norms.unsqueeze(-2).clamp_min(1e-12)
    overlaps = unit.transpose(-1, -2) @ W  # [.., i, j] = Ŵ_i · W_j
    return norms**2 / ((overlaps**2).sum(dim=-1) + eps)


@typechecked
def dimensions_per_feature(W: Float[Tensor, "*batch d n"]) -> Float[Tensor, "*batch"]:
    """D* = d / ||W||_F² (``docs/methods/tms.md``): hidden dimensions per (unit-norm) represented feature."""
    return W.shape[-2] / (W**2).sum(dim=(-1, -2)).clamp_min(1e-12)


def nearest_fraction(
    value: float, fractions: tuple[Fraction, ...] = REFERENCE_FRACTIONS, tol: float = 0.03
) -> Fraction | None:
    """The reference fraction within ``tol`` of ``value``, or None."""
    best = min(fractions, key=lambda f: abs(value - float(f)))
    return best if abs(value - float(best)) <= tol else None


def fraction_counts(D: Tensor, tol: float = 0.03, min_value: float = 0.05) -> dict[str, int]:
    """How many of the D_i (any shape) lie within ``tol`` of each reference fraction.

    Features with D_i below ``min_value`` (not represented) are counted as ``"0"``; the rest that
    are near no reference fraction as ``"other"``.
    """
    flat = D.detach().flatten().double()
    refs = torch.tensor([float(f) for f in REFERENCE_FRACTIONS], dtype=torch.float64)
    dist = (flat[:, None] - refs[None]).abs()
    best = dist.argmin(dim=1)
    near = dist.gather(1, best[:, None])[:, 0] <= tol
    absent = flat < min_value
    counts = {str(f): int(((best == k) & near & ~absent).sum()) for k, f in enumerate(REFERENCE_FRACTIONS)}
    counts["0"] = int(absent.sum())
    counts["other"] = int((~near & ~absent).sum())
    return counts


def antipodal_pairs(
    W: Tensor, norm_threshold: float = 0.5, cos_threshold: float = -0.95
) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of represented features of one instance ([d, n]) pointing opposite ways."""
    _single(W, "antipodal_pairs")
    represented = feature_norms(W) > norm_threshold
    cos = cosine_matrix(W)
    mask = (cos < cos_threshold) & represented[:, None] & represented[None, :]
    mask = torch.triu(mask, diagonal=1)
    return [(int(i), int(j)) for i, j in mask.nonzero().tolist()]


def regular_polygon(
    W: Tensor, norm_threshold: float = 0.5, angle_tol: float = 10.0, norm_tol: float = 0.2
) -> int | None:
    """k if the represented features of one 2-D instance ([2, n]) sit at the corners of a regular k-gon.

    Regular: k >= 2 represented features, the angular gaps between neighbours all within
    ``angle_tol`` degrees of 360/k, and every norm within ``norm_tol`` (relative) of their mean.
    """
    _single(W, "regular_polygon")
    if W.shape[0] != 2:
        raise ValueError(f"regular_polygon: needs a 2-dimensional hidden space, W has d = {W.shape[0]}")
    norms = feature_norms(W)
    keep = norms > norm_threshold
    k = int(keep.sum())
    if k < 2:
        return None
    kept_norms = norms[keep]
    if ((kept_norms - kept_norms.mean()).abs() > norm_tol * kept_norms.mean()).any():
        return None
    angles = torch.atan2(W[1, keep], W[0, keep]).sort().values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
    if (torch.rad2deg(gaps) - 360.0 / k).abs().max() > angle_tol:
        return None
    return k


def describe(W: Tensor, norm_threshold: float = 0.5, orth_tol: float = 0.1) -> dict[str, Any]:
    """A summary of one instance's geometry ([d, n]): represented features, pairs, polygon, label."""
    _single(W, "describe")
    require_finite(W, "describe: the feature directions W")
    norms = feature_norms(W)
    represented = [int(i) for i in (norms > norm_threshold).nonzero().flatten()]
    cos = cosine_matrix(W)
    sub = cos[represented][:, represented] if represented else cos[:0, :0]
    off = sub - torch.diag(torch.diag(sub))
    orthogonal = len(represented) <= W.shape[0] and bool((off.abs() < orth_tol).all())
    pairs = antipodal_pairs(W, norm_threshold)
    polygon = regular_polygon(W, norm_threshold) if W.shape[0] == 2 else None
    D = feature_dimensionality(W)
    if not represented:
        label = "nothing represented"
    elif orthogonal:
        label = f"{len(represented)} orthogonal"
    elif polygon is not None and polygon >= 3:
        label = {3: "triangle", 4: "square (2 antipodal pairs)", 5: "pentagon", 6: "hexagon"}.get(
            polygon, f"regular {polygon}-gon"
        )
    elif pairs:
        label = f"{len(pairs)} antipodal pair{'s' if len(pairs) > 1 else ''}"
        unpaired = len(represented) - 2 * len(pairs)
        if unpaired:
            label += f" + {unpaired} other"
    else:
        label = "other"
    return {
        "label": label,
        "represented": represented,
        "n_represented": len(represented),
        "antipodal_pairs": pairs,
        "orthogonal": orthogonal,
        "polygon": polygon,
        "norms": norms,
        "dimensionality": D,
        "D_star": float(dimensions_per_feature(W)),
    }


def _single(W: Tensor, fn: str) -> None:
    if not isinstance(W, Tensor) or W.dim() != 2:
        shape = tuple(W.shape) if isinstance(W, Tensor) else type(W).__name__
        raise ValueError(f"{fn}: W must be one instance's [d, n] matrix, got {shape}")


def _instances(W: Tensor) -> Tensor:
    """``[..., d, n]`` -> ``[instances, d, n]``."""
    return W.reshape(-1, *W.shape[-2:])


# ---------------------------------------------------------------------- registered analyses
def feature_dimensionality_at(
    model: Any, hook: str, data: Any, *, scale: float = 1.0, tol: float = 0.03
) -> dict[str, Any]:
    """Feature dimensionality D_i and dimensions per feature D* of the features' directions at a hook.

    Args:
        scale: size of the basis inputs used to read each feature's direction.
        tol: distance within which a D_i counts as one of the fractions 1, 3/4, 2/3, 1/2, 2/5, 3/8.
    """
    if not 0 <= tol < float("inf"):
        from hooked.errors import OptionError

        raise OptionError("tol", f"must be a finite distance >= 0, got {tol!r}")
    W = _instances(feature_directions(model, hook, data, scale=scale))
    D = feature_dimensionality(W)
    return {
        "hook": hook,
        "shape": list(W.shape),
        "D_star": dimensions_per_feature(W),
        "D_i": D,
        "fraction_counts": [fraction_counts(d, tol) for d in D],
    }


def feature_geometry_at(
    model: Any, hook: str, data: Any, *, scale: float = 1.0, norm_threshold: float = 0.5, run_dir: Any = None
) -> dict[str, Any]:
    """Which features are represented at a hook, antipodal pairs, orthogonal sets, regular polygons.

    Args:
        scale: size of the basis inputs used to read each feature's direction.
        norm_threshold: a feature is represented when its direction's norm exceeds this.
    """
    W = _instances(feature_directions(model, hook, data, scale=scale))
    summaries = [describe(w, norm_threshold) for w in W]
    if run_dir is not None and W.shape[-2] == 2:
        from analyses.superposition.plots import hidden_space_figure

        run_dir.figure("hidden_space.png", hidden_space_figure(W, [s["label"] for s in summaries]))
    return {"hook": hook, "instances": summaries}
