"""The SRM pass at the autoencoders' bottleneck and the verdicts against the paper's claims.

:func:`srm_pass` streams every digit through the batched model once (the hook point
``hook_bottleneck``, activation ``[batch, member, d]``) and feeds member ``k``'s codes
``a[:, k]`` to one :class:`~analyses.spotlight.stream.SpotlightAccumulator` per member and
epsilon: the standard basis and the rotated basis ``Q`` on ordered planes, both judged against
one set of Haar-random orthonormal bases counted once on unordered planes (the same h4, half the
work), with the digits' labels for the cones' purity. The same batches give the non-SRM check
(:class:`_BestPlane`). :func:`verdict_table` turns the results into one row per (model,
epsilon, basis) with the paper's prediction (:func:`paper_claim`) beside the verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses.spotlight.core import SpotlightResult
from analyses.spotlight.stream import ModelSpotlight, SpotlightAccumulator, null_seed
from hooked.protocol import iter_activations
from hooked.rotations import random_orthonormal
from papers.spotlight.training import Trained

HOOK = "hook_bottleneck"
ISOTROPIC = ("isotanh", "linear")  # activations with no preferred basis
SRM_BATCH = 256  # digits per batch of the SRM pass


def paper_claim(activation: str, rotated: bool, basis: str) -> str:
    """The verdict the paper's claims predict for a model and a basis ("standard" or "rotated")."""
    if activation in ISOTROPIC:
        return "isotropic"
    privileged = "rotated" if rotated else "standard"
    return "aligned" if basis == privileged else "isotropic"


@dataclass
class SRMPass:
    """What the one pass over the digits found."""

    found: dict[tuple[int, float], dict[str, ModelSpotlight]]  # (member, epsilon) -> basis name -> result
    bases: dict[str, Tensor]  # "standard", "rotated": [d, d] rows
    null: list[Tensor]  # the random orthonormal bases of the null model
    concentration: list[dict[str, Any]]  # per member: the non-SRM check
    seconds: float

    def srm(self, k: int, epsilon: float) -> dict[str, SpotlightResult]:
        """Member ``k``'s SRM results at ``epsilon``, by basis name."""
        return {b: found.result for b, found in self.found[(k, epsilon)].items()}


class _BestPlane:
    """Per member: each code's norm share in its best plane of every basis.

    The share is ``max_ij sqrt(a_i^2 + a_j^2) / |a|`` over the basis' coordinates ``a_i``.
    """

    def __init__(self, bases: list[Tensor], n_members: int):
        self.every = torch.stack(bases)  # [bases, d, d]
        self.r: list[list[Tensor]] = [[] for _ in range(n_members)]

    def add(self, a: Tensor) -> None:
        """``a``: one batch of codes, [batch, member, d]."""
        unit = a.double() / a.double().norm(dim=-1, keepdim=True).clamp_min(1e-300)
        coords = torch.einsum("bmd,ked->bmke", unit, self.every) ** 2  # squared coordinates in every basis
        top2 = coords.topk(2, dim=-1).values.sum(-1).sqrt()  # [batch, member, basis]
        for k, r in enumerate(self.r):
            r.append(top2[:, k])

    def summary(self, k: int, names: list[str]) -> dict[str, Any]:
        """The median share per basis in ``names`` (the first bases), as z against the rest (the null)."""
        r_best = torch.cat(self.r[k]).median(dim=0).values  # [bases]
        r_null = r_best[len(names) :]
        return {
            b: {
                "median_best_plane_r": float(r_best[j]),
                "z": float((r_best[j] - r_null.mean()) / r_null.std()),
            }
            for j, b in enumerate(names)
        } | {"null_mean": float(r_null.mean()), "null_std": float(r_null.std())}


def all_epsilons(epsilons: list[float], explore_epsilons: list[float]) -> list[float]:
    """The pre-registered epsilons, then the exploratory ones, each once."""
    return list(dict.fromkeys(list(epsilons) + list(explore_epsilons)))


