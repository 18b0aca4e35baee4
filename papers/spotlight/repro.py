"""``hooked repro spotlight``: activation functions and axis alignment (Bird 2025, SRM; ``docs/methods/spotlight.md``).

Autoencoders ``64 -> 128 -> 16 -> 128 -> 64`` on scikit-learn's bundled 8 x 8 digits, one per
activation function (ReLU, tanh, GELU, sigmoid, IsoTanh, linear), plus models whose bottleneck
activation acts in a rotated basis ``Q`` (``h = Q^T f(Q z)``). All train side by side as one
batched model (:class:`hooked.models.autoencoder.Autoencoder`) with momentum SGD from an isotropic
(Gaussian) initialisation, so that for the linear and IsoTanh models nothing but chance can
prefer a basis of the bottleneck (see that module). Under this symmetry ``rotated-X`` is the
model ``X`` seen in other coordinates: a second, independent replica of the same experiment.

The bottleneck activations are read through the hook point ``hook_bottleneck`` (streamed in
batches) and the Spotlight Resonance Method runs in the standard basis and in the rotated basis
``Q``, together with ``null_bases`` Haar-random orthonormal bases. The verdict per model, basis
and epsilon is :func:`analyses.spotlight.alignment.verdict`: ``z`` of the axis harmonic ``h4``
against the random bases; ``|z| >= 3`` means the basis is preferred, read as aligned (z > 0) or
anti-aligned (z < 0) when the cones are narrower than pi/4.

Two parts, kept apart in the output:

1. Pre-registered (rule and epsilons fixed before any autoencoder was measured): epsilons 0.8,
   0.85, 0.9 (narrower than pi/4; bracketing the paper's 0.85 and 0.9), aligned / anti-aligned /
   isotropic / empty, compared with the paper's claim per cell.
2. Exploratory (added after the first run showed the cones at those epsilons nearly empty for
   16-d codes): epsilons 0.2 .. 0.7, where a verdict can only say whether the basis is preferred
   ("basis-locked"), and a non-SRM check of the same question: how much of each code's norm lies
   in its best plane of the basis (median of ``max_{i,j} sqrt(a_i^2 + a_j^2) / |a|``), as z
   against the random bases.

The paper's claims (``docs/methods/spotlight.md``): elementwise activations align representations with the basis they
privilege; the rotated models align with their rotated basis and not with the standard one;
IsoTanh and linear show no preferred basis.

Written to the run folder: ``srm_eps*.png`` (mean +- std per model and basis, verdicts in the
titles), ``ensemble_*.png`` (one line per plane), ``verdicts.png`` (z per model, basis and
epsilon), ``grandmother_eps*.png`` (digits in the most selective directions' cones), ``models/NAME/``
checkpoints (``hooked run spotlight --model digits-ae --checkpoint ...`` reads them),
``rotated_basis.safetensors`` (for ``--basis``) and the numbers in ``results.json``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

ISOTROPIC = ("isotanh", "linear")


def paper_claim(activation: str, rotated: bool, basis: str) -> str:
    """The verdict the paper's claims predict for a model and a basis ("standard" or "rotated")."""
    if activation in ISOTROPIC:
        return "isotropic"
    privileged = "rotated" if rotated else "standard"
    return "aligned" if basis == privileged else "isotropic"


