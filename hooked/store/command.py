"""``hooked harvest``: write a registered model's activations at hooks to an activation store.

    hooked harvest --model M --hooks H1,H2 [--data FILE] [--rows N] --out DIR
    torchrun --nproc_per_node=N -m hooked harvest ...      (each rank writes its share of the shards)

Inputs, in this order of preference:

* ``--data FILE.safetensors``: a tensor ``input_ids`` (and optionally ``attention_mask``; rows
  where it is 0 are not stored), or a single tensor of model inputs; cut into ``--batch-size`` rows;
* ``--data FILE.txt``: one text per line, tokenized with the model's tokenizer into padded batches
  (``hooked.lm.tokenize``), each text cut to at most ``--length`` tokens; padding gets no rows;
* no ``--data``: the model's own input sampler, if the registered model has one
  (``model.input_sampler(batch_size, generator) -> batch``, e.g. ``toy-relu``, ``tiny-llama``;
  ``--rows`` says how many rows), else its example batch.

The command line's model options (``--model-*``, ``--checkpoint``, ``--device``) are those of
``hooked run``; the command-line module hands its model builder in, so this module stays in the core.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from hooked import distributed, registry
from hooked.protocol import Batch


def harvest_command(
    rest: list[str],
    *,
    show_help: bool,
    debug: bool = False,
    model_parser: Callable[..., tuple[argparse.ArgumentParser, Any]],
    build_model: Callable[[registry.Entry, argparse.Namespace], tuple[Any, Any]],
    find_model: Callable[[str], registry.Entry] | None = None,
) -> int:
    """Parse ``hooked harvest`` options from ``rest``, build the model, harvest; returns the exit code.

    ``model_parser``, ``build_model`` and ``find_model`` (a registered name, or a model folder, to
    its entry) are the command line's own, so that models are named and built as everywhere else.
    """
    from hooked.store.writer import harvest

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    known, _ = pre.parse_known_args(rest)
    find = find_model or (lambda name: registry.get("model", name))
    entry = find(known.model) if known.model else None
    p, _ = model_parser("hooked harvest", entry, flag_prefix="model-")
    required = not show_help
    p.add_argument("--model", required=required, help="registered model name (see `hooked models`)")
    p.add_argument(
        "--hooks", required=required, help="hook names, comma-separated (see `hooked hooks MODEL`)"
    )
    p.add_argument(
        "--out", type=Path, required=required, help="the store's folder (must not exist, or resumes)"
    )
    p.add_argument("--data", type=Path, help="inputs: a .safetensors file of tensors or a .txt file of texts")
    p.add_argument("--rows", type=int, help="stop after this many store rows (tokens, or samples)")
    p.add_argument("--batch-size", type=int, default=64, help="input rows per forward (default: 64)")
    p.add_argument(
        "--length",
        type=int,
        default=64,
        help="at most this many tokens per text of a .txt file (default: 64)",
    )
    p.add_argument(
        "--dtype", choices=["float16", "float32", "float64"], help="storage dtype (default: the activations')"
    )
    p.add_argument("--per-sample", action="store_true", help="one row per sample, not per token")
    p.add_argument("--shard-mb", type=float, default=256.0, help="MiB per shard file (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's input sampler (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if show_help or entry is None:
        p.print_help()
        if entry is None:
            print("\nmodels: " + ", ".join(registry.entries("model")))
        return 0
    opts = p.parse_args(rest)
    for flag, value in (("--batch-size", opts.batch_size), ("--length", opts.length), ("--rows", opts.rows)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be a positive integer, got {value}")
    if not 0 < opts.shard_mb < float("inf"):
        raise ValueError(f"--shard-mb must be a positive number of MiB, got {opts.shard_mb}")
    distributed.init()  # first: under torchrun with GPUs, "cuda" is then each rank's own device
    model, example = build_model(entry, opts)
    hooks = [h.strip() for h in opts.hooks.split(",") if h.strip()]
    batches = command_batches(model, example, opts.data, opts.rows, opts.batch_size, opts.length, opts.seed)
    started = time.perf_counter()
    try:
        out = harvest(
            model,
            batches,
            hooks,
            opts.out,
            rows=opts.rows,
            dtype=opts.dtype,
            sequence=False if opts.per_sample else None,
            shard_mb=opts.shard_mb,
            model_name=entry.name,
            progress=not opts.no_progress,
        )
    except (FileNotFoundError, NotImplementedError):
        raise
    except (OSError, RuntimeError) as e:  # a full disk, an unwritable folder, a model that fails
        if debug:
            raise
        what = f"cannot write the store {opts.out}" if isinstance(e, OSError) else "the model failed"
        print(f"hooked harvest: error: {what}: {_one_line(e)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    if distributed.is_main():
        from hooked.store.manifest import read_manifest

        m = read_manifest(out)
        size = sum(s["bytes"] for s in m["shards"])
        seconds = time.perf_counter() - started
        print(
            f"{out}: {m['rows']} rows x {len(m['hooks'])} hooks, {len(m['shards'])} shards, "
            f"{size / 2**20:.1f} MiB in {seconds:.1f} s ({size / 2**20 / max(seconds, 1e-9):.0f} MiB/s)",
            file=sys.stderr,
        )
    return 0


def command_batches(
    model: Any, example: Batch, data: Path | None, rows: int | None, batch_size: int, length: int, seed: int
) -> Any:
    """The batches ``hooked harvest`` runs: from a file, the model's input sampler, or its example batch."""
    if data is not None:
        if data.suffix == ".safetensors":
            return tensor_file_batches(data, batch_size, vocabulary_size(model))
        if data.suffix == ".txt":
            return text_batches(model, data, batch_size, length)
        raise ValueError(f"--data {data}: expected a .safetensors file of inputs or a .txt file of texts")
    sampler = getattr(model, "input_sampler", None)
    if callable(sampler):
        if rows is None:
            raise ValueError(
                "the model's input sampler has no end: say how many rows to harvest with --rows N"
            )
        return sampled_batches(sampler, batch_size, seed)
    return _split(example, batch_size)


