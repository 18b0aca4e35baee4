"""Figures for the superposition analyses (matplotlib with the Agg backend, imported on use).

Each function returns a matplotlib Figure; save it with ``RunDir.figure(name, fig)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def hidden_space_figure(W: Tensor, titles: Sequence[str], importance: Tensor | None = None) -> Any:
    """One panel per instance: each feature's direction W_i in a 2-D hidden space ([k, 2, n])."""
    plt = _plt()
    W = W.detach().cpu().numpy()
    k, _, n = W.shape
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, n))
    fig, axes = plt.subplots(1, k, figsize=(1.9 * k, 2.3), squeeze=False)
    lim = max(1.2, float(np.abs(W).max()) * 1.1)
    theta = np.linspace(0, 2 * np.pi, 200)
    for ax, w, title in zip(axes[0], W, titles):
        ax.plot(np.cos(theta), np.sin(theta), color="0.85", lw=0.8, zorder=0)
        for i in range(n):
            ax.plot([0, w[0, i]], [0, w[1, i]], color=colors[i], lw=1.6)
            ax.scatter(w[0, i], w[1, i], color=colors[i], s=14, zorder=3)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
    if importance is not None:
        fig.text(0.5, -0.02, "colour: feature index (more important = darker)", ha="center", fontsize=7)
    fig.tight_layout()
    return fig


def dimensionality_figure(inv_density: Tensor, d_star: Tensor, D: Tensor, fractions: Sequence[Any]) -> Any:
    """D* (line) and every D_i (dots) against 1/(1-S), with the reference fractions drawn."""
    plt = _plt()
    x = inv_density.detach().cpu().numpy()
    D = D.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for f in fractions:
        ax.axhline(float(f), color="0.75", lw=0.8, ls="--", zorder=0)
        ax.text(x.max() * 1.08, float(f), str(f), va="center", fontsize=8, color="0.4")
    rng = np.random.default_rng(0)
    jitter = np.exp(rng.uniform(-0.04, 0.04, size=D.shape))
    ax.scatter(
        (x[:, None] * jitter).ravel(),
        D.ravel(),
        s=3,
        alpha=0.35,
        color="tab:blue",
        label="$D_i$ (each feature)",
    )
    ax.plot(
        x,
        d_star.detach().cpu().numpy(),
        color="black",
        lw=1.8,
        marker="o",
        ms=3,
        label="$D^* = m/\\|W\\|_F^2$",
    )
    ax.set_xscale("log")
    ax.set_xlabel("1 / (1 - S)   (inverse feature density)")
    ax.set_ylabel("dimensions per feature")
    ax.set_ylim(-0.03, 1.1)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def phase_figure(phases: Tensor, densities: Tensor, importances: Tensor, names: dict[int, str]) -> Any:
    """The n = 2, m = 1 phase diagram: phase per (density, relative importance) cell."""
    plt = _plt()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    palette = ["#bdbdbd", "#4c72b0", "#dd8452", "#ffffff"]
    cmap = ListedColormap(palette)
    d = densities.detach().cpu().numpy()
    r = importances.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    ax.pcolormesh(_edges(d), _edges(r), phases.cpu().numpy(), cmap=cmap, vmin=-0.5, vmax=3.5, shading="flat")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("feature density 1 - S")
    ax.set_ylabel("relative importance of the extra feature")
    present = sorted(set(phases.flatten().tolist()))
    ax.legend(
        handles=[Patch(color=palette[k], label=names[k]) for k in present],
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=2,
    )
    fig.tight_layout()
    return fig


def _edges(values: np.ndarray) -> np.ndarray:
    """Cell edges (geometric midpoints) for sorted or reverse-sorted log-spaced centres."""
    v = np.asarray(values, dtype=float)
    logs = np.log(v)
    mid = (logs[1:] + logs[:-1]) / 2
    first = logs[0] - (mid[0] - logs[0])
    last = logs[-1] + (logs[-1] - mid[-1])
    return np.exp(np.concatenate([[first], mid, [last]]))


def gram_grid_figure(
    corr: Tensor, grams: dict, weight_decays: Sequence[float], latents: Sequence[int], title: str
) -> Any:
    """Rows: weight decays; columns: the data's correlation matrix, then WᵀW/||W||² per latent size."""
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm

    rows, cols = len(weight_decays), len(latents) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.5 * rows + 0.4), squeeze=False)
    vmax = max([float(g.abs().max()) for g in grams.values()] + [1e-9])
    c = corr.clone()
    c.fill_diagonal_(0)
    for r, wd in enumerate(weight_decays):
        axes[r, 0].imshow(c.numpy(), cmap="coolwarm", norm=TwoSlopeNorm(0, -1, 1))
        axes[r, 0].set_ylabel(f"wd = {wd:g}", fontsize=8)
        for j, L in enumerate(latents, 1):
            g = grams.get((wd, L))
            if g is not None:
                axes[r, j].imshow(g.detach().numpy(), cmap="coolwarm", norm=TwoSlopeNorm(0, -vmax, vmax))
            if r == 0:
                axes[r, j].set_title(f"L = {L}", fontsize=8)
        if r == 0:
            axes[r, 0].set_title("data corr.", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}: normalised Gram matrix WᵀW/||W||² (red +, blue −)", fontsize=9)
    fig.tight_layout()
    return fig


