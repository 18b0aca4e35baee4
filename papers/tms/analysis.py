"""The TMS sweeps, read through ``hook_hidden``, and the paper's claims checked against them.

1. n = 5, m = 2, I_i = 0.9^i over sparsity: dense -> two orthogonal features; sparser ->
   antipodal pairs; sparsest -> a regular pentagon (best of ``restarts`` seeds per sparsity).
2. n = 20, m = 5, I_i = 0.7^i: more features are represented, in superposition, as S grows.
3. n = 200, m = 20, uniform I: D* = m / ||W||_F^2 falls with sparsity with sticky plateaus, and
   the D_i cluster at 1, 3/4, 2/3, 1/2, 2/5, 3/8.
4. n = 2, m = 1: the phase diagram over relative importance x density.
"""

from __future__ import annotations

from papers.claims import claim
from papers.tms.data import density_sweep
from papers.tms.training import train_sweep


def geometry_sweep(run_dir, n, m, decay, k, min_density, restarts, steps, batch_size, lr, wd, seed, progress):
    import torch

    from analyses.superposition.geometry import describe
    from analyses.superposition.plots import hidden_space_figure
    from analyses.superposition.weights import feature_directions
    from hooked import checkpoint

    density = density_sweep(k, min_density).repeat_interleave(restarts)
    importance = decay ** torch.arange(float(n))
    model, log, eval_loss = train_sweep(
        n, m, density, importance, steps, batch_size, lr, wd, seed, f"n={n}, m={m}", progress
    )
    checkpoint.save(
        model, run_dir / f"n{n}_m{m}", meta={"density": density, "importance": importance, "steps": steps}
    )
    example = torch.zeros(1, len(density), n)
    W = feature_directions(model, "hook_hidden", example)  # [instances, m, n], read through the hook
    best = eval_loss.view(k, restarts).argmin(dim=1) + torch.arange(k) * restarts
    rows = []
    for i in best.tolist():
        d = describe(W[i])
        rows.append(
            {
                "density": float(density[i]),
                "loss": float(eval_loss[i]),
                "label": d["label"],
                "n_represented": d["n_represented"],
                "antipodal_pairs": d["antipodal_pairs"],
                "polygon": d["polygon"],
                "D_star": d["D_star"],
                "norms": d["norms"],
            }
        )
    if m == 2:
        titles = [f"1-S = {r['density']:.3g}\n{r['label']}" for r in rows]
        run_dir.figure(f"tms_hidden_n{n}_m{m}.png", hidden_space_figure(W[best], titles, importance))
        # the figure's numbers, for its interactive version in report.html (papers/tms/views.py)
        run_dir.tensors(
            f"tms_hidden_n{n}_m{m}.safetensors",
            {"W": W[best], "importance": importance, "density": density[best]},
        )
    labels_all = [describe(w)["label"] for w in W]
    return {
        "n": n,
        "m": m,
        "importance_decay": decay,
        "restarts": restarts,
        "best": rows,
        "all_labels": labels_all,
        "final_train_loss": log.final,
    }


def dimensionality_sweep(run_dir, k, min_density, steps, batch_size, lr, wd, seed, progress):
    import torch

    from analyses.superposition.geometry import (
        REFERENCE_FRACTIONS,
        dimensions_per_feature,
        feature_dimensionality,
        fraction_counts,
    )
    from analyses.superposition.plots import dimensionality_figure
    from analyses.superposition.weights import feature_directions
    from hooked import checkpoint

    n, m = 200, 20
    density = density_sweep(k, min_density)
    model, log, eval_loss = train_sweep(
        n, m, density, torch.ones(n), steps, batch_size, lr, wd, seed, "n=200, m=20", progress
    )
    checkpoint.save(model, run_dir / "n200_m20", meta={"density": density, "steps": steps})
    W = feature_directions(model, "hook_hidden", torch.zeros(1, k, n))
    d_star = dimensions_per_feature(W)
    D = feature_dimensionality(W)
    run_dir.figure(
        "tms_dimensionality.png", dimensionality_figure(1 / density, d_star, D, REFERENCE_FRACTIONS)
    )
    run_dir.tensors("n200_m20_dimensionality.safetensors", {"density": density, "D_star": d_star, "D_i": D})
    counts = [fraction_counts(d) for d in D]
    represented = sum(n - c["0"] for c in counts)
    at_fraction = sum(sum(v for key, v in c.items() if key not in ("0", "other")) for c in counts)
    return {
        "density": density,
        "D_star": d_star,
        "fraction_counts": counts,
        "represented_features": represented,
        "represented_at_a_fraction": at_fraction,
        "eval_loss": eval_loss,
    }