def spotlight_repro(
    run_dir: Any,
    *,
    activations: list[str] = ["relu", "tanh", "gelu", "sigmoid", "isotanh", "linear"],  # noqa: B006
    rotated: list[str] = ["relu", "tanh", "gelu", "sigmoid"],  # noqa: B006
    d_bottleneck: int = 16,
    d_hidden: int = 128,
    epochs: int = 200,
    batch_size: int = 64,
    lr: float = 0.1,
    optimizer: Literal["sgd", "adam"] = "sgd",
    epsilons: list[float] = [0.8, 0.85, 0.9],  # noqa: B006
    explore_epsilons: list[float] = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # noqa: B006
    n_angles: int = 100,
    null_bases: int = 32,
    rotation_seed: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Spotlight resonance on digit autoencoders: which basis does each activation function prefer?

    Args:
        activations: activation functions of the standard-basis models.
        rotated: activations that also get a model whose bottleneck activation acts in a rotated basis.
        d_bottleneck: bottleneck size (the layer analysed).
        d_hidden: width of the hidden layers.
        epochs: training epochs over the 1437 training digits.
        batch_size: training batch size.
        lr: learning rate (momentum 0.9 for sgd).
        optimizer: sgd (rotation-equivariant, the default) or adam (per-coordinate steps).
        epsilons: the pre-registered spotlight resolutions, each > cos(pi/4) = 0.707.
        explore_epsilons: further resolutions (any in (-1, 1)), where only a preference is read.
        n_angles: spotlight angles on [0, 2 pi) (a multiple of 4).
        null_bases: random orthonormal bases the verdict compares against.
        rotation_seed: seed of the rotated basis Q.
        seed: seed of initialisation, data split and batches.
        progress: show progress bars.
    """
    import torch

    from analyses.spotlight.alignment import WIDEST, verdict
    from analyses.spotlight.core import SpotlightCounter, isotropic_reference
    from analyses.spotlight.grandmother import ConeCounter
    from analyses.spotlight.stream import null_seed
    from hooked import checkpoint
    from hooked.models.autoencoder import (
        ACTIVATIONS,
        ELEMENTWISE,
        Autoencoder,
        load_digits,
        train_autoencoder,
    )
    from hooked.protocol import iter_activations
    from hooked.rotations import random_orthonormal

    for a in activations:
        if a not in ACTIVATIONS:
            raise ValueError(f"--activations: {a!r} is not one of {ACTIVATIONS}")
    for a in rotated:
        if a not in ELEMENTWISE:
            raise ValueError(f"--rotated: {a!r} is not an elementwise activation {ELEMENTWISE}")
    if not activations and not rotated:
        raise ValueError("no models: give --activations and/or --rotated")
    for e in epsilons:
        if not WIDEST < e <= 1:
            raise ValueError(
                f"--epsilons: {e} is not in (0.707, 1]: cones of half angle >= pi/4 cannot tell aligned from anti-aligned"
            )
    for e in explore_epsilons:
        if not -1 < e < 1:
            raise ValueError(f"--explore-epsilons: {e} is not in (-1, 1)")
    if null_bases < 2:
        raise ValueError(f"--null-bases must be >= 2 for a verdict, got {null_bases}")
    if n_angles % 4 or n_angles < 8:
        raise ValueError(
            f"--n-angles must be a multiple of 4 and >= 8 (the axes must lie on the grid), got {n_angles}"
        )
    started = time.perf_counter()
    torch.manual_seed(seed)

    # ------------------------------------------------------------------ data and models
    x, y = load_digits()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_test = x.shape[0] // 5
    test_idx, train_idx = order[:n_test], order[n_test:]
    names = list(activations) + [f"rotated-{a}" for a in rotated]
    acts = list(activations) + list(rotated)
    rots = [None] * len(activations) + [rotation_seed] * len(rotated)
    model = Autoencoder(64, d_hidden, d_bottleneck, acts, rots, seed=seed)
    print(
        f"training {len(names)} autoencoders side by side ({optimizer}, {epochs} epochs, lr {lr}): {', '.join(names)}"
    )
    t0 = time.perf_counter()
    losses = train_autoencoder(
        model,
        x[train_idx],
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        progress=progress and "training",
    )
    train_seconds = time.perf_counter() - t0
    with torch.no_grad():
        test_mse = ((model(x[test_idx]) - x[test_idx][:, None]) ** 2).mean(dim=(0, 2))
        baseline = float(((x[test_idx] - x[train_idx].mean(0)) ** 2).mean())
    for k, name in enumerate(names):
        checkpoint.save(
            model.member(k),
            run_dir / "models" / name,
            meta={"test_mse": float(test_mse[k]), "epochs": epochs, "optimizer": optimizer, "lr": lr},
        )

    # ------------------------------------------------------------------ SRM through the hook point
    d = d_bottleneck
    q = random_orthonormal(d, rotation_seed)
    bases = {"standard": torch.eye(d, dtype=torch.float64), "rotated": q}
    null = [random_orthonormal(d, seed=null_seed(seed, r)) for r in range(null_bases)]
    all_eps = list(dict.fromkeys(list(epsilons) + list(explore_epsilons)))
    # the two bases on all ordered planes; the null on unordered ones (the same h4, half the work)
    main = {
        (k, e): SpotlightCounter(list(bases.values()), epsilon=e, n_angles=n_angles, zeros="skip")
        for k in range(len(names))
        for e in all_eps
    }
    nulls = {
        (k, e): SpotlightCounter(null, epsilon=e, n_angles=n_angles, planes="comb", zeros="skip")
        for k in range(len(names))
        for e in all_eps
    }
    cones = {
        (k, e, b): ConeCounter(basis, epsilon=e, top=8, n_labels=10, zeros="skip")
        for k in range(len(names))
        for e in all_eps
        for b, basis in bases.items()
    }
    every = torch.stack(list(bases.values()) + null)  # [2 + M, d, d], for the concentration check
    best_plane_r: list[list[torch.Tensor]] = [[] for _ in names]
    t0 = time.perf_counter()
    batches, labels = list(x.split(256)), list(y.split(256))
    for acts_b, lab in zip(
        iter_activations(model, batches, ["hook_bottleneck"], progress=progress and "spotlight"), labels
    ):
        a = acts_b["hook_bottleneck"]  # [batch, model, d]
        for (k, _), counter in main.items():
            counter.add(a[:, k])
        for (k, _), counter in nulls.items():
            counter.add(a[:, k])
        for (k, _, _), cone in cones.items():
            cone.add(a[:, k], lab)
        unit = a.double() / a.double().norm(dim=-1, keepdim=True).clamp_min(1e-300)
        coords = torch.einsum("bmd,ked->bmke", unit, every) ** 2  # squared coordinates in every basis
        top2 = coords.topk(2, dim=-1).values.sum(-1).sqrt()  # [batch, model, basis]
        for k in range(len(names)):
            best_plane_r[k].append(top2[:, k])
    srm_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ verdicts
    results: dict[str, Any] = {}
    srm: dict[float, dict[str, dict[str, Any]]] = {e: {} for e in all_eps}
    table: list[dict[str, Any]] = []
    for k, name in enumerate(names):
        is_rot = k >= len(activations)
        r_best = torch.cat(best_plane_r[k]).median(dim=0).values  # [2 + M]
        r_null = r_best[2:]
        concentration = {
            b: {
                "median_best_plane_r": float(r_best[j]),
                "z": float((r_best[j] - r_null.mean()) / r_null.std()),
            }
            for j, b in enumerate(bases)
        } | {"null_mean": float(r_null.mean()), "null_std": float(r_null.std())}
        entry: dict[str, Any] = {
            "activation": acts[k],
            "rotated_basis": is_rot,
            "train_mse": float(losses[-1, k]),
            "test_mse": float(test_mse[k]),
            "loss_curve": [round(v, 5) for v in losses[:: max(1, epochs // 20), k].tolist()],
            "concentration": concentration,
            "srm": {},
        }
        for e in all_eps:
            res = dict(zip(bases, main[(k, e)].results()))
            null_res = nulls[(k, e)].results()
            srm[e][name] = res
            per_eps: dict[str, Any] = {}
            for b in bases:
                v = verdict(res[b], null_res)
                claim = paper_claim(acts[k], is_rot, b)
                per_eps[b] = {
                    "verdict": v,
                    "paper": claim,
                    "srm": res[b].summary(),
                    "grandmother": cones[(k, e, b)].result().summary(top=5, min_count=10),
                }
                table.append(
                    {
                        "model": name,
                        "epsilon": e,
                        "basis": b,
                        "preregistered": e in epsilons,
                        "found": v["verdict"],
                        "preferred": v["preferred"],
                        "z": v["z"],
                        "p_rank": v["p_rank"],
                        "h4": v["h4"],
                        "c4": v["c4"],
                        "counted": res[b].summary()["n"] and float(res[b].mean.mean()),
                        "paper": claim,
                    }
                )
            entry["srm"][str(e)] = per_eps
        results[name] = entry

    def cell(name: str, e: float, b: str) -> dict:
        return next(t for t in table if t["model"] == name and t["epsilon"] == e and t["basis"] == b)

    # ------------------------------------------------------------------ report
    print(
        f"\n{len(names)} models trained in {train_seconds:.0f} s (test MSE; predicting the mean image: {baseline:.4f}):"
    )
    print("  " + ", ".join(f"{n} {float(test_mse[k]):.4f}" for k, n in enumerate(names)))
    P = main[(0, all_eps[0])].block_planes.shape[0]
    print(
        f"\n1. PRE-REGISTERED. Spotlight resonance at hook_bottleneck (d={d}, {x.shape[0]} digits, {P} perm planes, {n_angles} angles).\n"
        f"   Verdict: z of the axis harmonic h4 against {null_bases} random orthonormal bases; |z| >= 3: aligned (z>0) / anti-aligned (z<0).\n"
        "   'mean SRM' is the mean fraction of codes in a cone: near 0, the cones hold (almost) no codes."
    )
    pre = [t for t in table if t["preregistered"]]
    for e in epsilons:
        print(f"\n   epsilon = {e:g} (isotropic reference {isotropic_reference(d, e):.2g})")
        print(
            f"   {'model':<16} | {'standard basis':<22} {'mean SRM':<9} {'paper':<10} | {'rotated basis':<22} {'mean SRM':<9} {'paper':<10}"
        )
        for name in names:
            parts = []
            for b in bases:
                r = cell(name, e, b)
                found = f"{r['found']} ({r['z']:+.1f})" if r["found"] != "empty" else "empty"
                parts.append(
                    f"{found:<22} {r['counted']:<9.1e} {r['paper']:<9}{' ' if r['found'] == r['paper'] else '*'}"
                )
            print(f"   {name:<16} | {parts[0]} | {parts[1]}")
    agree = sum(t["found"] == t["paper"] for t in pre)
    print(f"\n   agreement with the paper's claims: {agree} of {len(pre)} cells (* marks a difference)")

    explore = [t for t in table if not t["preregistered"]]
    if explore_epsilons:
        print(
            "\n2. EXPLORATORY (added after the first run). Wider cones: only 'is the basis preferred' (|z| >= 3) can be read.\n"
            "   z of h4 per epsilon; '!' marks |z| >= 3. Paper: preferred = the basis the activation privileges."
        )
        head = " ".join(f"{e:>6g}" for e in explore_epsilons)
        print(f"   {'model':<16} {'basis':<9} {head}   paper")
        for name in names:
            for b in bases:
                zs = " ".join(
                    f"{cell(name, e, b)['z']:+5.1f}{'!' if cell(name, e, b)['preferred'] else ' '}"
                    for e in explore_epsilons
                )
                claim = "preferred" if cell(name, explore_epsilons[0], b)["paper"] == "aligned" else "none"
                print(f"   {name:<16} {b:<9} {zs}   {claim}")
        ok = sum(t["preferred"] == (t["paper"] == "aligned") for t in explore)
        print(f"\n   preference as the paper predicts: {ok} of {len(explore)} (model, basis, epsilon) cells")
        print(
            "\n   Not SRM: median over codes of the norm share in their best basis plane, z against the random bases"
        )
        for k, name in enumerate(names):
            c = results[name]["concentration"]
            print(
                f"   {name:<16} standard {c['standard']['median_best_plane_r']:.3f} (z {c['standard']['z']:+6.1f})   "
                f"rotated {c['rotated']['median_best_plane_r']:.3f} (z {c['rotated']['z']:+6.1f})   random bases {c['null_mean']:.3f} +- {c['null_std']:.3f}"
            )

    print(
        "\nmost selective basis direction (grandmother candidate) per model in its privileged basis (>= 10 digits in the cone):"
    )
    for e in all_eps:
        line = []
        for k, name in enumerate(names):
            b = "rotated" if k >= len(activations) else "standard"
            top = results[name]["srm"][str(e)][b]["grandmother"]["most_selective"]
            if top:
                t = top[0]
                line.append(f"{name} {t['direction']}: digit {t['label']} {t['purity']:.0%} of {t['count']}")
        print(f"  eps {e:g}: " + ("; ".join(line) if line else "no cone holds 10 digits"))

    # ------------------------------------------------------------------ plots
    _plots(run_dir, names, srm, cell, cones, x, all_eps, epsilons, bases)
    run_dir.tensors("bases.safetensors", {"rotated": q, **{f"null_{r}": n for r, n in enumerate(null)}})
    run_dir.tensors("rotated_basis.safetensors", {"basis": q})
    hint = names[-1] if rotated else names[0]
    rot_flags = (
        f" --model-rotation-seed {rotation_seed} --basis {run_dir / 'rotated_basis.safetensors'}"
        if rotated
        else ""
    )
    print(
        f"\nre-run the analysis on a trained model: python -m hooked run spotlight --model digits-ae "
        f"--model-activation {acts[-1] if rotated else acts[0]} --checkpoint {run_dir / 'models' / hint} --hook hook_bottleneck"
        f"{rot_flags} --epsilon 0.4"
    )
    return {
        "settings": {
            "models": names,
            "d_bottleneck": d,
            "d_hidden": d_hidden,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": optimizer,
            "epsilons": epsilons,
            "explore_epsilons": explore_epsilons,
            "n_angles": n_angles,
            "null_bases": null_bases,
            "rotation_seed": rotation_seed,
            "seed": seed,
            "n_train": int(train_idx.numel()),
            "n_test": int(test_idx.numel()),
            "srm_samples": int(x.shape[0]),
            "verdict_rule": "z = (h4 - mean_null) / std_null over random orthonormal bases; |z| >= 3 preferred: aligned (z > 0) or "
            "anti-aligned (z < 0) for epsilon > 0.7071, basis-locked otherwise; empty: no code in any cone",
        },
        "mean_image_test_mse": baseline,
        "seconds": {"train": train_seconds, "srm": srm_seconds, "total": time.perf_counter() - started},
        "table": table,
        "agreement": {
            "preregistered": agree,
            "preregistered_cells": len(pre),
            "exploratory_preference": sum(t["preferred"] == (t["paper"] == "aligned") for t in explore),
            "exploratory_cells": len(explore),
        },
        "models": results,
    }


def _plots(
    run_dir: Any,
    names: list[str],
    srm: dict,
    cell: Any,
    cones: dict,
    x: Any,
    all_eps: list[float],
    epsilons: list[float],
    bases: dict,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analyses.spotlight.plots import plot_ensemble, spotlight_grid

    for e in all_eps:
        notes = {
            n: {
                f"{b} basis": f"{cell(n, e, b)['found']} (z={cell(n, e, b)['z']:+.1f}); paper: {cell(n, e, b)['paper']}"
                for b in bases
            }
            for n in names
        }
        fig = spotlight_grid(
            {n: {f"{b} basis": srm[e][n][b] for b in bases} for n in names},
            notes,
            title=f"SRM at the bottleneck, ε={e:g}: mean ± std over planes",
        )
        run_dir.figure(f"srm_eps{e:g}.png", fig)
    for n in names:
        fig, axes = plt.subplots(
            len(all_eps), len(bases), figsize=(5 * len(bases), 2.4 * len(all_eps)), squeeze=False
        )
        for i, e in enumerate(all_eps):
            for j, b in enumerate(bases):
                plot_ensemble(srm[e][n][b], axes[i][j], max_lines=60)
                axes[i][j].set_title(
                    f"{n}, {b} basis, ε={e:g}: {cell(n, e, b)['found']} (z={cell(n, e, b)['z']:+.1f})",
                    fontsize=8,
                )
        fig.tight_layout()
        run_dir.figure(f"ensemble_{n}.png", fig)

    # z per model, basis and epsilon
    ncols = min(3, len(all_eps))
    nrows = -(-len(all_eps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(all_eps) :]:
        ax.axis("off")
    for i, e in enumerate(all_eps):
        ax = axes.flat[i]
        pos = range(len(names))
        for j, b in enumerate(bases):
            zs = [max(-12.0, min(12.0, cell(n, e, b)["z"])) for n in names]
            ax.bar([p + (j - 0.5) * 0.4 for p in pos], zs, width=0.4, label=f"{b} basis")
        for t in (-3, 3):
            ax.axhline(t, color="k", ls="--", lw=0.8)
        ax.set_xticks(list(pos), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"ε={e:g}" + (" (pre-registered)" if e in epsilons else " (exploratory)"), fontsize=9)
        if i % ncols == 0:
            ax.set_ylabel("z of h4 (clipped ±12)")
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(
        "is the basis preferred? |z| ≥ 3 (dashed); the sign reads aligned / anti-aligned only for ε > 0.707",
        fontsize=10,
    )
    fig.tight_layout()
    run_dir.figure("verdicts.png", fig)

    # grandmother neurons: the digits in the most selective cones, where any cone holds 10 digits
    import torch

    show_dirs, show_imgs = 3, 6
    for e in all_eps:
        tops = {}
        for k, n in enumerate(names):
            b = "rotated" if n.startswith("rotated-") else "standard"
            tops[n] = cones[(k, e, b)].result().selective(show_dirs, min_count=10)
        if not any(tops.values()):
            continue
        fig, axes = plt.subplots(
            len(names), 1, figsize=(show_dirs * show_imgs * 0.5, len(names) * 0.75), squeeze=False
        )
        for i, n in enumerate(names):
            ax = axes[i][0]
            # one mosaic per model: show_dirs groups of show_imgs digits, a blank column between groups
            mosaic = torch.full((8, show_dirs * (show_imgs * 9 + 4)), float("nan"))
            captions = []
            for j, t in enumerate(tops[n]):
                for m, r in enumerate(t["top_rows"][:show_imgs]):
                    c0 = j * (show_imgs * 9 + 4) + m * 9
                    mosaic[:, c0 : c0 + 8] = x[r].reshape(8, 8)
                captions.append(f"{t['direction']}: digit {t['label']} {t['purity']:.0%} of {t['count']}")
            ax.imshow(mosaic.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(
                f"{n}:  " + "   |   ".join(captions) if captions else f"{n}: no cone holds 10 digits",
                fontsize=6,
                loc="left",
            )
        fig.suptitle(
            f"grandmother candidates, ε={e:g}: digits closest to the most selective basis directions (label purity of the cone)",
            fontsize=8,
        )
        fig.tight_layout()
        run_dir.figure(f"grandmother_eps{e:g}.png", fig)
