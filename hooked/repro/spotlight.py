"""``hooked repro spotlight``: activation functions and axis alignment (Bird 2025, SRM; SPECS D).

Autoencoders ``64 -> 128 -> 16 -> 128 -> 64`` on scikit-learn's bundled 8 x 8 digits, one per
activation function (ReLU, tanh, GELU, sigmoid, IsoTanh, linear), plus models whose bottleneck
activation acts in a rotated basis ``Q`` (``h = Q^T f(Q z)``). All train side by side as one
batched model (:class:`hooked.models.autoencoder.Autoencoder`) with momentum SGD from an isotropic
(Gaussian) initialisation, so that for the linear and IsoTanh models nothing but chance can
prefer a basis of the bottleneck (see that module).

The bottleneck activations are read through the hook point ``hook_bottleneck`` (streamed in
batches) and the Spotlight Resonance Method is run in the standard basis and in the rotated basis
``Q``, at several epsilons, together with ``null_bases`` Haar-random orthonormal bases. The verdict
per model and basis follows :mod:`analyses.spotlight.alignment`, a rule fixed (and checked on
synthetic data) before any autoencoder was measured: ``z`` of the axis harmonic ``h4`` against the
random bases, ``z >= 3`` aligned, ``z <= -3`` anti-aligned, otherwise isotropic (no preference for
this basis). Epsilons must exceed cos(pi/4) for a verdict (narrower cones than pi/4); the default
0.8, 0.85, 0.9 bracket the paper's 0.85 and 0.9.

The paper's claims (SPECS D): elementwise activations align representations with the basis they
privilege (standard basis: aligned; an unrelated rotation: no preference); the rotated models align
with their rotated basis and not with the standard one; IsoTanh and linear show no preferred basis.

Written to the run folder: ``srm_eps*.png`` (mean +- std per model and basis, verdicts in the
titles), ``ensemble_*.png`` (one line per plane), ``verdicts.png`` (z per model, basis and
epsilon), ``grandmother_eps*.png`` (the digits in the most selective directions' cones),
``models/NAME/`` checkpoints (``hooked run spotlight --model digits-ae --checkpoint ...`` reads
them), and the numbers in ``results.json``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from hooked.registry import register_repro

ISOTROPIC = ("isotanh", "linear")


def paper_claim(activation: str, rotated: bool, basis: str) -> str:
    """The verdict the paper's claims predict for a model and a basis ("standard" or "rotated")."""
    if activation in ISOTROPIC:
        return "isotropic"
    privileged = "rotated" if rotated else "standard"
    return "aligned" if basis == privileged else "isotropic"


