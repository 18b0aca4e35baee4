"""Writing an activation store: :func:`harvest` runs a hooked model over batches and streams the
activations at chosen hooks to Arrow shards on disk.

How a run is laid out, so that it can be killed at any point and resumed:

* everything is written under ``OUT.partial/``; the store appears under its final name ``OUT`` only
  when it is complete (the folder is renamed after ``manifest.json`` was written into it), so
  ``OUT`` is never half-written;
* the batches are cut into shards of ``batches_per_shard`` consecutive batches (from ``shard_mb``
  and the first batch's size); shard ``s`` is written by rank ``s % world_size`` to a temporary
  file, which is renamed to ``shard-SSSSS.arrow`` when complete, and then a record of it (rows,
  bytes, sha256, and a sha256 of the inputs it came from) is written atomically to ``progress/``;
* ``settings.json`` holds what the store depends on (model fingerprint, hooks, row layout,
  dtype, row limit, shard plan, the first batch's inputs); a second run with the same settings
  skips every shard that has a record, checks that its inputs hash the same, and redoes only
  unfinished shards; other settings are refused with the differences listed;
* after every rank is done (a barrier), rank 0 writes ``manifest.json`` and renames the folder.

Each rank reads every batch (to count rows: row ids are a running count over all ranks' rows) but
runs the model only on its own shards' batches; a world-N store has the same rows as a world-1
store. Rows are streamed: only one record batch (``record_mb``) and one batch's activations are
in memory at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooked import distributed
from hooked.io import read_json, write_json
from hooked.protocol import Batch, cache_batch, check_hook, check_hookable, model_device, to_device
from hooked.store.manifest import (
    FORMAT,
    MANIFEST,
    StoreError,
    check_shard,
    different_settings,
    model_fingerprint,
    read_manifest,
    require,
)
from hooked.store.rows import (
    STORE_DTYPES,
    Layout,
    batch_columns,
    batch_digest,
    count_rows,
    guess_sequence,
    hash_batch,
    layout_of,
    main_input,
    record_batch,
    samples_taken,
    schema,
)

SETTINGS = "settings.json"
PROGRESS = "progress"


def harvest(
    model: Any,
    batches: Iterable[Batch],
    hooks: str | Sequence[str],
    out: str | os.PathLike,
    *,
    rows: int | None = None,
    dtype: str | torch.dtype | None = None,
    sequence: bool | None = None,
    shard_mb: float = 256.0,
    record_mb: float = 4.0,
    model_name: str | None = None,
    progress: bool = True,
) -> Path:
    """Run ``model`` over ``batches`` and write the activations at ``hooks`` to the store ``out``.

    Args:
        model: any hooked model (``HookedModule``, ``hooked.wrap``, a TransformerLens bridge).
        batches: an iterable of batches (tensors, tuples of arguments or dicts of keyword
            arguments, e.g. ``{"input_ids": ..., "attention_mask": ...}``; positions where the
            attention mask is 0 get no row). Read once, in order; the same on every rank.
        hooks: the hook names whose activations are stored (one column each, named by the hook).
        out: the store's folder; it must not exist, or be a finished store with the same settings
            (then nothing is done), or be resumed from ``OUT.partial``.
        rows: stop after this many rows (the last batch is cut); default: all batches.
        dtype: storage dtype of floating activations (float16, float32, float64); default: the
            activations' own (bfloat16 becomes float32: Arrow has no bfloat16).
        sequence: one row per token (activations ``[batch, pos, ...]``) or per sample (``[batch,
            ...]``); default: per token when the main input is integer ``[batch, pos]`` token ids.
        shard_mb: about how many MiB of rows go into one shard file (whole batches per shard).
        record_mb: rows are written in Arrow record batches of at least this many MiB (smaller
            batches are joined; larger ones written as they are).
        model_name: the model's name in the manifest (default: its class name).
        progress: a progress bar (on rank 0).
    Returns:
        the store's path; read it with :func:`hooked.store.open` or :func:`hooked.store.iter_batches`.
    """
    check_hookable(model)
    names = [hooks] if isinstance(hooks, str) else list(hooks)
    if not names:
        raise ValueError("harvest: give at least one hook name")
    for name in names:
        check_hook(model, name)
        if name in ("row", "sequence", "position"):
            raise ValueError(f"harvest: a hook named {name!r} would clash with the store's id column")
    if len(set(names)) != len(names):
        raise ValueError(f"harvest: hooks are named twice in {names}")
    if rows is not None and rows < 1:
        raise ValueError(f"harvest: rows must be a positive number, got {rows}")
    if shard_mb <= 0 or record_mb <= 0:
        raise ValueError("harvest: shard_mb and record_mb must be positive")
    want_dtype = _store_dtype(dtype)
    out = Path(out)
    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()

    it = iter(batches)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("harvest: no batches were given") from None
    if sequence is None:
        sequence = guess_sequence(first)
    device = model_device(model)
    with torch.no_grad():
        probe = _head(first, 2)
        _, cache = cache_batch(model, to_device(probe, device), names)
    layout = layout_of({n: cache[n] for n in names}, probe, sequence, want_dtype)
    del cache
    first_rows, _ = count_rows(first, sequence)
    per_batch = max(1, first_rows) * layout.row_bytes()
    batches_per_shard = max(1, int(shard_mb * 2**20 // per_batch))
    fingerprint = model_fingerprint(model)
    settings = _jsonable(
        {
            "format": FORMAT,
            "model": model_name or type(model).__name__,
            "model_fingerprint": fingerprint["sha256"],
            "hooks": names,
            "layout": layout.to_json(),
            "dtype": None if want_dtype is None else str(want_dtype).removeprefix("torch."),
            "rows": rows,
            "batches_per_shard": batches_per_shard,
            "first_inputs_sha256": batch_digest(first),
        }
    )
    partial = out.with_name(out.name + ".partial")

    outcome, lock = _prepare(out, partial, settings) if rank == 0 else (None, None)
    outcome = distributed.broadcast(outcome)
    if outcome[0] == "error":
        raise StoreError(outcome[1])
    if outcome[0] == "done":
        if rank == 0 and progress:
            print(f"hooked harvest: {out} is already finished with these settings", file=sys.stderr)
        return out
    if world > 1 and read_json(partial / SETTINGS) != settings:
        raise StoreError(f"rank {rank} computed other settings than rank 0 (a different model or data?)")
    done = _finished_shards(partial)

    started = time.perf_counter()
    bar = _progress_bar(batches, progress and rank == 0)
    writer: _ShardWriter | None = None
    checking: tuple[int, Any] | None = None
    n_rows = n_seqs = n_shards = 0
    for i, batch in enumerate(chain([first], it)):
        if rows is not None and n_rows >= rows:
            break
        shard = i // batches_per_shard
        n_shards = shard + 1
        batch_rows, batch_samples = count_rows(batch, sequence)
        take = batch_rows if rows is None else min(batch_rows, rows - n_rows)
        if shard % world == rank:
            if shard in done:
                if checking is None or checking[0] != shard:
                    checking = (shard, hashlib.sha256())
                hash_batch(checking[1], batch)
            else:
                if writer is None or writer.shard != shard:
                    writer = _ShardWriter(partial, shard, layout, n_rows, n_seqs, record_mb)
                writer.add(model, names, batch, take, n_seqs, device)
        n_rows += take
        n_seqs += batch_samples if take == batch_rows else samples_taken(batch, sequence, take)
        last_of_shard = (i + 1) % batches_per_shard == 0
        if last_of_shard or (rows is not None and n_rows >= rows):
            writer = _close(writer, n_seqs)
            checking = _check_inputs(checking, done)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(rows=n_rows, refresh=False)
    writer = _close(writer, n_seqs)
    _check_inputs(checking, done)
    if bar is not None:
        bar.close()

    distributed.barrier()
    if rank == 0:
        _finish(out, partial, settings, fingerprint, layout, n_shards, n_rows, n_seqs, world, started)
        lock.close()
    distributed.barrier()
    return out


# ---------------------------------------------------------------------- shards
class _HashingFile:
    """A write-only file that keeps a sha256 and a byte count of what went through it.

    A large write (a record batch's column) is hashed by a second thread while this one writes it
    (``hashlib`` and file writes release the GIL), so hashing adds little to a write-bound store."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.closed = False
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="store-sha256")

    def write(self, data: Any) -> int:
        if memoryview(data).nbytes >= _HASH_ASIDE_BYTES:
            hashed = self._hasher.submit(self.sha256.update, data)
            try:
                n = self.file.write(data)
            finally:
                hashed.result()
        else:
            self.sha256.update(data)
            n = self.file.write(data)
        self.bytes += n
        return n

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self._hasher.shutdown()
        self.file.close()
        self.closed = True


