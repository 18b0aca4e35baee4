"""The n = 2, m = 1 phase diagram of Toy Models of Superposition (``docs/methods/tms.md``).

Two features share one hidden dimension: feature 0 with importance 1 and the "extra" feature 1
with relative importance r; both have the same density 1 - S. A trained W = [w_0, w_1]
(``[..., 1, 2]``) is in one of three phases for the extra feature:

* ``NOT_REPRESENTED``: only feature 0 is stored (|w_1| small).
* ``DEDICATED``: the dimension is given to the extra feature alone (|w_0| small).
* ``SUPERPOSITION``: both are stored, necessarily on one line; the ReLU then filters the
  interference only if they point opposite ways (an antipodal pair).

:func:`classify` labels each instance; :func:`phase_summary` turns a grid of labels into the
claims the reproduction checks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hooked.typecheck import Float, Int, typechecked

NOT_REPRESENTED, DEDICATED, SUPERPOSITION, NEITHER = 0, 1, 2, 3
PHASE_NAMES = {
    NOT_REPRESENTED: "extra feature not represented",
    DEDICATED: "extra feature gets the dimension",
    SUPERPOSITION: "superposition",
    NEITHER: "neither represented",
}


@typechecked
def classify(W: Float[Tensor, "*batch 1 2"], threshold: float = 0.5) -> Int[Tensor, "*batch"]:
    """The phase of each instance (codes above) from its two feature norms."""
    norms = W.abs()[..., 0, :]
    on = norms > threshold
    phase = torch.full(norms.shape[:-1], NEITHER, dtype=torch.long)
    phase[on[..., 0] & ~on[..., 1]] = NOT_REPRESENTED
    phase[~on[..., 0] & on[..., 1]] = DEDICATED
    phase[on[..., 0] & on[..., 1]] = SUPERPOSITION
    return phase


def phase_summary(
    phases: Tensor, densities: Tensor, importances: Tensor, W: Tensor | None = None
) -> dict[str, Any]:
    """What a grid of phases (``[importance, density]``) shows.

    Returns the fraction of cells in each phase, the phases at the densest and the sparsest
    column, whether superposition pairs are antipodal (if W ``[importance, density, 1, 2]`` is
    given) and, per importance row, the densest density at which superposition appears.
    """
    if phases.shape != (len(importances), len(densities)):
        raise ValueError(
            f"phase_summary: phases {tuple(phases.shape)} does not match "
            f"[{len(importances)}, {len(densities)}]"
        )
    order = torch.argsort(densities, descending=True)  # densest first
    dense_col, sparse_col = phases[:, order[0]], phases[:, order[-1]]
    onset = []
    for r, row in zip(importances.tolist(), phases[:, order]):
        sup = (row == SUPERPOSITION).nonzero().flatten()
        onset.append(
            {
                "relative_importance": r,
                "superposition_from_density": float(densities[order][sup[0]]) if len(sup) else None,
            }
        )
    out: dict[str, Any] = {
        "fractions": {PHASE_NAMES[k]: float((phases == k).float().mean()) for k in PHASE_NAMES},
        "densest_column": {PHASE_NAMES[k]: int((dense_col == k).sum()) for k in PHASE_NAMES},
        "sparsest_column": {PHASE_NAMES[k]: int((sparse_col == k).sum()) for k in PHASE_NAMES},
        "superposition_onset": onset,
    }
    if W is not None:
        sup = phases == SUPERPOSITION
        if sup.any():
            w = W[..., 0, :][sup]
            out["superposition_antipodal_fraction"] = float((w[:, 0] * w[:, 1] < 0).float().mean())
    return out
