"""The printed tables and the figures of ``hooked repro spotlight``.

:func:`print_report`: test MSE, the pre-registered verdicts against the paper's claims, the
exploratory preferences, the non-SRM check and the grandmother candidates. :func:`figures`:
``srm_eps*.png``, ``ensemble_*.png``, ``verdicts.png`` and ``grandmother_eps*.png``.
matplotlib is imported only when the figures are drawn.
"""

from __future__ import annotations

from typing import Any

import torch

from analyses.spotlight.core import isotropic_reference
from papers.spotlight.analysis import HOOK, SRMPass, all_epsilons, cell
from papers.spotlight.training import Trained

MIN_DIGITS = 10  # digits a cone needs for its direction to be a grandmother candidate


def _privileged(trained: Trained, k: int) -> str:
    """The basis member ``k``'s activation privileges."""
    return "rotated" if trained.rotated[k] else "standard"


def print_report(
    trained: Trained,
    srm: SRMPass,
    results: dict[str, Any],
    table: list[dict[str, Any]],
    agree: dict[str, int],
    *,
    epsilons: list[float],
    explore_epsilons: list[float],
    n_angles: int,
) -> None:
    """The tables of the run, for a person."""
    names, bases = trained.names, list(srm.bases)
    d = srm.bases["standard"].shape[0]
    print(
        f"\n{len(names)} models trained in {trained.seconds:.0f} s "
        f"(test MSE; predicting the mean image: {trained.baseline:.4f}):"
    )
    print("  " + ", ".join(f"{n} {float(trained.test_mse[k]):.4f}" for k, n in enumerate(names)))
    all_eps = all_epsilons(epsilons, explore_epsilons)
    P = srm.found[(0, all_eps[0])]["standard"].result.planes.shape[0]
    print(
        f"\n1. PRE-REGISTERED. Spotlight resonance at {HOOK} (d={d}, {trained.x.shape[0]} digits, "
        f"{P} perm planes, {n_angles} angles).\n"
        f"   Verdict: z of the axis harmonic h4 against {len(srm.null)} random orthonormal bases; "
        "|z| >= 3: aligned (z>0) / anti-aligned (z<0).\n"
        "   'mean SRM' is the mean fraction of codes in a cone: near 0, the cones hold (almost) no codes."
    )
    for e in epsilons:
        print(f"\n   epsilon = {e:g} (isotropic reference {isotropic_reference(d, e):.2g})")
        print(
            f"   {'model':<16} | {'standard basis':<22} {'mean SRM':<9} {'paper':<10} "
            f"| {'rotated basis':<22} {'mean SRM':<9} {'paper':<10}"
        )
        for name in names:
            parts = []
            for b in bases:
                r = cell(table, name, e, b)
                found = f"{r['found']} ({r['z']:+.1f})" if r["found"] != "empty" else "empty"
                mark = " " if r["found"] == r["paper"] else "*"
                parts.append(f"{found:<22} {r['counted']:<9.1e} {r['paper']:<9}{mark}")
            print(f"   {name:<16} | {parts[0]} | {parts[1]}")
    print(
        f"\n   agreement with the paper's claims: {agree['preregistered']} of {agree['preregistered_cells']} "
        "cells (* marks a difference)"
    )

    if explore_epsilons:
        print(
            "\n2. EXPLORATORY (added after the first run). Wider cones: only 'is the basis preferred' "
            "(|z| >= 3) can be read.\n"
            "   z of h4 per epsilon; '!' marks |z| >= 3. "
            "Paper: preferred = the basis the activation privileges."
        )
        head = " ".join(f"{e:>6g}" for e in explore_epsilons)
        print(f"   {'model':<16} {'basis':<9} {head}   paper")
        for name in names:
            for b in bases:
                cells = [cell(table, name, e, b) for e in explore_epsilons]
                zs = " ".join(f"{c['z']:+5.1f}{'!' if c['preferred'] else ' '}" for c in cells)
                claim = (
                    "preferred" if cell(table, name, explore_epsilons[0], b)["paper"] == "aligned" else "none"
                )
                print(f"   {name:<16} {b:<9} {zs}   {claim}")
        print(
            f"\n   preference as the paper predicts: {agree['exploratory_preference']} of "
            f"{agree['exploratory_cells']} (model, basis, epsilon) cells"
        )
        print(
            "\n   Not SRM: median over codes of the norm share in their best basis plane, "
            "z against the random bases"
        )
        for name in names:
            c = results[name]["concentration"]
            print(
                f"   {name:<16} standard {c['standard']['median_best_plane_r']:.3f} "
                f"(z {c['standard']['z']:+6.1f})   "
                f"rotated {c['rotated']['median_best_plane_r']:.3f} (z {c['rotated']['z']:+6.1f})   "
                f"random bases {c['null_mean']:.3f} +- {c['null_std']:.3f}"
            )

    print(
        "\nmost selective basis direction (grandmother candidate) per model in its privileged basis "
        f"(>= {MIN_DIGITS} digits in the cone):"
    )
    for e in all_eps:
        line = []
        for k, name in enumerate(names):
            top = results[name]["srm"][str(e)][_privileged(trained, k)]["grandmother"]["most_selective"]
            if top:
                t = top[0]
                line.append(f"{name} {t['direction']}: digit {t['label']} {t['purity']:.0%} of {t['count']}")
        print(f"  eps {e:g}: " + ("; ".join(line) if line else f"no cone holds {MIN_DIGITS} digits"))


