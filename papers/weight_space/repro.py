"""``hooked repro weight-space``: Herrmann, Faccio & Schmidhuber (2024), *Learning Useful
Representations of Recurrent Neural Network Weight Matrices* (``docs/methods/weight-space.md``), at CPU scale.

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

from hooked import distributed
from papers.weight_space.report import CLAIM, format_table, plot, verdict

KINDS = {"languages": "formal-languages", "digits": "digits"}


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
        size: encoder / emulator sizes: small (CPU) or paper (``docs/methods/weight-space.md``).
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

    from papers.weight_space.encoders import (
        FUNCTIONALIST,
        MECHANISTIC,
        SIZES,
        build_encoder,
        embed_zoo,
        emulation_error,
        train_emulation,
    )
    from papers.weight_space.evaluation import downstream_splits, evaluate, task_splits
    from papers.weight_space.zoo import Zoo, build_zoo

    unknown = [z for z in zoos if z not in KINDS] + [
        e for e in encoders if e not in (*MECHANISTIC, *FUNCTIONALIST)
    ]
    if unknown:
        raise ValueError(
            f"weight-space: unknown zoo/encoder {unknown}; zoos: {list(KINDS)}, "
            f"encoders: {[*MECHANISTIC, *FUNCTIONALIST]}"
        )
    run_dir = distributed.shared_run_dir(run_dir)
    progress = progress and distributed.is_main()

    def one_zoo(zoo_name: str) -> dict:
        """Build (or load) one zoo, train and score every encoder on it."""
        kind = KINDS[zoo_name]
        started = time.perf_counter()
        folder = Path(run_dir) / f"zoo-{zoo_name}"
        if zoo_dir:
            zoo = Zoo.load(Path(zoo_dir) / f"zoo-{zoo_name}")
            print(f"[{zoo_name}] loaded {zoo}")
        else:
            zoo = build_zoo(
                kind,
                runs=runs,
                steps=zoo_steps,
                batch_size=16 if kind == "formal-languages" else 32,
                max_n=max_n,
                n_return=200,
                n_store=16,
                seed=seed,
                progress=f"zoo {zoo_name}" if progress else False,
            )
            print(
                f"[{zoo_name}] trained {zoo} in {time.perf_counter() - started:.0f} s "
                f"({zoo.meta['model_steps_per_second']:.0f} model-steps/s)"
            )
        zoo.save(folder)
        splits = task_splits(zoo, seed=seed)
        train_zoo = zoo.subset(splits["train"])
        probe_steps = 22 if kind == "formal-languages" else zoo.sequences.shape[2] + 1
        probe_input = "softmax" if kind == "formal-languages" else "sigmoid"
        probe_range = (
            (0.0, 1.0)
            if kind == "formal-languages"
            else (float(zoo.sequences.min()), float(zoo.sequences.max()))
        )
        embeddings, per_encoder = {}, {}
        for name in encoders:
            torch.manual_seed(seed)
            enc = build_encoder(
                name,
                zoo.layout,
                size=size,
                probe_steps=probe_steps,
                probe_input=probe_input,
                probe_range=probe_range,
            )
            train_kw = dict(lr=lr, clip=1.0) if size == "small" else dict(lr=lr, clip=0.1)
            run = train_emulation(
                enc,
                train_zoo,
                steps=encoder_steps,
                members=members,
                seqs=seqs,
                seed=seed,
                progress=f"{zoo_name}: {name}" if progress else False,
                **SIZES[size]["emulator"],
                **train_kw,
            )
            embeddings[name] = embed_zoo(enc, zoo)
            if controls:  # the same architecture and initialisation, never trained
                torch.manual_seed(seed)
                embeddings[f"{name} (untrained)"] = embed_zoo(
                    build_encoder(
                        name,
                        zoo.layout,
                        size=size,
                        probe_steps=probe_steps,
                        probe_input=probe_input,
                        probe_range=probe_range,
                    ),
                    zoo,
                )
            per_encoder[name] = {
                "family": enc.family,
                "parameters": sum(p.numel() for p in enc.parameters()),
                "train_seconds": run.seconds,
                "loss_curve": run.losses,
                "emulation_tv": {
                    s: emulation_error(enc, run.emulator, zoo.subset(splits[s]))
                    for s in ("train", "val", "ood")
                },
            }
            tv = per_encoder[name]["emulation_tv"]
            print(
                f"[{zoo_name}] {name:<15} trained in {run.seconds:5.0f} s; "
                f"emulation TV train {tv['train']:.3f} val {tv['val']:.3f} ood {tv['ood']:.3f}"
            )
        down = downstream_splits(zoo, splits, ood_train_fraction=ood_train_fraction, seed=seed)
        scores = evaluate(embeddings, zoo, down, min_return=min_return)
        block = {
            "zoo": repr(zoo),
            "kind": kind,
            "splits": {k: len(v) for k, v in splits.items()},
            "zoo_meta": zoo.meta,
            "returns_by_step": _returns_by_step(zoo),
            "encoders": per_encoder,
            "downstream": scores,
            "verdict": verdict(scores, kind, encoders),
            "seconds": time.perf_counter() - started,
        }
        return block

    # the zoos are independent: under torchrun each rank builds its share (hooked.distributed.sweep)
    blocks = distributed.sweep(one_zoo, zoos, seed=seed, gather="all")
    results: dict = {"claim": CLAIM, "zoos": dict(zip(zoos, blocks))}
    if distributed.is_main():
        for zoo_name, block in results["zoos"].items():
            print(format_table(zoo_name, block))
        run_dir.json("weight_space.json", results)
        run_dir.figure("weight_space.png", plot(results))
    return results


def _returns_by_step(zoo) -> dict:
    steps = zoo.steps
    return {int(s): float(zoo.returns[steps == s].mean()) for s in steps.unique()}
