"""Plots of SRM results (matplotlib, Agg backend, imported only when a plot is drawn).

* :func:`plot_ensemble` - one thin line per plane (a random subset when there are many).
* :func:`plot_mean` - the mean over planes with a +-1 std band.
* :func:`spotlight_figure` - both panels for one result; :func:`spotlight_grid` - mean curves of
  several results side by side (rows x columns of a dict of dicts).

Every panel has ticks at multiples of pi/2 (where the spotlight points along a basis vector) and
the isotropic reference as a dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from analyses.spotlight.core import SpotlightResult

MAX_LINES = 400


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes_style(ax: Any, result: SpotlightResult) -> None:
    ticks = [k * math.pi / 2 for k in range(5)]
    ax.set_xticks(ticks, ["0", "π/2", "π", "3π/2", "2π"])
    ax.set_xlim(0, 2 * math.pi)
    for t in ticks:
        ax.axvline(t, color="0.85", lw=0.6, zorder=0)
    ax.axhline(result.reference, color="k", ls="--", lw=1, label=f"isotropic {result.reference:.3g}")
    ax.set_xlabel("spotlight angle θ")
    ax.set_ylabel("signed SRM" if result.signed else "SRM (fraction in cone)")


def _closed(result: SpotlightResult, values: torch.Tensor) -> tuple[Any, Any]:
    """x and y with the first angle repeated at 2 pi, so that curves close."""
    theta = torch.cat([result.angles.cpu(), torch.tensor([2 * math.pi], dtype=torch.float64)])
    v = values.cpu()
    return theta.numpy(), torch.cat([v, v[..., :1]], dim=-1).numpy()


def plot_ensemble(result: SpotlightResult, ax: Any = None, max_lines: int = MAX_LINES, seed: int = 0) -> Any:
    """One line per plane (at most ``max_lines``, chosen at random with ``seed``)."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    values = result.values
    shown = values
    if values.shape[0] > max_lines:
        pick = torch.randperm(values.shape[0], generator=torch.Generator().manual_seed(seed))[:max_lines]
        shown = values[pick.to(values.device)]
    x, y = _closed(result, shown)
    alpha = max(0.15, min(0.8, 20 / shown.shape[0]))
    ax.plot(x, y.T, color="tab:blue", lw=0.6, alpha=alpha)
    _axes_style(ax, result)
    n_shown = shown.shape[0]
    more = f" ({n_shown} of {values.shape[0]} shown)" if n_shown < values.shape[0] else ""
    ax.set_title(f"{values.shape[0]} planes{more}, ε={result.epsilon:g}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def plot_mean(
    result: SpotlightResult, ax: Any = None, label: str | None = None, color: str = "tab:red"
) -> Any:
    """Mean over planes with a +-1 std band."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    x, mean = _closed(result, result.mean)
    _, std = _closed(result, result.std)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    ax.plot(x, mean, color=color, lw=1.5, label=label or "mean ± std over planes")
    _axes_style(ax, result)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def spotlight_figure(result: SpotlightResult, title: str = "") -> Any:
    """Ensemble and mean +- std side by side."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    plot_ensemble(result, a)
    plot_mean(result, b)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def spotlight_grid(
    results: Mapping[str, Mapping[str, SpotlightResult]],
    notes: Mapping[str, Mapping[str, str]] | None = None,
    title: str = "",
) -> Any:
    """Mean +- std panels: one row per outer key, one column per inner key; optional note per panel."""
    plt = _pyplot()
    rows = list(results)
    cols = list(dict.fromkeys(c for r in rows for c in results[r]))
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(3.6 * len(cols), 2.3 * len(rows)), squeeze=False, sharex=True
    )
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            if c not in results[r]:
                ax.axis("off")
                continue
            plot_mean(results[r][c], ax)
            ax.get_legend().remove()
            ax.set_title(
                f"{r} | {c}" + (f"\n{notes[r][c]}" if notes and c in notes.get(r, {}) else ""), fontsize=8
            )
            if i < len(rows) - 1:
                ax.set_xlabel("")
            if j:
                ax.set_ylabel("")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
