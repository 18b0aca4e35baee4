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
    ax.scatter((x[:, None] * jitter).ravel(), D.ravel(), s=3, alpha=0.35, color="tab:blue", label="$D_i$ (each feature)")
    ax.plot(x, d_star.detach().cpu().numpy(), color="black", lw=1.8, marker="o", ms=3, label="$D^* = m/\\|W\\|_F^2$")
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
    ax.legend(handles=[Patch(color=palette[k], label=names[k]) for k in present], fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
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
