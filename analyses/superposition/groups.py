"""Structure of a group of features (BOWS, ``docs/methods/bows.md``): co-occurrence, cycles, Gram
matrices, clusters.

A *group* is a list of feature indices in a meaningful order (the twelve months in calendar
order). ``W`` is ``[d, n]`` (one instance: columns are the n features' directions).

* :func:`cooccurrence_correlation`: the correlation matrix of the group's features over the data
  samples in which at least one of them is active (as the paper computes the month matrix).
* :func:`unit_pca_2d`: the group's columns, unit-normalised, projected on their first two
  principal components.
* :func:`cyclic_order`: do the points, read around the origin, follow the group's order (up to
  rotation and reflection)? With the fraction of true neighbours that are angular neighbours
  and a permutation p-value for that fraction.
* :func:`offdiag_gram_norm`: ||G - diag G||_F of the group's Gram matrix G = W_gᵀ W_g.
* :func:`cluster_groups`: k-means on all unit columns, reported against the forced groups
  (adjusted Rand index over the groups' words, and per group the share of its words in its most
  common cluster next to the share a random assignment gives).

``group-geometry`` (registered) reads W through a hook and runs the group functions on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from analyses.superposition.weights import feature_directions
from hooked.typecheck import Float, typechecked


def _ids(ids: Sequence[int] | Tensor, n: int, what: str = "group") -> Tensor:
    idx = torch.as_tensor(list(ids) if not isinstance(ids, Tensor) else ids, dtype=torch.long)
    if idx.dim() != 1 or len(idx) < 2:
        raise ValueError(f"{what}: needs at least two feature indices, got {idx.tolist()}")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(f"{what}: feature indices must be in 0..{n - 1}, got {idx.tolist()}")
    return idx


@typechecked
def cooccurrence_correlation(
    x: Float[Tensor, "samples n"], ids: Sequence[int], only_active: bool = True
) -> Float[Tensor, "k k"]:
    """Pearson correlation of the group's features over the samples (where any is active)."""
    idx = _ids(ids, x.shape[1], "cooccurrence_correlation")
    g = x[:, idx].double()
    if only_active:
        g = g[g.sum(dim=1) > 0]
    if len(g) < 2:
        return torch.full((len(idx), len(idx)), float("nan"))
    return torch.corrcoef(g.T).float()


@typechecked
def unit_pca_2d(W: Float[Tensor, "d n"], ids: Sequence[int]) -> tuple[Float[Tensor, "k 2"], float]:
    """The group's unit-normalised columns on their first two principal components, and the
    fraction of variance those two components explain."""
    idx = _ids(ids, W.shape[1], "unit_pca_2d")
    vecs = W[:, idx].T.double()
    vecs = vecs / vecs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    centred = vecs - vecs.mean(dim=0)
    U, S, _ = torch.linalg.svd(centred, full_matrices=False)
    coords = U[:, :2] * S[:2]
    if coords.shape[1] < 2:
        coords = torch.cat([coords, coords.new_zeros(len(idx), 2 - coords.shape[1])], dim=1)
    total = float((S**2).sum())
    return coords.float(), float((S[:2] ** 2).sum() / total) if total > 0 else 0.0


def _adjacent_fraction(rank: Tensor) -> Tensor:
    """rank[..., i] = angular position of item i; the share of (i, i+1 mod k) that are angular neighbours."""
    k = rank.shape[-1]
    gap = (rank - rank.roll(-1, dims=-1)).abs()
    return ((gap == 1) | (gap == k - 1)).float().mean(dim=-1)


