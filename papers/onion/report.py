"""The onion report: the size x method table, the verdict against the paper's claim, the plot."""

from __future__ import annotations

from typing import Any

from papers.onion.training import METHODS, PROBES


def paper_claim(size: int) -> str:
    if size <= 64:
        return "linear fail, onion succeeds"
    if size >= 512:
        return "linear succeed"
    return "(no claim: between)"


def size_table(rows: list[dict], sizes: Any, probes: bool) -> dict:
    import statistics

    present = [m for m in METHODS if any(m in r.get("interventions", {}) for r in rows)]
    columns = ["model", *present] + (list(PROBES) if probes else [])
    cells: dict[str, dict[str, dict]] = {}
    for size in sizes:
        mine = [r for r in rows if r["size"] == size]
        cells[str(size)] = {}
        for col in columns:
            if col == "model":
                vals = [r["model_valid_accuracy"] for r in mine]
                steps = [r.get("model_steps") for r in mine]
            elif col in METHODS:
                have = [r for r in mine if col in r.get("interventions", {})]
                vals = [r["interventions"][col] for r in have]
                steps = [
                    r["intervention_details"][col].get("steps", r.get("intervention_steps")) for r in have
                ]
            else:
                have = [r for r in mine if "probes" in r]
                vals = [r["probes"][col] for r in have]
                steps = [r.get("probe_steps") for r in have]
            if vals:
                cells[str(size)][col] = {
                    "mean": statistics.fmean(vals),
                    "std": statistics.pstdev(vals),
                    "n": len(vals),
                    "steps": sorted({s for s in steps if s is not None}),
                }
    head = f"{'N':>6} | " + " | ".join(f"{c:>14}" for c in columns) + " | paper's claim"
    lines = [head, "-" * len(head)]
    for size in sizes:
        c = cells[str(size)]
        vals = []
        for col in columns:
            if col not in c:
                vals.append(f"{'-':>14}")
                continue
            x = c[col]
            text = f"{x['mean']:.3f}±{x['std']:.2f}" if x["n"] > 1 else f"{x['mean']:.3f}"
            if x["steps"]:
                text += " (" + ",".join(f"{s / 1000:g}k" for s in x["steps"]) + ")"
            vals.append(f"{text:>14}")
        lines.append(f"{size:>6} | " + " | ".join(vals) + f" | {paper_claim(size)}")
    lines.append(
        "model = exact match of the trained model on held-out sequences (lengths 2-9); unigram, bigram = "
        "autosegment, das = DAS with fixed blocks (unigram regime), onion = magnitude: intervention "
        "accuracy; probes: read-out accuracy; (k) = training steps"
    )
    return {"columns": columns, "cells": cells, "text": "\n".join(lines)}


def verdict_text(table: dict) -> str:
    """What the measured numbers say about the claim, in words (thresholds stated, not tuned)."""
    cells = table["cells"]
    lines = ["Against the paper's claim (fail: accuracy < 0.5, succeed: accuracy >= 0.8):"]
    for size, c in cells.items():
        n = int(size)
        lin = max((c[m]["mean"] for m in ("unigram", "bigram", "das") if m in c), default=0.0)
        on = c.get("onion", {}).get("mean", 0.0)
        model = c.get("model", {}).get("mean", float("nan"))
        got = f"best linear {lin:.2f}, onion {on:.2f} (model without intervention {model:.2f})"
        if n <= 64:
            ok = lin < 0.5 and on >= 0.8
            lines.append(
                f"  N={n}: claim 'linear fail, onion succeeds' -> {got}: "
                f"{'agrees' if ok else 'does not agree'}"
            )
        elif n >= 512:
            ok = lin >= 0.8
            lines.append(f"  N={n}: claim 'linear succeed' -> {got}: {'agrees' if ok else 'does not agree'}")
        else:
            lines.append(f"  N={n}: no claim -> {got}")
    return "\n".join(lines)


def plot_table(run_dir: Any, table: dict, cell: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = table["cells"]
    sizes = [int(s) for s in cells]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    styles = {
        "model": ("k", "--"),
        "unigram": ("C0", "-"),
        "bigram": ("C1", "-"),
        "das": ("C4", "-"),
        "onion": ("C3", "-"),
        "linear probe": ("C0", ":"),
        "mlp probe": ("C2", ":"),
        "onion probe": ("C3", ":"),
    }
    for col in table["columns"]:
        pts = [(s, cells[str(s)][col]) for s in sizes if col in cells[str(s)]]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1]["mean"] for p in pts]
        es = [p[1]["std"] for p in pts]
        color, ls = styles.get(col, (None, "-"))
        ax.errorbar(
            xs,
            ys,
            yerr=es,
            label=col if col != "model" else "model (no intervention)",
            color=color,
            linestyle=ls,
            marker="o",
            capsize=3,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{cell.upper()} state size N")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title("Repeat task: interventions at the final encoder state")
    ax.legend(fontsize=8, loc="best")
    run_dir.figure("onion.png", fig)
