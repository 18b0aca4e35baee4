"""``hooked sae``: train and evaluate dictionaries from the command line.

    hooked sae train --store DIR --hook H --kind topk --width 4096 --k 32 --steps N --out RUN
    torchrun --nproc_per_node=2 -m hooked sae train ...        (data parallel; rank 0 writes)
    hooked sae eval --model M --sae RUN [--data texts.txt] [--out DIR]
    hooked sae texts --split train|heldout --out FILE           (offline Wikipedia text, one per line)

``--hook``, ``--kind``, ``--width`` and ``--k`` take comma-separated lists: one dictionary is trained
for each combination, all in one pass over the store (each in ``RUN/NAME``). ``eval`` writes
``result.json`` (the summary of each dictionary) and ``features.json`` (per feature, the format
``hooked.sae.features/1``; with several dictionaries one per ``DIR/NAME/``).

The model options of ``eval`` (``--model-*``, ``--device``) are those of ``hooked run``; the
command line hands its model builder in (as for ``hooked harvest``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ACTIONS = ("train", "eval", "texts")


def sae_command(
    action: str | None,
    rest: list[str],
    *,
    show_help: bool,
    model_parser: Callable[..., tuple[argparse.ArgumentParser, Any]],
    build_model: Callable[[Any, argparse.Namespace], tuple[Any, Any]],
    find_model: Callable[[str], Any],
) -> int:
    """Run ``hooked sae ACTION`` with the arguments ``rest``; returns the exit code."""
    if action is None or action not in ACTIONS:
        assert __doc__ is not None  # this module has a docstring (it is the usage text)
        print(__doc__.strip().split("\n\n")[1] if action is None else "")
        if action is not None:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        return 0
    if action == "train":
        return _train(rest, show_help)
    if action == "texts":
        return _texts(rest, show_help)
    return _eval(rest, show_help, model_parser, build_model, find_model)


def _list(text: str, kind: Callable[[str], Any] = str) -> list[Any]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__} values, got {text!r}") from None


def _train(rest: list[str], show_help: bool) -> int:
    from hooked.sae.dictionary import KINDS

    p = argparse.ArgumentParser(
        prog="hooked sae train", description="train dictionaries on an activation store"
    )
    need = not show_help
    p.add_argument("--store", type=Path, required=need, help="the store's folder (hooked harvest --out)")
    p.add_argument(
        "--hook", type=_list, required=need, help="hook name(s) the dictionaries read (store columns)"
    )
    p.add_argument("--hook-out", help="train transcoders from --hook to this store column")
    p.add_argument("--kind", type=_list, default=["topk"], help=f"{', '.join(KINDS)} (default: topk)")
    p.add_argument("--width", type=lambda t: _list(t, int), required=need, help="features, e.g. 4096")
    p.add_argument(
        "--k", type=lambda t: _list(t, int), default=[None], help="active features per token (topk)"
    )
    p.add_argument("--l1", type=float, help="sparsity coefficient (standard: L1, jumprelu: L0)")
    p.add_argument("--steps", type=int, help="optimiser steps (default: one pass over the store)")
    p.add_argument("--batch-size", type=int, default=4096, help="tokens per step (default: 4096)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: 2e-4 / sqrt(width / 16384))")
    p.add_argument("--warmup", type=int, help="warm-up steps (default: min(1000, steps / 10))")
    p.add_argument("--decay", type=float, default=0.2, help="final fraction of steps the lr decays over")
    p.add_argument("--aux-k", type=int, help="auxiliary TopK loss: dead features used (default d_in / 2)")
    p.add_argument("--aux-coeff", type=float, default=1 / 32, help="auxiliary loss weight (default 1/32)")
    p.add_argument("--dead-tokens", type=int, default=1_000_000, help="tokens without firing: dead")
    p.add_argument("--b-dec-init", choices=["median", "mean", "zeros"], default="median")
    p.add_argument("--init", type=Path, help="start from this dictionary folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--out", type=Path, required=need, help="the run folder (resumes a run interrupted there)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a folder of another run")
    p.add_argument("--no-progress", action="store_true")
    if show_help:
        p.print_help()
        return 0
    opts = p.parse_args(rest)
    from hooked.sae.training import train

    combos = list(itertools.product(opts.hook, opts.kind, opts.width, opts.k))
    dictionaries = None
    if len(combos) > 1:
        dictionaries = [
            {"name": _name(h, kd, w, k), "hook": h, "kind": kd, "width": w, "k": k} for h, kd, w, k in combos
        ]
    hook, kind, width, k = combos[0]
    started = time.perf_counter()
    result = train(
        opts.store,
        hook,
        kind=kind,
        width=width,
        k=k,
        l1=opts.l1,
        steps=opts.steps,
        out=opts.out,
        hook_out=opts.hook_out,
        dictionaries=dictionaries,
        batch_size=opts.batch_size,
        lr=opts.lr,
        warmup=opts.warmup,
        decay=opts.decay,
        aux_k=opts.aux_k,
        aux_coeff=opts.aux_coeff,
        dead_tokens=opts.dead_tokens,
        b_dec_init=opts.b_dec_init,
        init=opts.init,
        seed=opts.seed,
        metrics_every=opts.metrics_every,
        checkpoint_every=opts.checkpoint_every,
        overwrite=opts.overwrite,
        progress=not opts.no_progress,
    )
    from hooked import distributed

    if distributed.is_main():
        names = sorted(result) if isinstance(result, dict) else ["sae"]
        print(
            f"{opts.out}: {len(names)} dictionar{'y' if len(names) == 1 else 'ies'} ({', '.join(names)}) in "
            f"{time.perf_counter() - started:.0f} s; metrics in {opts.out / 'metrics.jsonl'}",
            file=sys.stderr,
        )
    return 0


def _name(hook: str, kind: str, width: int, k: int | None) -> str:
    return f"{hook}-{kind}-w{width}" + (f"-k{k}" if k is not None else "")


def _texts(rest: list[str], show_help: bool) -> int:
    p = argparse.ArgumentParser(prog="hooked sae texts", description="offline Wikipedia text, one per line")
    p.add_argument("--split", choices=["train", "heldout"], default="train")
    p.add_argument("--n", type=int, help="at most this many texts")
    p.add_argument("--out", type=Path, required=not show_help, help="the text file to write")
    if show_help:
        p.print_help()
        return 0
    opts = p.parse_args(rest)
    from hooked.io import atomic_write_bytes
    from hooked.sae.texts import wiki_texts

    texts = wiki_texts(opts.split, opts.n)
    atomic_write_bytes(opts.out, ("\n".join(texts) + "\n").encode("utf-8"))
    print(f"{opts.out}: {len(texts)} texts ({opts.split})", file=sys.stderr)
    return 0


def _eval(
    rest: list[str],
    show_help: bool,
    model_parser: Callable[..., tuple[argparse.ArgumentParser, Any]],
    build_model: Callable[[Any, argparse.Namespace], tuple[Any, Any]],
    find_model: Callable[[str], Any],
) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    known, _ = pre.parse_known_args(rest)
    entry = find_model(known.model) if known.model else None
    p, _ = model_parser("hooked sae eval", entry, flag_prefix="model-")
    need = not show_help
    p.add_argument("--model", required=need, help="registered model, Hugging Face folder or .gguf file")
    p.add_argument("--sae", type=Path, required=need, help="a training run folder or a dictionary folder")
    p.add_argument(
        "--data", type=Path, help="held-out texts, one per line (default: Wikipedia's held-out part)"
    )
    p.add_argument("--texts", type=int, default=200, help="at most this many texts (default: 200)")
    p.add_argument("--hook", help="the hook the dictionary reads (default: the one it was trained on)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128, help="tokens per text at most (default: 128)")
    p.add_argument("--top-contexts", type=int, default=10, help="contexts kept per feature (default: 10)")
    p.add_argument("--out", type=Path, help="results folder (default: runs/sae-eval-TIME)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished evaluation in --out")
    p.add_argument("--no-progress", action="store_true")
    if show_help or entry is None:
        p.print_help()
        return 0
    opts = p.parse_args(rest)
    from hooked.io import RunDir

    run_dir = (
        RunDir.prepare(opts.out, finished="result.json", overwrite=opts.overwrite)
        if opts.out is not None
        else RunDir.create("runs", "sae-eval")
    )
    from hooked.sae.evaluation import evaluate, write_features, write_summary
    from hooked.sae.files import dictionary_folders, load

    folders = dictionary_folders(opts.sae)
    if not folders:
        raise ValueError(f"{opts.sae} holds no dictionaries")
    model, _ = build_model(entry, opts)
    texts = _read_texts(opts.data, opts.texts)
    summaries = {}
    for name, folder in folders.items():
        sae = load(folder, device=getattr(opts, "device", "cpu"))
        result = evaluate(
            model,
            sae,
            texts,
            hook=opts.hook,
            batch_size=opts.batch_size,
            max_length=opts.max_length,
            top_contexts=opts.top_contexts,
            model_name=known.model,
            progress=not opts.no_progress,
        )
        where = run_dir.path if len(folders) == 1 else run_dir.path / name
        write_features(result["features"], where / "features.json")
        summaries[name] = result["summary"]
        s = result["summary"]
        print(
            f"{name}: explained variance {s['explained_variance']:.3f}, L0 {s['l0']:.1f}, dead "
            f"{s['dead_fraction']:.1%}, dense {s['dense_fraction']:.1%}, loss recovered "
            f"{s['loss_recovered']:.3f} "
            f"(CE clean {s['ce_clean']:.3f}, spliced {s['ce_spliced']:.3f}, zero {s['ce_zero_ablation']:.3f})"
        )
    write_summary(
        {"model": known.model, "sae": str(opts.sae), "dictionaries": summaries}, run_dir / "result.json"
    )
    print(f"results written to {run_dir.path}/")
    return 0


def _read_texts(data: Path | None, n: int) -> list[str]:
    if data is None:
        from hooked.sae.texts import wiki_texts

        return wiki_texts("heldout", n)
    if not data.is_file():
        raise FileNotFoundError(f"no such file: {data}")
    texts = [line.strip() for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"--data {data} holds no text")
    return texts[:n]