def sampled_batches(
    sampler: Callable[[int, torch.Generator], Batch], batch_size: int, seed: int
) -> Iterator[Batch]:
    """An endless stream of ``sampler(batch_size, generator)`` batches from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield sampler(batch_size, generator)


def tensor_file_batches(path: Path, batch_size: int, vocab: int | None = None) -> list[Batch]:
    """Batches of the tensors in a safetensors file: ``input_ids`` (+ ``attention_mask``) or one tensor.
    Token ids (``input_ids``, or one integer tensor when ``vocab`` is known) must be integers in
    ``0 .. vocab - 1``: checked here, before a forward fails deep in an embedding (or, on a GPU,
    with a device-side assert)."""
    from hooked.io import read_tensors

    tensors = read_tensors(path)
    if "input_ids" in tensors:
        keep = {k: v for k, v in tensors.items() if k in ("input_ids", "attention_mask")}
        if any(v.dim() < 1 for v in keep.values()):
            raise ValueError(f"--data {path}: input_ids and attention_mask need a batch axis")
        check_token_ids(keep["input_ids"], vocab, f"--data {path}: input_ids")
        n = keep["input_ids"].shape[0]
        if any(v.shape[0] != n for v in keep.values()):
            raise ValueError(f"--data {path}: input_ids and attention_mask have different numbers of rows")
        return [{k: v[i : i + batch_size] for k, v in keep.items()} for i in range(0, n, batch_size)]
    if len(tensors) != 1:
        raise ValueError(
            f"--data {path}: expected a tensor 'input_ids' or exactly one tensor, found {', '.join(tensors)}"
        )
    name, inputs = next(iter(tensors.items()))
    if inputs.dim() < 1:
        raise ValueError(f"--data {path}: the tensor {name!r} needs a batch axis, got a scalar")
    if vocab is not None and not inputs.is_floating_point():  # token ids for a model with an embedding
        check_token_ids(inputs, vocab, f"--data {path}: {name}")
    return _split(inputs, batch_size)


def check_token_ids(ids: torch.Tensor, vocab: int | None, what: str) -> None:
    """Integer token ids, each in ``0 .. vocab - 1`` (the first one outside is named)."""
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"{what} must be integer token ids, got {str(ids.dtype).removeprefix('torch.')}")
    bad = (ids < 0) if vocab is None else (ids < 0) | (ids >= vocab)
    if bad.any():
        at = tuple(int(i) for i in bad.nonzero()[0])
        allowed = "non-negative" if vocab is None else f"in 0..{vocab - 1} (the model's vocabulary)"
        raise ValueError(f"{what}: token ids must be {allowed}; found {int(ids[at])} at {list(at)}")


def vocabulary_size(model: Any) -> int | None:
    """How many token ids ``model`` embeds (its input embedding's rows, or a TransformerLens
    ``cfg.d_vocab``), or None for a model without token inputs."""
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            embedding = get()
        except (AttributeError, NotImplementedError, TypeError):
            embedding = None
        rows = getattr(embedding, "num_embeddings", None)
        if isinstance(rows, int):
            return rows
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    return d_vocab if isinstance(d_vocab, int) and d_vocab > 0 else None


TEXT_CHARS_PER_TOKEN = 8
TEXT_MARGIN_TOKENS = 16


def text_batches(model: Any, path: Path, batch_size: int, length: int) -> Iterator[Batch]:
    """Padded batches (``hooked.lm.tokenize``, right padding) of the texts in a file, one per line
    (empty lines skipped), each cut to its first ``length`` tokens; padding gets no rows.

    A line is cut before it is tokenized, so that a huge line costs little memory: to its first
    ``8 * (length + 16)`` characters, a prefix tokenized alone to check that it gives at least
    ``length + 16`` tokens (else the prefix is doubled, up to the whole line). The first ``length``
    tokens of the prefix are then those of the whole line, for any tokenizer whose tokens near the
    cut depend on the text only up to the 16 tokens before it (BPE and word-level tokenizers: a
    token depends on the word it is in). A line that is not UTF-8 is refused, naming the file and
    the line.
    """
    from hooked.io import check_regular
    from hooked.lm import tokenize

    check_regular(path)
    chunk: list[str] = []
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            if _NOT_UTF8.search(line):
                raise ValueError(f"--data {path}: line {number} is not UTF-8 text")
            line = line.rstrip("\n")
            if line.strip():
                chunk.append(_token_prefix(model, line, length, tokenize))
            if len(chunk) == batch_size:
                yield tokenize(model, chunk, padding_side="right", max_length=length)
                chunk = []
    if chunk:
        yield tokenize(model, chunk, padding_side="right", max_length=length)


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # the bytes the surrogateescape error handler let through


def _token_prefix(model: Any, line: str, length: int, tokenize: Callable[..., Any]) -> str:
    """The shortest prefix of ``line`` (``8 * (length + 16)`` characters, doubled) that tokenizes to
    at least ``length + 16`` tokens, or the whole line (see :func:`text_batches`)."""
    enough = length + TEXT_MARGIN_TOKENS
    chars = TEXT_CHARS_PER_TOKEN * enough
    while chars < len(line):
        prefix = line[:chars]
        if int(tokenize(model, [prefix], max_length=enough)["attention_mask"].sum()) >= enough:
            return prefix
        chars *= 2
    return line


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__


def _split(batch: Batch, batch_size: int) -> list[Batch]:
    if isinstance(batch, torch.Tensor):
        return list(batch.split(batch_size))
    if isinstance(batch, list):
        return batch
    return [batch]