def synthetic_summary_figure(
    rows: Sequence[dict], kinds: Sequence[str], weight_decays: Sequence[float]
) -> Any:
    """Gram-vs-correlation similarity and constructive share against latent size, per data kind and
    weight decay."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    colors = dict(zip(kinds, plt.get_cmap("tab10").colors))
    styles = ["-", "--", ":", "-."]
    for kind in kinds:
        for s, wd in enumerate(weight_decays):
            sel = sorted(
                (r for r in rows if r["kind"] == kind and r["weight_decay"] == wd), key=lambda r: r["latent"]
            )
            L = [r["latent"] for r in sel]
            kw = dict(color=colors[kind], ls=styles[s % len(styles)], marker="o", ms=2.5, lw=1.3)
            axes[0].plot(L, [r["gram_corr_similarity"] for r in sel], label=f"{kind}, wd={wd:g}", **kw)
            axes[1].plot(L, [r["constructive_share"] for r in sel], **kw)
    axes[0].set_ylabel("corr(off-diag WᵀW, data corr.)")
    axes[1].set_ylabel("share of active features with\npositive interference")
    for ax in axes:
        ax.set_xlabel("latent size L")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def correlation_figure(C: Tensor, labels: Sequence[str]) -> Any:
    """A group's co-occurrence correlation matrix."""
    plt = _plt()
    c = C.detach().clone().float()
    c.fill_diagonal_(float("nan"))
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    vmax = float(np.nanmax(np.abs(c.numpy()))) or 1.0
    im = ax.imshow(c.numpy(), cmap="coolwarm", vmin=-vmax, vmax=vmax)
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("correlation (windows with any)", fontsize=7)
    fig.tight_layout()
    return fig


def months_pca_figure(panels: Sequence[tuple[str, Tensor, dict]], labels: Sequence[str]) -> Any:
    """2-D PCA of a cyclic group's unit vectors, one panel per model, joined in reference order."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.2), squeeze=False)
    colors = plt.get_cmap("twilight")(np.linspace(0, 1, len(labels), endpoint=False))
    for ax, (title, coords, cyc) in zip(axes[0], panels):
        xy = coords.detach().numpy()
        closed = np.vstack([xy, xy[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color="0.6", lw=0.8, zorder=1)
        for (x, y), lab, col in zip(xy, labels, colors):
            ax.plot([0, x], [0, y], color="0.85", lw=0.6, zorder=0)
            ax.scatter(x, y, color=col, s=28, zorder=2, edgecolor="k", linewidth=0.3)
            ax.annotate(lab, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.scatter(0, 0, color="red", s=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"{title}\n{cyc['adjacent_fraction']:.2f} of neighbours adjacent (p={cyc['p_value']:.2g})",
            fontsize=8,
        )
    fig.tight_layout()
    return fig


def r2_figure(r2_ctx: Tensor, r2_alone: Tensor, titles: Sequence[str]) -> Any:
    """Per-word R² in context (real windows) against alone (one-hot input), one panel per model."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(titles), figsize=(3.0 * len(titles), 3.0), squeeze=False)
    for ax, c, a, title in zip(axes[0], r2_ctx, r2_alone, titles):
        ok = ~(c.isnan() | a.isnan())
        c, a = c[ok].numpy(), a[ok].numpy()
        ax.scatter(a, c, s=3, alpha=0.4)
        lo = float(min(a.min(), c.min(), 0))
        ax.plot([lo, 1], [lo, 1], color="k", lw=0.8, ls="--")
        ax.set_xlabel("R² alone (one-hot)", fontsize=8)
        ax.set_ylabel("R² in context", fontsize=8)
        ax.set_title(f"{title}: {np.mean(c > a):.0%} better in context", fontsize=8)
    fig.tight_layout()
    return fig


def gram_norm_figure(sizes: Sequence[int], norms: dict, weight_decay: float) -> Any:
    """||G - diag G||_F of word groups against the latent size."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for name, values in norms.items():
        ax.plot(list(sizes), values.detach().numpy(), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latent size L")
    ax.set_ylabel("||G - diag G||_F")
    ax.set_title(f"group Gram off-diagonal norm (wd = {weight_decay:g})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
