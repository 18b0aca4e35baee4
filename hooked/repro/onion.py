"""``hooked repro onion``: onion representations in small GRUs (Csordás et al. 2024; SPECS A).

For each state size N (and seed): train the repeat-task model (``RepeatModel``: one GRU, or LSTM
with ``--cell lstm``, as encoder and decoder), then, with the model frozen, train and evaluate at
its ``hook_memory`` (the final encoder state):

* ``unigram``: the linear autosegment intervention with K = 9 variables (one per position),
  length-9 sequences;
* ``bigram``: the same with K = 8 variables (pairs of neighbouring positions), length 9;
* ``das``: a plain DAS intervention in the unigram regime, variable k = a fixed block of N/9
  rotated coordinates (no learned assignment: it converges in far fewer steps than autosegment);
* ``onion``: the magnitude intervention h~ + s(p) (tanh E[old] - tanh E[new]), lengths 2..9;

and, as read-outs without intervention, linear / MLP / onion probes of the stored tokens.
Intervention accuracy = whole-sequence exact match of the edited run with the original sequence,
on held-out sequences. The paper's claim (no table published): the smallest GRUs (N = 48, 64) store
the sequence by magnitude (linear interventions fail, the onion one succeeds); large GRUs
(N >= 512) store it linearly (linear interventions succeed).

Defaults are sized for a shared 2-core CPU (3 small sizes, far fewer steps than the paper's 40k
model / 60k intervention steps; autosegment in particular needs ~20k steps even on a perfectly
linear code, see the README); ``--sizes 48,64,128,256,512,1024 --steps 40000
--intervention-steps 60000 --device cuda`` is the paper's sweep. Every (size, seed) writes its own
JSON and checkpoint into the run folder and is skipped when present, so a sweep can be resumed,
or split over processes that share ``--out`` and collected by a last run over all sizes; a model
checkpoint with fewer than ``--steps`` steps is trained on (with a fresh AdamW state).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from hooked.registry import register_repro

METHODS = ("unigram", "bigram", "das", "onion")
PROBES = ("linear probe", "mlp probe", "onion probe")


def claim(size: int) -> str:
    if size <= 64:
        return "linear fail, onion succeeds"
    if size >= 512:
        return "linear succeed"
    return "(no claim: between)"


@register_repro("onion")
def onion(
    run_dir: Any,
    *,
    cell: Literal["gru", "lstm"] = "gru",
    sizes: tuple[int, ...] = (48, 64, 128),
    seeds: int = 1,
    methods: tuple[str, ...] = METHODS,
    steps: int = 6000,
    intervention_steps: int = 2000,
    probe_steps: int = 2000,
    batch_size: int = 256,
    no_input: bool = False,
    n_train: int = 1_000_000,
    probes: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Onion representations: linear (unigram, bigram) vs onion interventions over GRU sizes (SPECS A).

    Args:
        cell: recurrent cell of the repeat model (gru as in the paper, or lstm).
        sizes: state sizes N to train (the paper: 48,64,128,256,512,1024).
        seeds: models per size (the paper: 5).
        methods: interventions to train: unigram, bigram (autosegment, as in the paper), das (unigram regime,
            fixed blocks of N/9 rotated coordinates per position), onion.
        steps: training steps of each repeat model (the paper: 40000); a checkpoint in the run folder with
            fewer steps is trained on, and 0 reuses the checkpoints as they are.
        intervention_steps: training steps of each intervention (the paper: 60000).
        probe_steps: training steps of each probe.
        batch_size: batch size of every training loop (the paper: 256).
        no_input: decoder reads [SOS, NOI, ...] instead of the previous tokens.
        n_train: distinct training sequences in the pool.
        probes: also fit linear, MLP and onion probes of the stored tokens.
        device: torch device (cpu, cuda).
        progress: show progress bars.
    """
    import torch

    from hooked.models.repeat import make_repeat_data, sample_unique

    started = time.perf_counter()
    torch.manual_seed(0)
    data = make_repeat_data(n_train=n_train, seed=0)
    valid9 = sample_unique(5000, min_len=9, max_len=9, generator=torch.Generator().manual_seed(1234))
    pool9 = sample_unique(200_000, min_len=9, max_len=9, exclude=valid9.keys(30), generator=torch.Generator().manual_seed(99))
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"repro onion: unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    settings = dict(cell=cell, methods=tuple(methods), steps=steps, intervention_steps=intervention_steps, probe_steps=probe_steps,
                    batch_size=batch_size, no_input=no_input, n_train=n_train, probes=probes)
    rows = []
    for size in sizes:
        for seed in range(seeds):
            rows.append(_run_one(run_dir, size, seed, data, valid9, pool9, device=device, progress=progress, **settings))

    table = _table(rows, sizes, probes)
    print(f"\nrepeat task, {cell.upper()}, {'no-input' if no_input else 'autoregressive'} decoder, {seeds} seed(s) per size")
    print(table["text"])
    _plot(run_dir, table, cell)
    verdict = _verdict(table)
    print("\n" + verdict)
    out = {"settings": settings, "sizes": list(sizes), "rows": rows, "table": table["cells"], "verdict": verdict,
           "seconds": time.perf_counter() - started}
    run_dir.json("onion.json", out)
    return out


