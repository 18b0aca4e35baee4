"""Grandmother neurons: which inputs fall in each basis direction's spotlight cone.

For every direction ``+b_k`` and ``-b_k`` of the basis, the cone ``a_hat . (+-b_k) >= epsilon``
(the spotlight at theta = 0 and pi). :class:`ConeCounter` streams over batches and keeps, per
direction, how many samples fall inside, the ``top`` samples closest to its axis (their row
indices in the stream) and, given labels, how the samples in the cone split over the labels.

Selectivity, to rank the directions:

* with labels: *purity*, the share of the cone's samples that carry its most common label (a
  grandmother neuron answers to one concept), with the label's recall (the share of that label's
  samples inside the cone) beside it; directions with fewer than ``min_count`` samples are not
  ranked;
* without labels: *enrichment*, the cone's share of the samples over the share an isotropic
  distribution would put there (:func:`~analyses.spotlight.core.isotropic_reference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses.spotlight.core import Zeros, isotropic_reference, unit_basis, unit_rows


@dataclass
class GrandmotherResult:
    names: list[str]  # "+3", "-3", ...: direction and sign
    counts: Tensor  # [directions] samples in each cone
    n: int  # samples seen (zero rows left out)
    top_rows: Tensor  # [directions, top] row indices in the stream, -1 where fewer
    top_cos: Tensor  # [directions, top]
    epsilon: float
    dim: int
    label_counts: Tensor | None = None  # [directions, labels]
    label_totals: Tensor | None = None  # [labels]

    @property
    def reference(self) -> float:
        return isotropic_reference(self.dim, self.epsilon)

    def direction(self, k: int) -> dict[str, Any]:
        count = int(self.counts[k])
        valid = self.top_rows[k] >= 0
        out: dict[str, Any] = {
            "direction": self.names[k],
            "count": count,
            "fraction": count / self.n if self.n else 0.0,
            "enrichment": (count / self.n / self.reference) if self.n and self.reference > 0 else None,
            "top_rows": self.top_rows[k][valid].tolist(),
            "top_cos": [round(v, 4) for v in self.top_cos[k][valid].tolist()],
        }
        if self.label_counts is not None:
            row = self.label_counts[k]
            label = int(row.argmax())
            out["label"] = label
            out["purity"] = float(row[label]) / count if count else 0.0
            total = float(self.label_totals[label])
            out["recall"] = float(row[label]) / total if total else 0.0
            out["label_counts"] = row.tolist()
        return out

    def selective(self, top: int = 5, min_count: int = 10) -> list[dict[str, Any]]:
        """The ``top`` most selective directions (purity with labels, enrichment without)."""
        keys = []
        for k in range(len(self.names)):
            if int(self.counts[k]) < min_count:
                continue
            d = self.direction(k)
            keys.append(
                (
                    d["purity"] if self.label_counts is not None else (d["enrichment"] or 0.0),
                    int(self.counts[k]),
                    k,
                )
            )
        keys.sort(reverse=True)
        return [self.direction(k) for _, _, k in keys[:top]]

    def summary(self, top: int = 5, min_count: int = 10) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "n": self.n,
            "isotropic_fraction": self.reference,
            "ranked_by": "purity" if self.label_counts is not None else "enrichment",
            "min_count": min_count,
            "nonempty_directions": int((self.counts > 0).sum()),
            "n_directions": len(self.names),
            "most_selective": self.selective(top, min_count),
        }

    to_json = summary


class ConeCounter:
    """Streams cone membership per basis direction (both signs).

    Args:
        basis: [n_basis, d] directions (rows scaled to unit length).
        epsilon: cosine of the cone's half angle.
        top: how many samples closest to each axis to keep.
        n_labels: number of label values, when labels will be passed to :meth:`add`.
        zeros: zero rows raise ("error") or are skipped ("skip"); row indices count them anyway.
    """

    def __init__(
        self,
        basis: Tensor,
        *,
        epsilon: float = 0.9,
        top: int = 8,
        n_labels: int | None = None,
        zeros: Zeros = "skip",
    ):
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        self.basis = unit_basis(basis, basis.shape[1] if basis.dim() == 2 else -1)
        self.dim = self.basis.shape[1]
        self.epsilon = float(epsilon)
        self.top = top
        self.zeros = zeros
        k = self.basis.shape[0]
        self.names = [f"{s}{i}" for i in range(k) for s in "+-"]
        self.counts = torch.zeros(2 * k, dtype=torch.long)
        self.top_rows = torch.full((2 * k, top), -1, dtype=torch.long)
        self.top_cos = torch.full((2 * k, top), -float("inf"), dtype=torch.float64)
        self.n_labels = n_labels
        self.label_counts = torch.zeros(2 * k, n_labels, dtype=torch.long) if n_labels else None
        self.label_totals = torch.zeros(n_labels, dtype=torch.long) if n_labels else None
        self.rows_seen = 0
        self.n = 0

    def add(self, acts: Tensor, labels: Tensor | None = None) -> ConeCounter:
        """Add a batch; ``labels`` (integers) match ``acts``' leading axes (or a prefix of them)."""
        if acts.dim() < 1 or acts.shape[-1] != self.dim:
            raise ValueError(f"activations have shape {tuple(acts.shape)}, expected [..., {self.dim}]")
        dev = acts.device
        if self.counts.device != dev:
            for name in ("basis", "counts", "top_rows", "top_cos", "label_counts", "label_totals"):
                t = getattr(self, name)
                if t is not None:
                    setattr(self, name, t.to(dev))
        unit, keep = unit_rows(acts, self.zeros)
        rows = torch.arange(self.rows_seen, self.rows_seen + keep.numel(), device=dev)[keep]
        self.rows_seen += keep.numel()
        self.n += unit.shape[0]
        proj = unit @ self.basis.T  # [n, k]
        cos = torch.stack([proj, -proj], dim=2).flatten(1)  # [n, 2k]: +b0, -b0, +b1, ...
        inside = cos >= self.epsilon
        self.counts += inside.sum(0)
        # the top samples per direction: this batch's best merged with the kept ones
        masked = cos.masked_fill(~inside, -float("inf")).T  # [2k, n]
        m = min(self.top, masked.shape[1])
        if m:
            vals, idx = masked.topk(m, dim=1)
            all_vals = torch.cat([self.top_cos, vals], dim=1)
            all_rows = torch.cat([self.top_rows, torch.where(torch.isfinite(vals), rows[idx], -1)], dim=1)
            best = all_vals.topk(self.top, dim=1)
            self.top_cos = best.values
            self.top_rows = all_rows.gather(1, best.indices)
        if labels is not None:
            if self.label_counts is None:
                raise ValueError("ConeCounter: labels given, but the counter was made without n_labels")
            lab = torch.as_tensor(labels, device=dev).long()
            lead = acts.shape[:-1]
            if lab.shape != lead[: lab.dim()]:
                raise ValueError(
                    f"labels of shape {tuple(lab.shape)} do not match activations' leading axes {tuple(lead)}"
                )
            lab = lab.reshape(*lab.shape, *([1] * (len(lead) - lab.dim()))).expand(lead).reshape(-1)[keep]
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.n_labels):
                raise ValueError(f"labels must be integers in 0..{self.n_labels - 1}")
            onehot = torch.nn.functional.one_hot(lab, self.n_labels)
            self.label_counts += inside.long().T @ onehot
            self.label_totals += onehot.sum(0)
        return self

    def result(self) -> GrandmotherResult:
        top_rows = torch.where(torch.isfinite(self.top_cos), self.top_rows, -1)
        return GrandmotherResult(
            self.names,
            self.counts.cpu(),
            self.n,
            top_rows.cpu(),
            self.top_cos.cpu(),
            self.epsilon,
            self.dim,
            None if self.label_counts is None else self.label_counts.cpu(),
            None if self.label_totals is None else self.label_totals.cpu(),
        )


def grandmother(
    acts: Tensor,
    basis: Tensor | str | None = None,
    *,
    epsilon: float = 0.9,
    labels: Tensor | None = None,
    top: int = 8,
    zeros: Zeros = "skip",
) -> GrandmotherResult:
    """Cone membership for every basis direction of ``acts`` ([..., d]) in one call."""
    from analyses.spotlight.basis import resolve_basis

    b = resolve_basis(basis, acts.shape[-1], device=acts.device)
    n_labels = int(labels.max()) + 1 if labels is not None and labels.numel() else None
    return ConeCounter(b, epsilon=epsilon, top=top, n_labels=n_labels, zeros=zeros).add(acts, labels).result()