@typechecked
def cyclic_order(coords: Float[Tensor, "k 2"], n_permutations: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Whether points given in a reference order (item i, then i+1, ...) go around the origin in that order.

    Returns ``sequence`` (items by angle), ``adjacent_fraction`` (share of reference neighbours
    (i, i+1 mod k) that are angular neighbours; 1 for a perfect cycle), ``is_cyclic`` (the
    angular order is the reference order up to rotation and reflection) and ``p_value`` (share
    of random assignments of items to the same angles with an adjacent fraction at least as
    high).
    """
    k = coords.shape[0]
    if k < 3:
        raise ValueError(f"cyclic_order: needs at least 3 points, got {k}")
    angles = torch.atan2(coords[:, 1].double(), coords[:, 0].double())
    sequence = torch.argsort(angles)
    rank = torch.empty(k, dtype=torch.long)
    rank[sequence] = torch.arange(k)
    observed = float(_adjacent_fraction(rank))
    g = torch.Generator().manual_seed(seed)
    null = _adjacent_fraction(torch.argsort(torch.rand(n_permutations, k, generator=g), dim=1))
    p_value = float(((null >= observed - 1e-9).sum() + 1) / (n_permutations + 1))
    return {
        "sequence": sequence.tolist(),
        "adjacent_fraction": observed,
        "is_cyclic": observed == 1.0,
        "p_value": p_value,
    }


@typechecked
def offdiag_gram_norm(W: Float[Tensor, "*batch d n"], ids: Sequence[int]) -> Float[Tensor, "*batch"]:
    """||G - diag G||_F for G = W_gᵀ W_g, the Gram matrix of the group's (raw) columns."""
    idx = _ids(ids, W.shape[-1], "offdiag_gram_norm")
    Wg = W[..., idx]
    G = Wg.transpose(-1, -2) @ Wg
    off = G - torch.diag_embed(torch.diagonal(G, dim1=-2, dim2=-1))
    return off.flatten(-2).norm(dim=-1)


def group_geometry(W: Tensor, ids: Sequence[int], cyclic: bool = True, seed: int = 0) -> dict[str, Any]:
    """PCA, cyclic test (if ``cyclic``) and Gram norm of one group in one instance ([d, n])."""
    coords, explained = unit_pca_2d(W, ids)
    out: dict[str, Any] = {
        "pca_coords": coords,
        "pca_explained": explained,
        "offdiag_gram_norm": float(offdiag_gram_norm(W, ids)),
    }
    unit = W[:, list(ids)] / W[:, list(ids)].norm(dim=0, keepdim=True).clamp_min(1e-12)
    cos = unit.T @ unit
    k = len(ids)
    out["mean_cos_neighbours"] = float(cos[torch.arange(k), (torch.arange(k) + 1) % k].mean())
    out["mean_cos_all"] = float((cos.sum() - cos.diagonal().sum()) / (k * (k - 1)))
    out["norms"] = W[:, list(ids)].norm(dim=0)
    if cyclic:
        out["cyclic"] = cyclic_order(coords, seed=seed)
    return out


def cluster_groups(
    W: Tensor, groups: Mapping[str, Sequence[int]], n_clusters: int = 20, seed: int = 0, n_shuffles: int = 200
) -> dict[str, Any]:
    """k-means on every unit column of W ([d, n]); how well the clusters recover the forced groups."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    unit = (W / W.norm(dim=0, keepdim=True).clamp_min(1e-12)).T.double().numpy()
    labels = torch.as_tensor(
        KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(unit)
    ).long()
    names = [name for name, ids in groups.items() if len(ids) >= 2]
    idx = torch.tensor([i for name in names for i in groups[name]])
    group_of = torch.tensor([g for g, name in enumerate(names) for _ in groups[name]])
    ari = adjusted_rand_score(group_of.numpy(), labels[idx].numpy())
    g = torch.Generator().manual_seed(seed)
    per_group = {}
    for name in names:
        ids = list(groups[name])
        modal = float(torch.bincount(labels[ids]).max()) / len(ids)
        # random baseline: as many words drawn at random from the whole vocabulary
        draws = torch.argsort(torch.rand(n_shuffles, len(labels), generator=g), dim=1)[:, : len(ids)]
        counts = torch.nn.functional.one_hot(labels[draws], n_clusters).sum(dim=1)
        base = float(counts.max(dim=1).values.float().mean()) / len(ids)
        per_group[name] = {"modal_cluster_share": modal, "random_share": base, "n_words": len(ids)}
    return {"n_clusters": n_clusters, "adjusted_rand_index": float(ari), "groups": per_group}


# ---------------------------------------------------------------------- registered analysis
def group_geometry_at(
    model: Any,
    hook: str,
    data: Any,
    *,
    features: tuple[int, ...] = (0, 1, 2, 3, 4),
    cyclic: bool = True,
    scale: float = 1.0,
) -> dict[str, Any]:
    """A feature group's geometry at a hook: 2D PCA of unit directions, cyclic-order test, ||G - diag G||_F.

    Args:
        features: the group's feature indices, in their reference order (e.g. months).
        cyclic: test whether the group goes around the origin in that order.
        scale: size of the basis inputs used to read each feature's direction.
    """
    from hooked.errors import OptionError

    features = list(features)
    if len(features) < 2 or len(set(features)) != len(features):
        raise OptionError("features", f"must be two or more distinct feature indices, got {features}")
    W = feature_directions(model, hook, data, scale=scale)
    W = W.reshape(-1, *W.shape[-2:])
    if not all(0 <= f < W.shape[-1] for f in features):
        raise OptionError("features", f"must be feature indices in 0..{W.shape[-1] - 1}, got {features}")
    return {"hook": hook, "features": features, "instances": [group_geometry(w, features, cyclic) for w in W]}
