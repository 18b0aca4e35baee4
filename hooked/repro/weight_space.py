"""``hooked repro weight-space``: Herrmann, Faccio & Schmidhuber (2024), *Learning Useful
Representations of Recurrent Neural Network Weight Matrices* (SPECS B), at CPU scale.

Builds the two model zoos (formal-language generators, rotated-digit classifiers; every run of
a zoo trained at once), trains the six encoders of RNN weights on the emulation objective over
each zoo's training split, embeds every member, and predicts the exact task, the training
snapshot and the return from the frozen embeddings on in-distribution and out-of-distribution
splits. Prints the table encoder x downstream task beside the paper's claim, writes JSON and a
plot into the run folder, and the zoos themselves (``zoo-<kind>/``, reusable with ``--zoo-dir``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from hooked.registry import register_repro

CLAIM = ("on predicting the exact task, probing (functionalist) encoders clearly beat the mechanistic ones; "
         "interactive probing is best on formal languages")
KINDS = {"languages": "formal-languages", "digits": "digits"}


@register_repro("weight-space")
def weight_space(
    run_dir,
    *,
    zoos: list[str] = ["languages", "digits"],  # noqa: B006 - read-only default
    runs: int = 96,
    zoo_steps: int = 400,
    max_n: int = 4,
    encoders: list[str] = ["flat", "stats", "transformer", "dws", "noninteractive", "interactive"],  # noqa: B006
    encoder_steps: int = 1000,
    size: Literal["small", "paper"] = "small",
    members: int = 16,
    seqs: int = 4,
    lr: float = 1e-3,
    min_return: float = 0.5,
    ood_train_fraction: float = 0.5,
    zoo_dir: str = "",
    controls: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Encoders of RNN weights on two LSTM model zoos: which predicts the exact task best?

    Args:
        zoos: which zoos: languages (zoo 1), digits (zoo 2).
        runs: training runs per zoo (tasks); each run gives 9 snapshots (paper: 1000s of runs).
        zoo_steps: training steps per run (paper: 20000); snapshots at the paper's fractions.
        max_n: largest n of the formal-language strings (paper: 9; sequences get longer).
        encoders: which encoders: flat, stats, transformer, dws, noninteractive, interactive.
        encoder_steps: emulation training steps per encoder (paper: 100000).
        size: encoder / emulator sizes: small (CPU) or paper (SPECS B).
        members: zoo members per emulation batch (paper: 64).
        seqs: stored sequences per member and batch (paper: 1).
        lr: AdamW learning rate of the emulation training (paper: 1e-4 over 100k steps).
        min_return: members below this return are left out of the exact-task target.
        ood_train_fraction: share of OOD tasks the downstream predictors may train on (authors' code: 0.5).
        zoo_dir: reuse zoos from an earlier run folder (its zoo-<kind>/ subfolders) instead of training.
        controls: also score each encoder untrained (random weights), to see what training added.
        seed: seed of the zoos, encoders and splits.
        progress: show progress bars.
    """
    import torch

    from analyses.weight_space import downstream_splits, evaluate, task_splits
    from hooked.models.weight_encoders import (FUNCTIONALIST, MECHANISTIC, SIZES, build_encoder, embed_zoo,
                                               emulation_error, train_emulation)
    from hooked.models.zoo import Zoo, build_zoo

    unknown = [z for z in zoos if z not in KINDS] + [e for e in encoders if e not in (*MECHANISTIC, *FUNCTIONALIST)]
    if unknown:
        raise ValueError(f"weight-space: unknown zoo/encoder {unknown}; zoos: {list(KINDS)}, "
                         f"encoders: {[*MECHANISTIC, *FUNCTIONALIST]}")
    results: dict = {"claim": CLAIM, "zoos": {}}
    for zoo_name in zoos:
        kind = KINDS[zoo_name]
        started = time.perf_counter()
        folder = Path(run_dir) / f"zoo-{zoo_name}"
        if zoo_dir:
            zoo = Zoo.load(Path(zoo_dir) / f"zoo-{zoo_name}")
            print(f"[{zoo_name}] loaded {zoo}")
        else:
            zoo = build_zoo(kind, runs=runs, steps=zoo_steps, batch_size=16 if kind == "formal-languages" else 32,
                            max_n=max_n, n_return=200, n_store=16, seed=seed, progress=f"zoo {zoo_name}" if progress else False)
            print(f"[{zoo_name}] trained {zoo} in {time.perf_counter() - started:.0f} s "
                  f"({zoo.meta['model_steps_per_second']:.0f} model-steps/s)")
        zoo.save(folder)
        splits = task_splits(zoo, seed=seed)
        train_zoo = zoo.subset(splits["train"])
        probe_steps = 22 if kind == "formal-languages" else zoo.sequences.shape[2] + 1
        probe_input = "softmax" if kind == "formal-languages" else "sigmoid"
        probe_range = (0.0, 1.0) if kind == "formal-languages" else (float(zoo.sequences.min()), float(zoo.sequences.max()))
        embeddings, per_encoder = {}, {}
        for name in encoders:
            torch.manual_seed(seed)
            enc = build_encoder(name, zoo.layout, size=size, probe_steps=probe_steps, probe_input=probe_input,
                                probe_range=probe_range)
            train_kw = dict(lr=lr, clip=1.0) if size == "small" else dict(lr=lr, clip=0.1)
            run = train_emulation(enc, train_zoo, steps=encoder_steps, members=members, seqs=seqs, seed=seed,
                                  progress=f"{zoo_name}: {name}" if progress else False, **SIZES[size]["emulator"], **train_kw)
            embeddings[name] = embed_zoo(enc, zoo)
            if controls:  # the same architecture and initialisation, never trained
                torch.manual_seed(seed)
                embeddings[f"{name} (untrained)"] = embed_zoo(build_encoder(
                    name, zoo.layout, size=size, probe_steps=probe_steps, probe_input=probe_input, probe_range=probe_range), zoo)
            per_encoder[name] = {
                "family": enc.family,
                "parameters": sum(p.numel() for p in enc.parameters()),
                "train_seconds": run.seconds,
                "loss_curve": run.losses,
                "emulation_tv": {s: emulation_error(enc, run.emulator, zoo.subset(splits[s])) for s in ("train", "val", "ood")},
            }
            tv = per_encoder[name]["emulation_tv"]
            print(f"[{zoo_name}] {name:<15} trained in {run.seconds:5.0f} s; emulation TV train {tv['train']:.3f} "
                  f"val {tv['val']:.3f} ood {tv['ood']:.3f}")
        down = downstream_splits(zoo, splits, ood_train_fraction=ood_train_fraction, seed=seed)
        scores = evaluate(embeddings, zoo, down, min_return=min_return)
        block = {
            "zoo": repr(zoo), "kind": kind, "splits": {k: len(v) for k, v in splits.items()},
            "zoo_meta": zoo.meta, "returns_by_step": _returns_by_step(zoo), "encoders": per_encoder,
            "downstream": scores, "verdict": verdict(scores, kind, encoders), "seconds": time.perf_counter() - started,
        }
        results["zoos"][zoo_name] = block
        print(format_table(zoo_name, block))
        run_dir.json("weight_space.json", results)
    run_dir.figure("weight_space.png", plot(results))
    return results