def _run_one(run_dir: Any, size: int, seed: int, data: Any, valid9: Any, pool9: Any, *, cell: str, steps: int,
             methods: tuple[str, ...], intervention_steps: int, probe_steps: int, batch_size: int, no_input: bool,
             n_train: int, probes: bool, device: str, progress: bool) -> dict:
    """Train (or reload) one model, then its interventions and probes; one JSON per (size, seed),
    rewritten after every piece, from which finished pieces are reused."""
    import torch

    from hooked import checkpoint
    from hooked.io import read_json
    from hooked.models.repeat import RepeatModel, evaluate, train_repeat

    tag = f"{cell}-N{size}-seed{seed}"
    result_path = run_dir / f"{tag}.json"
    row: dict[str, Any] = {"cell": cell, "size": size, "seed": seed, "no_input": no_input, "batch_size": batch_size}
    if result_path.exists():
        row = read_json(result_path)
        print(f"{tag}: reusing what {result_path} holds")
    model_dir = run_dir / "models" / tag
    t0 = time.perf_counter()
    done, histories = 0, []
    if (model_dir / "config.json").exists():  # reuse a checkpoint; train on if it has fewer steps
        model = checkpoint.load(model_dir, device=device)
        meta = checkpoint.read_config(model_dir)["meta"]
        done, histories = int(meta.get("steps", 0)), list(meta.get("histories", []))
    else:
        torch.manual_seed(1000 * seed + size)
        model = RepeatModel(cell, size, no_input=no_input).to(device)
    if done < steps:
        history = train_repeat(model, data, steps=steps - done, batch_size=batch_size, seed=seed + done,
                               progress=f"{tag} model" if progress else False)
        histories.append({"from_step": done, **history})  # continued runs start a fresh AdamW state
        done = steps
        checkpoint.save(model, model_dir, meta={"steps": done, "histories": histories})
        row = {k: v for k, v in row.items() if k not in ("interventions", "intervention_details", "probes")}
    model.eval()
    if row.get("model_steps") != done:
        row["model_steps"] = done
        row["model_history"] = histories
        row["model_seconds"] = time.perf_counter() - t0
        row["model_valid_accuracy"] = evaluate(model, data.valid)
        row["model_valid9_accuracy"] = evaluate(model, valid9)
        run_dir.json(f"{tag}.json", row)
    print(f"{tag}: model exact match {row['model_valid_accuracy']:.3f} (length 9: {row['model_valid9_accuracy']:.3f})")

    row.setdefault("interventions", {})
    row.setdefault("intervention_details", {})
    for method in methods:
        if method in row["interventions"]:
            continue
        t0 = time.perf_counter()
        acc, details = _intervention(model, method, data, valid9, pool9, steps=intervention_steps, batch_size=batch_size,
                                     seed=seed, device=device, progress=f"{tag} {method}" if progress else False)
        details["seconds"] = time.perf_counter() - t0
        details["steps"] = intervention_steps
        row["interventions"][method] = acc
        row["intervention_details"][method] = details
        run_dir.json(f"{tag}.json", row)
        print(f"{tag}: {method} intervention accuracy {acc:.3f} ({intervention_steps} steps)")
    if probes and "probes" not in row:
        row["probes"] = _probes(model, data, steps=probe_steps, batch_size=batch_size, seed=seed, device=device,
                                progress=f"{tag} probes" if progress else False)
        row["probe_steps"] = probe_steps
        run_dir.json(f"{tag}.json", row)
        print(f"{tag}: probes " + ", ".join(f"{k} {v:.3f}" for k, v in row["probes"].items()))
    return row