def srm_pass(
    trained: Trained,
    epsilons: list[float],
    *,
    d_bottleneck: int,
    n_angles: int,
    null_bases: int,
    rotation_seed: int,
    seed: int,
    progress: bool,
) -> SRMPass:
    """SRM, cones and verdicts of every member at every epsilon, and the non-SRM check, in one pass."""
    d = d_bottleneck
    bases = {"standard": torch.eye(d, dtype=torch.float64), "rotated": random_orthonormal(d, rotation_seed)}
    null = [random_orthonormal(d, seed=null_seed(seed, r)) for r in range(null_bases)]
    members = range(len(trained.names))
    accumulators = {
        (k, e): SpotlightAccumulator(
            bases,
            epsilon=e,
            n_angles=n_angles,
            zeros="skip",
            null_bases=null,
            null_planes="comb",
            n_labels=10,
            top=8,
            hook=HOOK,
        )
        for k in members
        for e in epsilons
    }
    best_plane = _BestPlane(list(bases.values()) + null, len(members))
    t0 = time.perf_counter()
    batches, labels = list(trained.x.split(SRM_BATCH)), list(trained.y.split(SRM_BATCH))
    stream = iter_activations(trained.model, batches, [HOOK], progress=progress and "spotlight")
    for acts, lab in zip(stream, labels):
        a = acts[HOOK]  # [batch, member, d]
        for (k, _), acc in accumulators.items():
            acc.add(a[:, k], lab)
        best_plane.add(a)
    found = {key: acc.results() for key, acc in accumulators.items()}
    seconds = time.perf_counter() - t0
    concentration = [best_plane.summary(k, list(bases)) for k in members]
    return SRMPass(found, bases, null, concentration, seconds)


def cell(table: list[dict[str, Any]], name: str, epsilon: float, basis: str) -> dict[str, Any]:
    """The row of ``table`` for one model, epsilon and basis."""
    return next(t for t in table if t["model"] == name and t["epsilon"] == epsilon and t["basis"] == basis)


def verdict_table(
    trained: Trained, srm: SRMPass, epsilons: list[float], preregistered: list[float]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per model: training numbers, the non-SRM check and per epsilon and basis the verdict; and the rows.

    One row per (model, epsilon, basis), in that order: the verdict found and the paper's claim.
    """
    results: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    epochs = trained.losses.shape[0]
    for k, name in enumerate(trained.names):
        activation, is_rot = trained.activations[k], trained.rotated[k]
        entry: dict[str, Any] = {
            "activation": activation,
            "rotated_basis": is_rot,
            "train_mse": float(trained.losses[-1, k]),
            "test_mse": float(trained.test_mse[k]),
            "loss_curve": [round(v, 5) for v in trained.losses[:: max(1, epochs // 20), k].tolist()],
            "concentration": srm.concentration[k],
            "srm": {},
        }
        for e in epsilons:
            per_eps: dict[str, Any] = {}
            for b, found in srm.found[(k, e)].items():
                res, v = found.result, found.alignment
                if not res.n:
                    raise ValueError(
                        f"{name}: every code at {HOOK} is zero (a dead bottleneck), so spotlight resonance "
                        "has nothing to count; try another --seed, --lr or --optimizer"
                    )
                claim = paper_claim(activation, is_rot, b)
                per_eps[b] = {
                    "verdict": v,
                    "paper": claim,
                    "srm": res.summary(),
                    "grandmother": found.grandmother.summary(top=5, min_count=10),
                }
                table.append(
                    {
                        "model": name,
                        "epsilon": e,
                        "basis": b,
                        "preregistered": e in preregistered,
                        "found": v["verdict"],
                        "preferred": v["preferred"],
                        "z": v["z"],
                        "p_rank": v["p_rank"],
                        "h4": v["h4"],
                        "c4": v["c4"],
                        "counted": float(res.mean.mean()),
                        "paper": claim,
                    }
                )
            entry["srm"][str(e)] = per_eps
        results[name] = entry
    return results, table


def agreement(table: list[dict[str, Any]]) -> dict[str, int]:
    """Cells that agree with the paper: pre-registered (the verdict) and exploratory (the preference)."""
    pre = [t for t in table if t["preregistered"]]
    explore = [t for t in table if not t["preregistered"]]
    return {
        "preregistered": sum(t["found"] == t["paper"] for t in pre),
        "preregistered_cells": len(pre),
        "exploratory_preference": sum(t["preferred"] == (t["paper"] == "aligned") for t in explore),
        "exploratory_cells": len(explore),
    }