def _returns_by_step(zoo) -> dict:
    steps = zoo.steps
    return {int(s): float(zoo.returns[steps == s].mean()) for s in steps.unique()}


def verdict(scores: dict, kind: str, encoders: list[str]) -> dict:
    """Does the exact-task table show the paper's claim? Per split, with the numbers compared."""
    from hooked.models.weight_encoders import FUNCTIONALIST, MECHANISTIC

    out = {}
    table = scores["task"]
    for split in ("id", "ood"):
        probing = {e: table[e][split] for e in encoders if e in FUNCTIONALIST and split in table[e]}
        mech = {e: table[e][split] for e in encoders if e in MECHANISTIC and split in table[e]}
        if not probing or not mech:
            continue
        best_mech = max(mech.values())
        entry = {
            "best_probing": max(probing, key=probing.get), "best_probing_score": max(probing.values()),
            "best_mechanistic": max(mech, key=mech.get), "best_mechanistic_score": best_mech,
            "every_probing_beats_every_mechanistic": min(probing.values()) > best_mech,
            "best_probing_beats_best_mechanistic": max(probing.values()) > best_mech,
            "chance": table["chance"].get(split),
            "any_above_chance": max(*probing.values(), best_mech) > table["chance"].get(split, 0.0),
        }
        if kind == "formal-languages" and "interactive" in probing:
            others = [v for e, v in {**probing, **mech}.items() if e != "interactive"]
            entry["interactive_is_best"] = probing["interactive"] > max(others, default=float("-inf"))
        out[split] = entry
    return out