def _intervention(model: Any, method: str, data: Any, valid9: Any, pool9: Any, *, steps: int, batch_size: int, seed: int,
                  device: str, progress: Any) -> tuple[float, dict]:
    from interventions.onion import OnionIntervention
    from interventions.repeat_glue import fixed_batches, repeat_loss, repeat_metric, sampler
    from interventions.subspace import DAS, Autosegment

    d = model.memory_size
    regime = "unigram" if method == "das" else method
    if method == "onion":
        iv = OnionIntervention(d, model.n_symbols, seed=seed)
        train_split, valid_split = data.train, data.valid
    elif method == "das":
        iv = DAS(d, 9, seed=seed)
        train_split, valid_split = pool9, valid9
    elif method in ("unigram", "bigram"):
        iv = Autosegment(d, 9 if method == "unigram" else 8, seed=seed)
        train_split, valid_split = pool9, valid9
    else:
        raise ValueError(f"unknown method {method!r}; expected some of {METHODS}")
    iv = iv.to(device)
    losses = iv.fit(model, "hook_memory", sampler(regime, train_split, model.n_symbols, batch_size), loss=repeat_loss,
                    steps=steps, seed=seed, progress=progress)
    acc = iv.evaluate(model, "hook_memory", fixed_batches(regime, valid_split, model.n_symbols), metric=repeat_metric)
    details: dict[str, Any] = {"loss_first": losses[0], "loss_last": losses[-1], "losses": losses}
    if method in ("unigram", "bigram"):
        details["variable_sizes"] = iv.variable_sizes()  # last entry: "rest"
    return acc, details


def _probes(model: Any, data: Any, *, steps: int, batch_size: int, seed: int, device: str, progress: Any) -> dict[str, float]:
    import torch

    from hooked.protocol import collect_activations
    from interventions.onion import OnionProbe
    from interventions.probes import SequenceProbe

    n_fit = min(len(data.train), 100_000)
    fit_split = type(data.train)(data.train.tokens[:n_fit], data.train.lengths[:n_fit])

    def acts(split: Any) -> torch.Tensor:
        batches = [(x.to(device), ln.to(device)) for x, ln in split.batches(4096)]
        return collect_activations(model, batches, "hook_memory")["hook_memory"]

    a_fit, a_valid = acts(fit_split), acts(data.valid)
    tok_fit, len_fit = fit_split.tokens.long(), fit_split.lengths.long()
    tok_valid, len_valid = data.valid.tokens.long(), data.valid.lengths.long()
    d, max_len = model.memory_size, data.max_len
    made = {
        "linear probe": SequenceProbe(d, model.n_symbols, max_len),
        "mlp probe": SequenceProbe(d, model.n_symbols, max_len, hidden=d),
        "onion probe": OnionProbe(d, model.n_symbols, max_len),
    }
    out = {}
    for name, probe in made.items():
        probe = probe.to(device)
        probe.fit(a_fit, tok_fit, len_fit, steps=steps, batch_size=batch_size, seed=seed,
                  progress=f"{progress} {name}" if progress else False)
        out[name] = probe.accuracy(a_valid, tok_valid, len_valid)
    return out


def _table(rows: list[dict], sizes: Any, probes: bool) -> dict:
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
                steps = [r["intervention_details"][col].get("steps", r.get("intervention_steps")) for r in have]
            else:
                have = [r for r in mine if "probes" in r]
                vals = [r["probes"][col] for r in have]
                steps = [r.get("probe_steps") for r in have]
            if vals:
                cells[str(size)][col] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals), "n": len(vals),
                                         "steps": sorted({s for s in steps if s is not None})}
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
        lines.append(f"{size:>6} | " + " | ".join(vals) + f" | {claim(size)}")
    lines.append("model = exact match of the trained model on held-out sequences (lengths 2-9); unigram, bigram = "
                 "autosegment, das = DAS with fixed blocks (unigram regime), onion = magnitude: intervention accuracy; "
                 "probes: read-out accuracy; (k) = training steps")
    return {"columns": columns, "cells": cells, "text": "\n".join(lines)}


def _verdict(table: dict) -> str:
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
            lines.append(f"  N={n}: claim 'linear fail, onion succeeds' -> {got}: {'agrees' if ok else 'does not agree'}")
        elif n >= 512:
            ok = lin >= 0.8
            lines.append(f"  N={n}: claim 'linear succeed' -> {got}: {'agrees' if ok else 'does not agree'}")
        else:
            lines.append(f"  N={n}: no claim -> {got}")
    return "\n".join(lines)


def _plot(run_dir: Any, table: dict, cell: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = table["cells"]
    sizes = [int(s) for s in cells]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    styles = {"model": ("k", "--"), "unigram": ("C0", "-"), "bigram": ("C1", "-"), "das": ("C4", "-"), "onion": ("C3", "-"),
              "linear probe": ("C0", ":"), "mlp probe": ("C2", ":"), "onion probe": ("C3", ":")}
    for col in table["columns"]:
        pts = [(s, cells[str(s)][col]) for s in sizes if col in cells[str(s)]]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1]["mean"] for p in pts]
        es = [p[1]["std"] for p in pts]
        color, ls = styles.get(col, (None, "-"))
        ax.errorbar(xs, ys, yerr=es, label=col if col != "model" else "model (no intervention)", color=color, linestyle=ls, marker="o", capsize=3)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{cell.upper()} state size N")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title("Repeat task: interventions at the final encoder state")
    ax.legend(fontsize=8, loc="best")
    run_dir.figure("onion.png", fig)