def print_rerun_hint(run_dir: Any, trained: Trained, rotation_seed: int) -> None:
    """The command that re-runs the analysis on one trained member (the last rotated one, else the first)."""
    k = len(trained.names) - 1 if trained.rotated[-1] else 0
    rot_flags = (
        f" --model-rotation-seed {rotation_seed} --basis {run_dir / 'rotated_basis.safetensors'}"
        if trained.rotated[-1]
        else ""
    )
    print(
        f"\nre-run the analysis on a trained model: python -m hooked run spotlight --model digits-ae "
        f"--model-activation {trained.activations[k]} --checkpoint {run_dir / 'models' / trained.names[k]} "
        f"--hook {HOOK}{rot_flags} --epsilon 0.4"
    )


def figures(
    run_dir: Any,
    trained: Trained,
    srm: SRMPass,
    table: list[dict[str, Any]],
    epsilons: list[float],
    preregistered: list[float],
) -> None:
    """Every figure of the run, into ``run_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analyses.spotlight.plots import plot_ensemble, spotlight_grid

    names, bases = trained.names, list(srm.bases)

    def verdict_of(n: str, e: float, b: str) -> str:
        c = cell(table, n, e, b)
        return f"{c['found']} (z={c['z']:+.1f})"

    for e in epsilons:
        notes = {
            n: {f"{b} basis": f"{verdict_of(n, e, b)}; paper: {cell(table, n, e, b)['paper']}" for b in bases}
            for n in names
        }
        fig = spotlight_grid(
            {n: {f"{b} basis": res for b, res in srm.srm(k, e).items()} for k, n in enumerate(names)},
            notes,
            title=f"SRM at the bottleneck, ε={e:g}: mean ± std over planes",
        )
        run_dir.figure(f"srm_eps{e:g}.png", fig)
    for k, n in enumerate(names):
        fig, axes = plt.subplots(
            len(epsilons), len(bases), figsize=(5 * len(bases), 2.4 * len(epsilons)), squeeze=False
        )
        for i, e in enumerate(epsilons):
            for j, b in enumerate(bases):
                plot_ensemble(srm.srm(k, e)[b], axes[i][j], max_lines=60)
                axes[i][j].set_title(f"{n}, {b} basis, ε={e:g}: {verdict_of(n, e, b)}", fontsize=8)
        fig.tight_layout()
        run_dir.figure(f"ensemble_{n}.png", fig)
    run_dir.figure("verdicts.png", _verdict_bars(plt, names, bases, table, epsilons, preregistered))
    for e in epsilons:
        fig = _grandmother_mosaics(plt, trained, srm, e)
        if fig is not None:
            run_dir.figure(f"grandmother_eps{e:g}.png", fig)


def _verdict_bars(
    plt: Any,
    names: list[str],
    bases: list[str],
    table: list[dict[str, Any]],
    epsilons: list[float],
    preregistered: list[float],
) -> Any:
    """z per model, basis and epsilon: one panel per epsilon."""
    ncols = min(3, len(epsilons))
    nrows = -(-len(epsilons) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(epsilons) :]:
        ax.axis("off")
    for i, e in enumerate(epsilons):
        ax = axes.flat[i]
        pos = range(len(names))
        for j, b in enumerate(bases):
            zs = [max(-12.0, min(12.0, cell(table, n, e, b)["z"])) for n in names]
            ax.bar([p + (j - 0.5) * 0.4 for p in pos], zs, width=0.4, label=f"{b} basis")
        for t in (-3, 3):
            ax.axhline(t, color="k", ls="--", lw=0.8)
        ax.set_xticks(list(pos), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(
            f"ε={e:g}" + (" (pre-registered)" if e in preregistered else " (exploratory)"), fontsize=9
        )
        if i % ncols == 0:
            ax.set_ylabel("z of h4 (clipped ±12)")
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(
        "is the basis preferred? |z| ≥ 3 (dashed); the sign reads aligned / anti-aligned only for ε > 0.707",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _grandmother_mosaics(plt: Any, trained: Trained, srm: SRMPass, e: float) -> Any:
    """The digits in the most selective cones of each model's privileged basis (None: none holds enough)."""
    show_dirs, show_imgs = 3, 6
    names = trained.names
    tops = {
        n: srm.found[(k, e)][_privileged(trained, k)].grandmother.selective(show_dirs, min_count=MIN_DIGITS)
        for k, n in enumerate(names)
    }
    if not any(tops.values()):
        return None
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
                mosaic[:, c0 : c0 + 8] = trained.x[r].reshape(8, 8)
            captions.append(f"{t['direction']}: digit {t['label']} {t['purity']:.0%} of {t['count']}")
        ax.imshow(mosaic.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(
            f"{n}:  " + "   |   ".join(captions) if captions else f"{n}: no cone holds {MIN_DIGITS} digits",
            fontsize=6,
            loc="left",
        )
    fig.suptitle(
        f"grandmother candidates, ε={e:g}: digits closest to the most selective basis directions "
        "(label purity of the cone)",
        fontsize=8,
    )
    fig.tight_layout()
    return fig