@register_repro("spotlight")
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
        epsilons: spotlight resolutions (cosine of the cone half angle), each > cos(pi/4) = 0.707.
        n_angles: spotlight angles on [0, 2 pi).
        null_bases: random orthonormal bases the verdict compares against.
        rotation_seed: seed of the rotated basis Q.
        seed: seed of initialisation, data split and batches.
        progress: show progress bars.
    """
    import torch

    from analyses.spotlight.alignment import verdict
    from analyses.spotlight.basis import random_orthonormal
    from analyses.spotlight.core import SpotlightCounter, isotropic_reference
    from analyses.spotlight.grandmother import ConeCounter
    from analyses.spotlight.stream import null_seed
    from hooked import checkpoint
    from hooked.models.autoencoder import ACTIVATIONS, ELEMENTWISE, Autoencoder, load_digits, random_rotation, train_autoencoder
    from hooked.protocol import iter_activations

    for a in activations:
        if a not in ACTIVATIONS:
            raise ValueError(f"--activations: {a!r} is not one of {ACTIVATIONS}")
    for a in rotated:
        if a not in ELEMENTWISE:
            raise ValueError(f"--rotated: {a!r} is not an elementwise activation {ELEMENTWISE}")
    if not activations and not rotated:
        raise ValueError("no models: give --activations and/or --rotated")
    for e in epsilons:
        if not math.sqrt(0.5) < e <= 1:
            raise ValueError(f"--epsilons: {e} is not in (0.707, 1]: cones of half angle >= pi/4 give no verdict (see analyses.spotlight.alignment)")
    if null_bases < 2:
        raise ValueError(f"--null-bases must be >= 2 for a verdict, got {null_bases}")
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
    print(f"training {len(names)} autoencoders side by side ({optimizer}, {epochs} epochs, lr {lr}): {', '.join(names)}")
    t0 = time.perf_counter()
    losses = train_autoencoder(model, x[train_idx], epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed, progress=progress and "training")
    train_seconds = time.perf_counter() - t0
    with torch.no_grad():
        test_mse = ((model(x[test_idx]) - x[test_idx][:, None]) ** 2).mean(dim=(0, 2))
        baseline = float(((x[test_idx] - x[train_idx].mean(0)) ** 2).mean())
    for k, name in enumerate(names):
        checkpoint.save(model.member(k), run_dir / "models" / name, meta={"test_mse": float(test_mse[k]), "epochs": epochs, "optimizer": optimizer, "lr": lr})

    # ------------------------------------------------------------------ SRM through the hook point
    d = d_bottleneck
    q = random_rotation(d, rotation_seed).double()
    bases = {"standard": torch.eye(d, dtype=torch.float64), "rotated": q}
    null = [random_orthonormal(d, seed=null_seed(seed, r)) for r in range(null_bases)]
    counters = {
        (k, e): SpotlightCounter(list(bases.values()) + null, epsilon=e, n_angles=n_angles, zeros="skip")
        for k in range(len(names))
        for e in epsilons
    }
    cones = {
        (k, e, b): ConeCounter(basis, epsilon=e, top=8, n_labels=10, zeros="skip")
        for k in range(len(names))
        for e in epsilons
        for b, basis in bases.items()
    }
    t0 = time.perf_counter()
    batches = list(x.split(256))
    labels = list(y.split(256))
    bar = iter_activations(model, batches, ["hook_bottleneck"], progress=progress and "spotlight")
    for acts_b, lab in zip(bar, labels):
        a = acts_b["hook_bottleneck"]  # [batch, model, d]
        for (k, _), counter in counters.items():
            counter.add(a[:, k])
        for (k, _, _), cone in cones.items():
            cone.add(a[:, k], lab)
    srm_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ verdicts
    results: dict[str, Any] = {}
    srm: dict[float, dict[str, dict[str, Any]]] = {e: {} for e in epsilons}
    table: list[dict[str, Any]] = []
    for k, name in enumerate(names):
        is_rot = k >= len(activations)
        entry: dict[str, Any] = {
            "activation": acts[k],
            "rotated_basis": is_rot,
            "train_mse": float(losses[-1, k]),
            "test_mse": float(test_mse[k]),
            "loss_curve": [round(v, 5) for v in losses[:: max(1, epochs // 20), k].tolist()],
            "srm": {},
        }
        for e in epsilons:
            found = counters[(k, e)].results()
            res = dict(zip(bases, found[:2]))
            srm[e][name] = res
            per_eps: dict[str, Any] = {}
            for b in bases:
                v = verdict(res[b], found[2:])
                claim = paper_claim(acts[k], is_rot, b)
                g = cones[(k, e, b)].result()
                per_eps[b] = {
                    "verdict": v,
                    "paper": claim,
                    "agrees": v["verdict"] == claim,
                    "srm": res[b].summary(),
                    "grandmother": g.summary(top=5, min_count=10),
                }
                table.append({"model": name, "epsilon": e, "basis": b, "found": v["verdict"], "z": v["z"], "h4": v["h4"], "c4": v["c4"], "paper": claim})
            entry["srm"][str(e)] = per_eps
        results[name] = entry

    # ------------------------------------------------------------------ report
    print(f"\n{len(names)} models trained in {train_seconds:.0f} s (test MSE; predicting the mean image: {baseline:.4f}):")
    print("  " + ", ".join(f"{n} {float(test_mse[k]):.4f}" for k, n in enumerate(names)))
    print(
        f"\nSpotlight resonance at hook_bottleneck (d={d}, {x.shape[0]} digits, {counters[(0, epsilons[0])].block_planes.shape[0]} perm planes, "
        f"{n_angles} angles; verdict: z of the axis harmonic h4 against {null_bases} random bases, |z| >= 3)"
    )
    agree = sum(r["found"] == r["paper"] for r in table)
    for e in epsilons:
        print(f"\nepsilon = {e:g} (isotropic reference {isotropic_reference(d, e):.3g}; zero codes skipped)")
        print(f"  {'model':<16} | {'standard basis':<18} {'paper':<10} | {'rotated basis':<18} {'paper':<10}")
        for name in names:
            cells = []
            for b in bases:
                r = next(t for t in table if t["model"] == name and t["epsilon"] == e and t["basis"] == b)
                found = f"{r['found']} ({r['z']:+.1f})"
                cells.append(f"{found:<18} {r['paper']:<9}{' ' if r['found'] == r['paper'] else '*'}")
            print(f"  {name:<16} | {cells[0]} | {cells[1]}")
    print(f"\nagreement with the paper's claims: {agree} of {len(table)} (model, basis, epsilon) cells; * marks a difference")
    print("\nmost selective basis direction (grandmother candidate) per model, in its privileged basis:")
    for e in epsilons:
        line = []
        for k, name in enumerate(names):
            b = "rotated" if k >= len(activations) else "standard"
            top = results[name]["srm"][str(e)][b]["grandmother"]["most_selective"]
            if top:
                t = top[0]
                line.append(f"{name} {t['direction']}: digit {t['label']} {t['purity']:.0%} of {t['count']}")
        print(f"  eps {e:g}: " + ("; ".join(line) if line else "no cone with >= 10 digits"))

    # ------------------------------------------------------------------ plots
    _plots(run_dir, names, activations, srm, table, cones, x, epsilons, bases)
    run_dir.tensors("bases.safetensors", {"rotated": q, **{f"null_{r}": n for r, n in enumerate(null)}})
    hint = names[-1] if rotated else names[0]
    rot_flag = f" --model-rotation-seed {rotation_seed}" if rotated else ""
    print(
        f"\nre-run the analysis on a trained model: python -m hooked run spotlight --model digits-ae "
        f"--model-activation {acts[-1] if rotated else acts[0]}{rot_flag} --checkpoint {run_dir / 'models' / hint} --hook hook_bottleneck"
    )
    return {
        "settings": {
            "models": names, "d_bottleneck": d, "d_hidden": d_hidden, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "optimizer": optimizer, "epsilons": epsilons, "n_angles": n_angles, "null_bases": null_bases,
            "rotation_seed": rotation_seed, "seed": seed, "n_train": int(train_idx.numel()), "n_test": int(test_idx.numel()),
            "srm_samples": int(x.shape[0]), "verdict_rule": "z = (h4 - mean_null) / std_null over random rotations of the basis; z >= 3 aligned, z <= -3 anti-aligned, else isotropic",
        },
        "mean_image_test_mse": baseline,
        "seconds": {"train": train_seconds, "srm": srm_seconds, "total": time.perf_counter() - started},
        "table": table,
        "agreement": {"agree": agree, "cells": len(table)},
        "models": results,
    }


def _plots(run_dir: Any, names: list[str], activations: list[str], srm: dict, table: list[dict], cones: dict, x: Any, epsilons: list[float], bases: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analyses.spotlight.plots import plot_ensemble, spotlight_grid

    def row(name: str, e: float, b: str) -> dict:
        return next(t for t in table if t["model"] == name and t["epsilon"] == e and t["basis"] == b)

    for e in epsilons:
        notes = {n: {b: f"{row(n, e, b)['found']} (z={row(n, e, b)['z']:+.1f}); paper: {row(n, e, b)['paper']}" for b in bases} for n in names}
        fig = spotlight_grid({n: {f"{b} basis": srm[e][n][b] for b in bases} for n in names},
                             {n: {f"{b} basis": notes[n][b] for b in bases} for n in names},
                             title=f"SRM at the bottleneck, ε={e:g}: mean ± std over planes")
        run_dir.figure(f"srm_eps{e:g}.png", fig)
    for n in names:
        fig, axes = plt.subplots(len(epsilons), len(bases), figsize=(5 * len(bases), 2.6 * len(epsilons)), squeeze=False)
        for i, e in enumerate(epsilons):
            for j, b in enumerate(bases):
                plot_ensemble(srm[e][n][b], axes[i][j])
                axes[i][j].set_title(f"{n}, {b} basis, ε={e:g}: {row(n, e, b)['found']} (z={row(n, e, b)['z']:+.1f})", fontsize=8)
        fig.tight_layout()
        run_dir.figure(f"ensemble_{n}.png", fig)

    # z per model, basis and epsilon
    fig, axes = plt.subplots(1, len(epsilons), figsize=(4.5 * len(epsilons), 3.6), squeeze=False, sharey=True)
    for i, e in enumerate(epsilons):
        ax = axes[0][i]
        pos = range(len(names))
        for j, b in enumerate(bases):
            zs = [max(-60.0, min(60.0, row(n, e, b)["z"])) for n in names]
            ax.bar([p + (j - 0.5) * 0.4 for p in pos], zs, width=0.4, label=f"{b} basis")
        for t in (-3, 3):
            ax.axhline(t, color="k", ls="--", lw=0.8)
        ax.set_xticks(list(pos), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"ε={e:g}", fontsize=9)
        if i == 0:
            ax.set_ylabel("z of h4 vs random bases (clipped ±60)")
            ax.legend(fontsize=7)
    fig.suptitle("alignment with a basis: |z| ≥ 3 is the verdict threshold", fontsize=10)
    fig.tight_layout()
    run_dir.figure("verdicts.png", fig)

    # grandmother neurons: the digits in the most selective cones
    show_dirs, show_imgs = 3, 6
    for e in epsilons:
        fig, axes = plt.subplots(len(names), show_dirs * show_imgs, figsize=(show_dirs * show_imgs * 0.55, len(names) * 0.8), squeeze=False)
        for i, n in enumerate(names):
            b = "rotated" if n.startswith("rotated-") else "standard"
            k = names.index(n)
            top = cones[(k, e, b)].result().selective(show_dirs, min_count=10)
            for ax in axes[i]:
                ax.axis("off")
            for j, t in enumerate(top):
                for m, r in enumerate(t["top_rows"][:show_imgs]):
                    ax = axes[i][j * show_imgs + m]
                    ax.imshow(x[r].reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
                    if m == 0:
                        ax.set_title(f"{n} {t['direction']}: {t['label']} {t['purity']:.0%}/{t['count']}", fontsize=6, loc="left")
        fig.suptitle(f"grandmother candidates, ε={e:g}: digits closest to the most selective basis directions (label purity / cone size)", fontsize=8)
        fig.tight_layout()
        run_dir.figure(f"grandmother_eps{e:g}.png", fig)