def format_table(zoo_name: str, block: dict) -> str:
    d = block["downstream"]
    n = d["n_used"]
    lines = [
        "",
        f"== {zoo_name}: {block['zoo']}",
        f"   splits (members): encoder training {block['splits']['train']}, downstream train {n['step']['train']}, "
        f"ID {n['step']['id']}, OOD {n['step']['ood']}; exact task uses members with return >= min_return "
        f"({n['task']['train']} / {n['task']['id']} / {n['task']['ood']})",
        f"{'encoder':<26} {'family':<13} {'emul TV':>8} | {'task ID':>7} {'task OOD':>8} | {'step ID':>7} {'step OOD':>8} | "
        f"{'ret R2 ID':>9} {'ret R2 OOD':>10}",
    ]

    def num(v, w):
        return f"{v:>{w}.3f}" if isinstance(v, float) else f"{'-':>{w}}"

    heads = any("id_heads" in v for v in d["task"].values())
    if heads:
        lines[-1] += f" | {'offsets ID':>10} {'offsets OOD':>11}"
    for name in [*block["encoders"], *[n for n in d["task"] if n.endswith("(untrained)")], "chance"]:
        info = block["encoders"].get(name, {})
        fam = info.get("family", "")
        tv = info.get("emulation_tv", {}).get("val")
        task = d["task"][name]
        line = (
            f"{name:<26} {fam:<13} {num(tv, 8)} | {num(task.get('id'), 7)} {num(task.get('ood'), 8)} | "
            f"{num(d['step'][name].get('id'), 7)} {num(d['step'][name].get('ood'), 8)} | "
            f"{num(d['return'][name].get('id'), 9)} {num(d['return'][name].get('ood'), 10)}"
        )
        if heads:
            line += f" | {num(task.get('id_heads'), 10)} {num(task.get('ood_heads'), 11)}"
        lines.append(line)
    lines.append("(emul TV: total variation of the emulation on validation members; task: exact-task accuracy"
                 + ("; offsets: mean accuracy per offset d2, d3, d4" if heads else "") + "; step: snapshot accuracy; "
                 "ret R2: R² of the return)")
    lines.append(f"paper's claim: {CLAIM}")
    for split, v in block["verdict"].items():
        found = (f"best probing {v['best_probing']} {v['best_probing_score']:.3f} vs best mechanistic "
                 f"{v['best_mechanistic']} {v['best_mechanistic_score']:.3f}: "
                 + ("every probing encoder beats every mechanistic one" if v["every_probing_beats_every_mechanistic"]
                    else "the best probing encoder beats the best mechanistic one" if v["best_probing_beats_best_mechanistic"]
                    else "probing does NOT beat mechanistic"))
        if "interactive_is_best" in v:
            found += "; interactive is " + ("the best" if v["interactive_is_best"] else "NOT the best")
        if not v["any_above_chance"]:
            found += f" (no encoder above chance {v['chance']:.3f}: the claim is not testable at this scale)"
        lines.append(f"  found (exact task, {split.upper()}): {found}")
    return "\n".join(lines)


def plot(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    zoos = list(results["zoos"])
    panels = [("task", "", "exact task (accuracy)"), ("task", "_heads", "each offset d2, d3, d4 (accuracy)"),
              ("step", "", "training snapshot (accuracy)"), ("return", "", "return (R²)")]
    fig, axes = plt.subplots(len(zoos), len(panels), figsize=(5.5 * len(panels), 4 * len(zoos)), squeeze=False)
    for i, z in enumerate(zoos):
        block = results["zoos"][z]
        table_task = block["downstream"]["task"]
        trained = list(block["encoders"])
        names = trained + [n for n in table_task if n.endswith("(untrained)")] + ["chance"]
        for j, (target, suffix, title) in enumerate(panels):
            ax = axes[i][j]
            table = block["downstream"][target]
            if not any(f"id{suffix}" in table[n] for n in names):
                ax.axis("off")
                continue
            x = np.arange(len(names))
            for k, split in enumerate(("id", "ood")):
                vals = [table[n].get(split + suffix, np.nan) for n in names]
                bars = ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=split.upper(), color=f"C{k}")
                for bar, n in zip(bars, names):  # untrained controls and chance drawn lighter
                    if n not in trained:
                        bar.set_alpha(0.4)
            ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{z}: {title}", fontsize=10)
            if target == "return":
                ax.set_ylim(bottom=max(-1.0, ax.get_ylim()[0]))
            ax.axhline(0, color="k", lw=0.5)
            if j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