# writes at least this large are hashed on the second thread (smaller ones cost more to hand over)
_HASH_ASIDE_BYTES = 1 << 20


class _ShardWriter:
    """One shard being written: a temporary Arrow stream file, renamed into place when complete."""

    def __init__(
        self, folder: Path, shard: int, layout: Layout, first_row: int, first_sequence: int, record_mb: float
    ):
        pa = require("pyarrow")

        self.folder, self.shard, self.layout = folder, shard, layout
        self.first_row, self.first_sequence = first_row, first_sequence
        self.name = shard_file(shard)
        self.tmp = folder / f".{self.name}.{os.getpid()}.tmp"
        self.sink = _HashingFile(self.tmp)
        self.stream = pa.ipc.new_stream(self.sink, schema(layout))
        self.inputs = hashlib.sha256()
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_rows = 0
        self.rows = 0
        self.record_rows = max(1, int(record_mb * 2**20 // layout.row_bytes()))
        # Record batches are assembled, hashed and written by a thread while the model runs the
        # next batch; the queue holds at most one waiting record batch (memory stays bounded).
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, name=f"store-{self.name}", daemon=True)
        self.thread.start()

    def add(
        self, model: Any, names: list[str], batch: Batch, take: int, first_sequence: int, device: torch.device
    ) -> None:
        """Run the model on ``batch`` and queue its first ``take`` rows."""
        hash_batch(self.inputs, batch)
        with torch.no_grad():
            _, cache = cache_batch(model, to_device(batch, device), names)
        acts = {n: cache[n] for n in names}
        del cache
        for n, act in acts.items():
            lead = 2 if self.layout.sequence else 1
            if tuple(act.shape[lead:]) != self.layout.shapes[n]:
                raise StoreError(
                    f"hook {n!r} gave rows of shape {tuple(act.shape[lead:])} in a later batch, "
                    f"but {self.layout.shapes[n]} in the first one; a store needs one shape per hook"
                )
        cols = batch_columns(acts, batch, self.layout, self.first_row + self.rows, first_sequence, take)
        self.pending.append(cols)
        self.pending_rows += take
        self.rows += take
        if self.pending_rows >= self.record_rows:
            self._flush()

    def _flush(self) -> None:
        if self.error is not None:
            raise self.error
        if self.pending:
            self.queue.put(self.pending)  # waits while the writer thread is a record batch behind
        self.pending, self.pending_rows = [], 0

    def _drain(self) -> None:
        while (parts := self.queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                cols = (
                    {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                    if len(parts) > 1
                    else parts[0]
                )
                self.stream.write_batch(record_batch(cols, self.layout))
            except BaseException as e:  # handed to the main thread at its next flush or close
                self.error = e

    def close(self, next_sequence: int) -> dict[str, Any]:
        self._flush()
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        self.stream.close()
        self.sink.close()
        path = self.folder / self.name
        os.replace(self.tmp, path)
        record = {
            "file": self.name,
            "rows": self.rows,
            "first_row": self.first_row,
            "sequences": next_sequence - self.first_sequence,
            "first_sequence": self.first_sequence,
            "bytes": self.sink.bytes,
            "sha256": self.sha256,
            "inputs_sha256": self.inputs.hexdigest(),
        }
        write_json(self.folder / PROGRESS / f"{self.name}.json", record)
        return record

    @property
    def sha256(self) -> str:
        return self.sink.sha256.hexdigest()


def shard_file(shard: int) -> str:
    return f"shard-{shard:05d}.arrow"


def _close(writer: _ShardWriter | None, n_seqs: int) -> None:
    if writer is not None:
        writer.close(n_seqs)
    return None


def _check_inputs(checking: tuple[int, Any] | None, done: dict[int, dict]) -> None:
    if checking is None:
        return None
    shard, h = checking
    if h.hexdigest() != done[shard]["inputs_sha256"]:
        raise StoreError(
            f"the inputs of shard {shard} differ from those it was written from; the data changed since "
            "the interrupted run (harvest into a new folder, or delete the .partial folder)"
        )
    return None


def _finished_shards(partial: Path) -> dict[int, dict]:
    """The shards of an interrupted run that are complete: a record and a file of the recorded size."""
    done = {}
    for path in sorted((partial / PROGRESS).glob("shard-*.arrow.json")):
        try:
            record = read_json(path)
            check_shard(partial / record["file"], record, verify=False)
        except (ValueError, KeyError, TypeError):
            continue
        done[int(record["file"][6:11])] = record
    return done


# ---------------------------------------------------------------------- the run's folder
def _prepare(out: Path, partial: Path, settings: dict) -> tuple[tuple[str, str | None], Any]:
    """Rank 0: decide whether to start, resume, refuse, or find the store finished; set up ``partial``."""
    if out.exists():
        if not (out / MANIFEST).is_file():
            return (
                "error",
                f"{out} exists and is not an activation store; choose another output folder",
            ), None
        try:
            manifest = read_manifest(out)
        except StoreError as e:
            return ("error", str(e)), None
        diff = different_settings(manifest["settings"], settings)
        if diff:
            return ("error", _refusal(out, diff, finished=True)), None
        return ("done", None), None
    partial.mkdir(parents=True, exist_ok=True)
    lock = open(partial / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return ("error", f"another harvest is writing {partial} right now"), None
    if (partial / SETTINGS).is_file():
        old = read_json(partial / SETTINGS)
        diff = different_settings(old, settings)
        if diff:
            lock.close()
            return ("error", _refusal(partial, diff, finished=False)), None
        if (partial / MANIFEST).is_file():  # killed while finishing: only the rename is left
            read_manifest(partial)
            os.rename(partial, out)
            (out / ".lock").unlink(missing_ok=True)
            (out / SETTINGS).unlink(missing_ok=True)
            lock.close()
            return ("done", None), None
    else:
        write_json(partial / SETTINGS, settings)
    for stale in partial.glob(".shard-*.tmp"):
        stale.unlink()
    (partial / PROGRESS).mkdir(exist_ok=True)
    return ("go", None), lock


def _refusal(where: Path, diff: list[str], finished: bool) -> str:
    what = "a finished store" if finished else "an interrupted harvest"
    fix = "choose another output folder" if finished else f"harvest into another folder, or delete {where}"
    return (
        f"{where} holds {what} made with other settings, so it is not resumed; {fix}. Differences "
        "(theirs -> this run's):\n  " + "\n  ".join(diff)
    )


def _finish(
    out: Path,
    partial: Path,
    settings: dict,
    fingerprint: dict,
    layout: Layout,
    n_shards: int,
    n_rows: int,
    n_seqs: int,
    world: int,
    started: float,
) -> None:
    """Rank 0, after every rank is done: the manifest, then the rename to the final name."""
    shards = []
    for s in range(n_shards):
        path = partial / PROGRESS / f"{shard_file(s)}.json"
        if not path.is_file():
            raise StoreError(
                f"shard {s} was not written (its rank stopped early?); run the harvest again to resume"
            )
        record = read_json(path)
        check_shard(partial / record["file"], record, verify=False)
        shards.append(record)
    from hooked import __version__

    manifest = {
        "format": FORMAT,
        "model": {"name": settings["model"], **fingerprint},
        "hooks": layout.to_json()["hooks"],
        "sequence": layout.sequence,
        "columns": layout.columns,
        "rows": n_rows,
        "sequences": n_seqs,
        "shards": shards,
        "settings": settings,
        "world_size": world,
        "seconds": time.perf_counter() - started,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hooked_version": __version__,
    }
    write_json(partial / MANIFEST, manifest)
    read_manifest(partial)  # what was written reads back
    shutil.rmtree(partial / PROGRESS)
    (partial / SETTINGS).unlink()
    (partial / ".lock").unlink(missing_ok=True)
    try:
        os.rename(partial, out)
    except OSError as e:
        raise StoreError(f"could not rename {partial} to {out}: {e}") from None


# ---------------------------------------------------------------------- helpers
def _store_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in STORE_DTYPES.values():
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in STORE_DTYPES:
        raise ValueError(f"harvest: dtype must be one of {', '.join(STORE_DTYPES)} (or None), got {dtype!r}")
    return STORE_DTYPES[name]


def _head(batch: Batch, n: int) -> Batch:
    """The first ``n`` samples of a batch (tensors sliced along the batch axis)."""
    size = main_input(batch).shape[0]

    def cut(v: Any) -> Any:
        return v[:n] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == size else v

    if isinstance(batch, dict):
        return {k: cut(v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(cut(v) for v in batch)
    return cut(batch)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _progress_bar(batches: Any, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    total = len(batches) if hasattr(batches, "__len__") else None
    return tqdm(total=total, desc="harvest", unit="batch", leave=False, mininterval=1.0)