def phase_diagram(run_dir, grid, restarts, steps, batch_size, lr, wd, seed, progress):
    import torch

    from analyses.superposition.phase import PHASE_NAMES, classify, phase_summary
    from analyses.superposition.plots import phase_figure
    from analyses.superposition.weights import feature_directions

    densities = torch.logspace(0, -2, grid)  # 1 .. 0.01
    importances = torch.logspace(-1, 1, grid)  # 0.1 .. 10
    r_idx, d_idx, _ = torch.meshgrid(
        torch.arange(grid), torch.arange(grid), torch.arange(restarts), indexing="ij"
    )
    density = densities[d_idx.flatten()]
    importance = torch.stack(
        [torch.ones(r_idx.numel()), importances[r_idx.flatten()]], dim=1
    )  # [instances, 2]
    model, _, eval_loss = train_sweep(
        2, 1, density, importance, steps, batch_size, lr, wd, seed, "phase n=2, m=1", progress
    )
    W = feature_directions(model, "hook_hidden", torch.zeros(1, len(density), 2))  # [instances, 1, 2]
    pick = eval_loss.view(grid * grid, restarts).argmin(dim=1) + torch.arange(grid * grid) * restarts
    W = W[pick].view(grid, grid, 1, 2)
    phases = classify(W)
    run_dir.figure("tms_phase_diagram.png", phase_figure(phases, densities, importances, PHASE_NAMES))
    run_dir.tensors(
        "phase.safetensors", {"densities": densities, "importances": importances, "phases": phases, "W": W}
    )
    summary = phase_summary(phases, densities, importances, W)
    return {"densities": densities, "importances": importances, "phases": phases, **summary}


# ---------------------------------------------------------------------- claims
def claims(out: dict) -> list[dict[str, str]]:
    rows = []
    n5 = out["n5_m2"]["best"]
    dense, sparse = n5[0], n5[-1]
    middle = [r for r in n5[1:-1] if r["antipodal_pairs"]]
    rows.append(
        claim(
            "n=5,m=2 dense",
            "2 orthogonal features, rest dropped",
            f"{dense['label']} (1-S={dense['density']:.2g})",
            dense["label"] == "2 orthogonal",
        )
    )
    found_mid = ", ".join(sorted({r["label"] for r in middle})) or "none"
    rows.append(
        claim(
            "n=5,m=2 sparser",
            "antipodal pairs",
            f"{found_mid} at {len(middle)}/{len(n5) - 2} middle sparsities",
            bool(middle),
        )
    )
    rows.append(
        claim(
            "n=5,m=2 sparsest",
            "regular pentagon",
            f"{sparse['label']} (1-S={sparse['density']:.2g})",
            sparse["polygon"] == 5,
        )
    )
    pent = [f"{r['density']:.2g}" for r in n5 if r["polygon"] == 5]
    if pent:
        rows[-1]["found"] += f"; pentagon at 1-S = {', '.join(pent)}"
    n20 = out["n20_m5"]["best"]
    reps = [r["n_represented"] for r in n20]
    pairs = [len(r["antipodal_pairs"]) for r in n20]
    rows.append(
        claim(
            "n=20,m=5",
            "dense: top 5 features orthogonal; sparser: more features, in superposition",
            f"represented {reps[0]} -> {reps[-1]} (antipodal pairs {pairs[0]} -> {pairs[-1]})",
            reps[0] == 5 and reps[-1] > 5,
        )
    )
    big = out["n200_m20"]
    ds = [float(v) for v in big["D_star"]]
    monotone = all(b <= a + 0.02 for a, b in zip(ds, ds[1:]))
    half = sum(abs(v - 0.5) < 0.05 for v in ds)
    rows.append(
        claim(
            "n=200,m=20 D*",
            "falls with sparsity; sticky plateaus (e.g. at 1/2)",
            f"{ds[0]:.2f} -> {ds[-1]:.2f}, {'monotone' if monotone else 'not monotone'}; "
            f"{half}/{len(ds)} sparsities with D* within 0.05 of 1/2",
            ds[-1] < ds[0] and monotone,
        )
    )
    share = big["represented_at_a_fraction"] / max(1, big["represented_features"])
    hist = {}
    for c in big["fraction_counts"]:
        for key, v in c.items():
            if key not in ("0", "other"):
                hist[key] = hist.get(key, 0) + v
    top = ", ".join(f"{k}:{v}" for k, v in hist.items() if v)
    rows.append(
        claim(
            "n=200,m=20 D_i",
            "cluster at 1, 3/4, 2/3, 1/2, 2/5, 3/8",
            f"{share:.0%} of represented features within 0.03 of one ({top})",
            None,
        )
    )
    ph = out["phase"]
    dense_col, sparse_col = ph["densest_column"], ph["sparsest_column"]
    rows.append(
        claim(
            "phase n=2,m=1",
            "dense: no superposition; sparse: superposition (phase change, boundary moves with importance)",
            f"densest column {dense_col['superposition']}/{sum(dense_col.values())} superposition; "
            f"sparsest {sparse_col['superposition']}/{sum(sparse_col.values())}",
            dense_col["superposition"] == 0 and sparse_col["superposition"] > 0,
        )
    )
    return rows
