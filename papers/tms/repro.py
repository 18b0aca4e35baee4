"""``hooked repro tms``: Toy Models of Superposition (Elhage et al. 2022; ``docs/methods/tms.md``).

Trains the paper's sweeps as batched ToyReLU models (every sparsity, restart and grid cell is one
instance of one model), reads each model's features through its ``hook_hidden`` hook point and
checks the paper's claims:

1. n = 5, m = 2, I_i = 0.9^i over sparsity: dense -> two orthogonal features; sparser ->
   antipodal pairs; sparsest -> a regular pentagon (best of ``restarts`` seeds per sparsity).
2. n = 20, m = 5, I_i = 0.7^i: more features are represented, in superposition, as S grows.
3. n = 200, m = 20, uniform I: D* = m / ||W||_F² falls with sparsity with sticky plateaus, and
   the D_i cluster at 1, 3/4, 2/3, 1/2, 2/5, 3/8.
4. n = 2, m = 1: the phase diagram over relative importance x density.

The default is sized for a 2-core CPU in a few minutes (fewer steps, a smaller batch for the
n = 200 sweep, a 10 x 10 phase grid); ``--full`` uses the paper's 10,000 steps and batch 1024
everywhere, 20 sparsities for n = 200 and a 16 x 16 phase grid. Weight decay is off by default
(``--weight-decay``); every model is also saved (safetensors + JSON) for ``hooked run``.
``torchrun --nproc_per_node=N -m hooked repro tms --out DIR`` trains the four sweeps on N ranks
(:func:`hooked.distributed.sweep`), with the same results.
"""

from __future__ import annotations

import time
from typing import Any

from hooked import distributed
from papers.claims import print_claims
from papers.tms.analysis import claims, dimensionality_sweep, geometry_sweep, phase_diagram


def tms(
    run_dir: Any,
    *,
    steps: int = 4000,
    batch_size: int = 1024,
    big_steps: int = 3000,
    big_batch_size: int = 256,
    sparsities: int = 8,
    big_sparsities: int = 12,
    min_density: float = 0.05,
    restarts: int = 3,
    phase_grid: int = 10,
    phase_steps: int = 3000,
    phase_batch_size: int = 512,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    full: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Toy Models of Superposition: geometry, D* vs sparsity and the phase diagram.

    Args:
        steps: training steps for the n=5 and n=20 sweeps.
        batch_size: batch size for the n=5 and n=20 sweeps.
        big_steps: training steps for the n=200, m=20 sweep.
        big_batch_size: batch size for the n=200, m=20 sweep.
        sparsities: sparsity levels in the n=5 and n=20 sweeps.
        big_sparsities: sparsity levels in the n=200 sweep.
        min_density: the sparsest feature density 1-S (densities are min_density^linspace(0,1,k)).
        restarts: seeds per sparsity for n=5, m=2 (the lowest-loss one is shown); also used per phase-grid
            cell (at most 2).
        phase_grid: cells per axis of the n=2, m=1 phase diagram.
        phase_steps: training steps for the phase diagram.
        phase_batch_size: batch size for the phase diagram.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (decoupled).
        full: the paper's settings (10k steps, batch 1024, 20 sparsities for n=200, 16x16 grid).
        seed: seed for weights and data.
        progress: show progress bars.
    """
    if full:
        steps, big_steps, phase_steps = 10_000, 10_000, 10_000
        batch_size, big_batch_size, phase_batch_size = 1024, 1024, 1024
        big_sparsities, phase_grid = 20, 16
    started = time.perf_counter()
    run_dir = distributed.shared_run_dir(run_dir)
    progress = progress and distributed.is_main()
    out: dict[str, Any] = {}
    parts = {
        "n5_m2": lambda: geometry_sweep(
            run_dir,
            5,
            2,
            0.9,
            sparsities,
            min_density,
            restarts,
            steps,
            batch_size,
            lr,
            weight_decay,
            seed,
            progress,
        ),
        "n20_m5": lambda: geometry_sweep(
            run_dir,
            20,
            5,
            0.7,
            sparsities,
            min_density,
            1,
            steps,
            batch_size,
            lr,
            weight_decay,
            seed + 1,
            progress,
        ),
        "n200_m20": lambda: dimensionality_sweep(
            run_dir,
            big_sparsities,
            min_density,
            big_steps,
            big_batch_size,
            lr,
            weight_decay,
            seed + 2,
            progress,
        ),
        "phase": lambda: phase_diagram(
            run_dir,
            phase_grid,
            min(restarts, 2),
            phase_steps,
            phase_batch_size,
            lr,
            weight_decay,
            seed + 3,
            progress,
        ),
    }

    def run_part(name: str) -> dict:
        t0 = time.perf_counter()
        result = parts[name]()
        result["seconds"] = time.perf_counter() - t0
        return result

    # the four sweeps are independent: under torchrun each rank trains its share of them
    out.update(zip(parts, distributed.sweep(run_part, list(parts), seed=seed, gather="all")))
    out["claims"] = claims(out)
    out["seconds"] = time.perf_counter() - started
    if distributed.is_main():
        print_claims("Toy Models of Superposition", out["claims"])
        run_dir.json("tms.json", out)
    return out


def _report_figures(folder):
    from papers.tms.views import report_figures

    return report_figures(folder)


tms.report_figures = _report_figures  # interactive figures of report.html (hooked.views.report)
