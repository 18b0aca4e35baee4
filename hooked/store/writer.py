"""Writing an activation store: :func:`harvest` runs a hooked model over batches and streams the
activations at chosen hooks to Arrow shards on disk.

:func:`harvest` is three steps, one function each: :func:`_plan` (check the arguments, probe the
model for the store's layout, settle the settings, and find what the output folder holds: nothing
yet, an interrupted run to resume, a finished store, or something to refuse), :func:`_write_shards`
(stream every batch, hash every input, and write this rank's unfinished shards) and :func:`_finish`
(every rank agrees, then rank 0 writes the manifest and renames the folder).

How a run is laid out, so that it can be killed at any point and resumed:

* everything is written under ``OUT.partial/``; the store appears under its final name ``OUT`` only
  when it is complete (the folder is renamed after ``manifest.json`` was written into it), so
  ``OUT`` is never half-written; one harvest at a time holds ``OUT.partial/.lock`` (``filelock``);
* the batches are cut into shards of ``batches_per_shard`` consecutive batches (from ``shard_mb``
  and the first batch's size); shard ``s`` is written by rank ``s % world_size`` to a temporary
  file, which is renamed to ``shard-SSSSS.arrow`` when complete, and then a record of it (rows,
  batches, bytes, sha256, and a sha256 of every byte of the inputs it came from) is written
  atomically to ``progress/``;
* ``settings.json`` holds what the store depends on (model fingerprint, hooks, row layout,
  dtype, row limit, shard plan, the first batch's inputs); other settings are refused with the
  differences listed. A second run with the same settings reads and hashes every batch again: a
  shard with a record is not written again, but its inputs must hash as recorded; a finished store
  is returned only if all of its inputs hash as its manifest records, and as many of them; so a
  changed, added or missing batch anywhere is refused, naming the shard and its batches;
* after every rank is done, the ranks compare what they read (each shard's input hash), and rank 0
  writes ``manifest.json`` and renames the folder.

Each rank reads every batch (to count rows: row ids are a running count over all ranks' rows) but
runs the model only on its own shards' batches; a world-N store has the same rows as a world-1
store. Rows are streamed: only one record batch (``record_mb``) and one batch's activations are
in memory at a time. A run that fails (an error in the data or the model, a full disk, an
interrupt) stops its writer thread, closes and deletes its temporary file and releases the lock
before the error reaches the caller, so the same call can be made again at once to resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooked import distributed
from hooked.io import read_json, write_json
from hooked.protocol import (
    Batch,
    cache_batch,
    check_hook,
    check_hookable,
    hook_point,
    model_device,
    to_device,
)
from hooked.store.manifest import (
    FORMAT,
    MANIFEST,
    StoreError,
    check_shard,
    different_settings,
    model_fingerprint,
    read_manifest,
    require,
    store_folder,
)
from hooked.store.rows import (
    ID_COLUMNS,
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
LOCK = ".lock"


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
        out: the store's folder; it must not exist, or be a finished store made with the same
            settings from the same batches (then nothing is written: every batch is read and
            hashed to check that), or be resumed from ``OUT.partial``.
        rows: stop after this many rows (the last batch is cut); default: all batches.
        dtype: storage dtype of floating activations (float16, float32, float64); default: the
            activations' own (bfloat16 becomes float32: Arrow has no bfloat16). Finite values
            beyond the dtype's range (65504 for float16) are refused, not stored as ``inf``.
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
    plan = _plan(
        model,
        batches,
        hooks,
        out,
        rows=rows,
        dtype=dtype,
        sequence=sequence,
        shard_mb=shard_mb,
        record_mb=record_mb,
        model_name=model_name,
        progress=progress,
    )
    try:
        try:
            written: _Written | Exception = _write_shards(model, plan)
        except Exception as e:  # with other ranks, they learn of it in _finish (none is left waiting)
            if plan.world == 1:
                raise
            written = e
        _finish(plan, written)
    finally:
        plan.release()
    return plan.out


# ---------------------------------------------------------------------- 1. planning
@dataclass
class _Plan:
    """What a harvest does: its settings and layout, and what the output folder holds."""

    out: Path
    partial: Path
    names: list[str]
    layout: Layout
    settings: dict[str, Any]
    fingerprint: dict[str, Any]
    batches: Iterator[Batch]
    total: int | None  # how many batches, when the iterable says
    rows: int | None
    batches_per_shard: int
    record_mb: float
    device: torch.device
    progress: bool
    rank: int
    world: int
    state: str = "go"  # "go": write what is missing; "done": a finished store, only check its inputs
    done: dict[int, dict[str, Any]] = field(default_factory=dict)  # shard -> its record
    lock: Any = None  # rank 0's hold on OUT.partial/.lock while it writes
    started: float = field(default_factory=time.perf_counter)

    def release(self) -> None:
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.release()

    def mine(self, shard: int) -> bool:
        return shard % self.world == self.rank


def _plan(
    model: Any,
    batches: Iterable[Batch],
    hooks: str | Sequence[str],
    out: str | os.PathLike,
    *,
    rows: int | None,
    dtype: str | torch.dtype | None,
    sequence: bool | None,
    shard_mb: float,
    record_mb: float,
    model_name: str | None,
    progress: bool,
) -> _Plan:
    """Check the arguments, probe the model on the first batch for the store's layout, and decide,
    with every rank, what to do with the output folder (rank 0 holds its lock when this returns)."""
    check_hookable(model)
    names = _hook_names(model, hooks)
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1):
        raise ValueError(f"harvest: rows must be a positive integer (or None), got {rows!r}")
    for what, value in (("shard_mb", shard_mb), ("record_mb", record_mb)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"harvest: {what} must be a positive finite number, got {value!r}")
    for what, value in (("sequence", sequence), ("progress", progress)):
        if not (isinstance(value, bool) or (value is None and what == "sequence")):
            raise TypeError(f"harvest: {what} must be True or False{' (or None)' * (what == 'sequence')}")
    if model_name is not None and not isinstance(model_name, str):
        raise TypeError(f"harvest: model_name must be a string (or None), got {model_name!r}")
    if isinstance(batches, (torch.Tensor, str, bytes)) or not isinstance(batches, Iterable):
        raise TypeError(
            "harvest: batches must be an iterable of batches (a list, a generator, x.split(64), ...), "
            f"got {type(batches).__name__}"
        )
    want_dtype = _store_dtype(dtype)
    out = store_folder(out, "harvest", "out")
    partial = out.with_name(out.name + ".partial")
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
            "rows": None if rows is None else int(rows),
            "batches_per_shard": batches_per_shard,
            "first_inputs_sha256": batch_digest(first),
        }
    )
    _same_on_every_rank(out, settings, rank, world)
    plan = _Plan(
        out=out,
        partial=partial,
        names=names,
        layout=layout,
        settings=settings,
        fingerprint=fingerprint,
        batches=chain([first], it),
        total=len(batches) if isinstance(batches, Sized) else None,
        rows=None if rows is None else int(rows),
        batches_per_shard=batches_per_shard,
        record_mb=float(record_mb),
        device=device,
        progress=progress and rank == 0,
        rank=rank,
        world=world,
    )
    outcome = _claim(plan) if rank == 0 else None
    try:
        claimed = distributed.broadcast(outcome)
        assert claimed is not None  # rank 0's claim
        state, detail = claimed
        if state == "error":
            raise StoreError(detail)
        plan.state = state
        if state == "done":
            plan.done = dict(enumerate(read_manifest(out)["shards"]))
        else:
            plan.done = _finished_shards(partial)
    except BaseException:
        plan.release()
        raise
    return plan


def _hook_names(model: Any, hooks: Any) -> list[str]:
    names = [hooks] if isinstance(hooks, str) else hooks
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"harvest: hooks must be a hook name or a list of hook names, got {hooks!r:.80}")
    names = list(names)
    if not names:
        raise ValueError("harvest: give at least one hook name")
    points: dict[int, str] = {}
    for name in names:
        check_hook(model, name)
        if name in ID_COLUMNS:
            raise ValueError(f"harvest: a hook named {name!r} would clash with the store's id column")
        other = points.setdefault(id(hook_point(model, name)), name)
        if other != name:
            raise ValueError(
                f"harvest: hooks {other!r} and {name!r} are two names of one hook point; give one of them"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"harvest: hooks are named twice in {names}")
    return names


def _same_on_every_rank(out: Path, settings: dict[str, Any], rank: int, world: int) -> None:
    """Every rank was given the same output folder and computed the same settings (or all refuse)."""
    if world == 1:
        return
    seen = distributed.all_gather((str(out.resolve()), settings))
    folders = sorted({f for f, _ in seen})
    if len(folders) > 1:
        listed = ", ".join(f"rank {r}: {f}" for r, (f, _) in enumerate(seen))
        raise StoreError(f"the ranks were given different output folders ({listed}); give each the same")
    for r, (_, theirs) in enumerate(seen):
        diff = different_settings(seen[0][1], theirs)
        if diff:
            raise StoreError(
                f"rank {r} computed other settings than rank 0 (a different model or data?): "
                + "; ".join(diff)
            )


def _claim(plan: _Plan) -> tuple[str, str | None]:
    """Rank 0: find what the output folder holds and set up ``OUT.partial`` to write into, holding
    its lock (``plan.lock``) when the answer is ``go``. Returns ``(state, message)``."""
    out, partial, settings = plan.out, plan.partial, plan.settings
    if out.exists():
        return _finished(out, settings)
    try:
        partial.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return "error", f"cannot create the folder {partial}: {e.strerror or e}"
    filelock = require("filelock")
    lock = filelock.FileLock(partial / LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return "error", f"another harvest is writing {partial} right now; wait for it, or use another folder"
    except OSError as e:
        return "error", f"cannot lock {partial / LOCK}: {e.strerror or e}"
    plan.lock = lock
    try:
        if out.exists():  # another harvest finished it while this one waited for the folder
            plan.release()
            return _finished(out, settings)
        if (partial / MANIFEST).is_file():  # killed while finishing: only tidying and the rename are left
            manifest = read_manifest(partial)
            diff = different_settings(manifest["settings"], settings)
            if diff:
                plan.release()
                return "error", _refusal(partial, diff, finished=False)
            _tidy_and_rename(partial, out, manifest)
            plan.release()
            return _finished(out, settings)
        if (partial / SETTINGS).is_file():
            diff = different_settings(read_json(partial / SETTINGS), settings)
            if diff:
                plan.release()
                return "error", _refusal(partial, diff, finished=False)
        else:
            write_json(partial / SETTINGS, settings)
        for stale in partial.glob(".shard-*.tmp"):
            stale.unlink()
        (partial / PROGRESS).mkdir(exist_ok=True)
    except (StoreError, ValueError, OSError) as e:  # answered to every rank, none is left waiting
        plan.release()
        return "error", f"cannot resume or set up {partial}: {e}" if isinstance(e, OSError) else str(e)
    except BaseException:
        plan.release()
        raise
    return "go", None


def _finished(out: Path, settings: dict[str, Any]) -> tuple[str, str | None]:
    if not (out / MANIFEST).is_file():
        return "error", f"{out} exists and is not an activation store; choose another output folder"
    try:
        manifest = read_manifest(out)
    except StoreError as e:
        return "error", str(e)
    diff = different_settings(manifest["settings"], settings)
    if diff:
        return "error", _refusal(out, diff, finished=True)
    return "done", None


def _refusal(where: Path, diff: list[str], finished: bool) -> str:
    what = "a finished store" if finished else "an interrupted harvest"
    fix = "choose another output folder" if finished else f"harvest into another folder, or delete {where}"
    return (
        f"{where} holds {what} made with other settings, so it is not resumed; {fix}. Differences "
        "(theirs -> this run's):\n  " + "\n  ".join(diff)
    )


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


# ---------------------------------------------------------------------- 2. writing this rank's shards
@dataclass
class _Written:
    """What :func:`_write_shards` read: rows, samples and batches, and each shard's input sha256."""

    rows: int
    sequences: int
    batches: int
    inputs: list[str]


def _write_shards(model: Any, plan: _Plan) -> _Written:
    """Read every batch, hash its inputs into its shard's sha256, and write this rank's shards that
    are not finished yet; a shard finished before (a record, or a finished store's manifest) must
    hash as recorded. Whatever fails, the writer thread is stopped and its file closed and deleted."""
    bps = plan.batches_per_shard
    bar = _progress_bar(plan.total, plan.progress)
    writer: _ShardWriter | None = None
    inputs: list[str] = []
    h = hashlib.sha256()
    n_rows = n_seqs = n_batches = 0
    try:
        for i, batch in enumerate(plan.batches):
            if plan.rows is not None and n_rows >= plan.rows:
                break
            shard = i // bps
            record = plan.done.get(shard)
            if (plan.state == "done" and record is None) or i - shard * bps >= _batches_of(record, bps):
                raise StoreError(_more_batches(plan, i))
            if i % bps == 0:
                h = hashlib.sha256()
                if plan.state == "go" and plan.mine(shard) and shard not in plan.done:
                    writer = _ShardWriter(plan.partial, shard, plan.layout, n_rows, n_seqs, plan.record_mb)
            hash_batch(h, batch)
            batch_rows, batch_samples = count_rows(batch, plan.layout.sequence)
            take = batch_rows if plan.rows is None else min(batch_rows, plan.rows - n_rows)
            if writer is not None:
                writer.add(model, plan.names, batch, take, n_seqs, plan.device)
            n_rows += take
            if take == batch_rows:
                n_seqs += batch_samples
            else:
                n_seqs += samples_taken(batch, plan.layout.sequence, take)
            n_batches = i + 1
            if n_batches % bps == 0 or (plan.rows is not None and n_rows >= plan.rows):
                inputs.append(_shard_done(plan, shard, h, writer, n_batches, n_seqs))
                writer = None
            if bar is not None:
                bar.update(1)
                bar.set_postfix(rows=n_rows, refresh=False)
        if n_batches % bps and len(inputs) * bps < n_batches:  # the last shard, shorter than the rest
            inputs.append(_shard_done(plan, len(inputs), h, writer, n_batches, n_seqs))
            writer = None
        _check_batch_count(plan, len(inputs), n_batches)
    finally:
        if writer is not None:
            writer.abort()
        if bar is not None:
            bar.close()
    return _Written(n_rows, n_seqs, n_batches, inputs)


def _shard_done(
    plan: _Plan, shard: int, h: Any, writer: _ShardWriter | None, n_batches: int, n_seqs: int
) -> str:
    """A shard's last batch was read: check its inputs against its record, or finish writing it."""
    digest = h.hexdigest()
    first = shard * plan.batches_per_shard
    record = plan.done.get(shard)
    where = plan.out if plan.state == "done" else plan.partial
    if record is not None and n_batches - first < _batches_of(record, plan.batches_per_shard):
        raise StoreError(
            f"the data has fewer batches ({n_batches}) than {where} was made from "
            f"({first + _batches_of(record, plan.batches_per_shard)}): the data changed{_fix(plan)}"
        )
    if record is not None and record["inputs_sha256"] != digest:
        span = f"batch {first}" if n_batches - first == 1 else f"batches {first} to {n_batches - 1}"
        raise StoreError(
            f"the inputs of shard {shard} differ from those {where} was made from ({span}, counted from "
            f"0): the data changed{_fix(plan)}"
        )
    if writer is not None:
        writer.close(n_seqs, digest, n_batches - first)
    return digest


def _batches_of(record: dict[str, Any] | None, batches_per_shard: int) -> int:
    """How many batches a finished shard was made from (records before 0.1 did not say: a full shard)."""
    if record is None:
        return batches_per_shard
    return record.get("batches", batches_per_shard)


def _more_batches(plan: _Plan, i: int) -> str:
    where = plan.out if plan.state == "done" else plan.partial
    return (
        f"the data has more batches than {where} was made from ({i}; batch {i}, counted from 0, is "
        f"new): the data changed{_fix(plan)}"
    )


def _check_batch_count(plan: _Plan, n_shards: int, n_batches: int) -> None:
    """No shard of the store (or of the interrupted run) lies past the end of this run's data."""
    beyond = sorted(s for s in plan.done if s >= n_shards)
    if beyond:
        where = plan.out if plan.state == "done" else plan.partial
        raise StoreError(
            f"the data has fewer batches ({n_batches}) than {where} was made from (its shard {beyond[0]} "
            f"starts at batch {beyond[0] * plan.batches_per_shard}): the data changed{_fix(plan)}"
        )


def _fix(plan: _Plan) -> str:
    if plan.state == "done":
        return "; harvest the new data into another folder"
    return f"; harvest it into another folder, or delete {plan.partial} to start again"


class _HashingFile:
    """A write-only file that keeps a sha256 and a byte count of what went through it.

    Writes go straight to the file descriptor (``os.write``, every byte or an ``OSError`` such as a
    full disk). A large write (a record batch's column) is hashed by a second thread while this one
    writes it (``hashlib`` and file writes release the GIL), so hashing adds little to a
    write-bound store."""

    def __init__(self, path: Path):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(path, flags, 0o666)
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.closed = False
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="store-sha256")

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if view.nbytes >= _HASH_ASIDE_BYTES:
            hashed = self._hasher.submit(self.sha256.update, view)
            try:
                self._write_all(view)
            finally:
                hashed.result()
        else:
            self.sha256.update(view)
            self._write_all(view)
        self.bytes += view.nbytes
        return view.nbytes

    def _write_all(self, view: memoryview) -> None:
        while view.nbytes:
            view = view[os.write(self.fd, view) :]

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._hasher.shutdown()
        os.close(self.fd)


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
        try:
            self.stream = pa.ipc.new_stream(self.sink, schema(layout))
        except BaseException:
            self.sink.close()
            self.tmp.unlink(missing_ok=True)
            raise
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_rows = 0
        self.rows = 0
        self.record_rows = max(1, int(record_mb * 2**20 // layout.row_bytes()))
        # Record batches are assembled, hashed and written by a thread while the model runs the
        # next batch; the queue holds at most one waiting record batch (memory stays bounded).
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._drain, name=f"store-{self.name}", daemon=True)
        self.thread.start()

    def add(
        self, model: Any, names: list[str], batch: Batch, take: int, first_sequence: int, device: torch.device
    ) -> None:
        """Run the model on ``batch`` and queue its first ``take`` rows."""
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
            if self.error is not None or self.stopping:
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

    def _stop(self) -> None:
        """The writer thread ends (after the record batch it may be writing)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def close(self, next_sequence: int, inputs_sha256: str, batches: int) -> dict[str, Any]:
        """Write what is left, rename the file into place and write the shard's record."""
        try:
            self._flush()
            self._stop()
            if self.error is not None:
                raise self.error
            self.stream.close()
            self.sink.close()
        except BaseException:
            self.abort()
            raise
        path = self.folder / self.name
        os.replace(self.tmp, path)
        record = {
            "file": self.name,
            "rows": self.rows,
            "first_row": self.first_row,
            "sequences": next_sequence - self.first_sequence,
            "first_sequence": self.first_sequence,
            "batches": batches,
            "bytes": self.sink.bytes,
            "sha256": self.sink.sha256.hexdigest(),
            "inputs_sha256": inputs_sha256,
        }
        write_json(self.folder / PROGRESS / f"{self.name}.json", record)
        return record

    def abort(self) -> None:
        """Stop the thread, close and delete the temporary file (a run that failed)."""
        self.stopping = True
        self.pending = []
        self._stop()
        try:
            self.stream.close()
        except BaseException:  # e.g. the disk is full: the file is deleted anyway
            pass
        self.sink.close()
        self.tmp.unlink(missing_ok=True)


def shard_file(shard: int) -> str:
    return f"shard-{shard:05d}.arrow"


# ---------------------------------------------------------------------- 3. finishing
def _finish(plan: _Plan, written: _Written | Exception) -> None:
    """Every rank: agree that every rank read the same data and none failed. Rank 0: write the
    manifest and rename the folder to its final name (for a finished store: nothing to write)."""
    mine = written if isinstance(written, _Written) else f"{type(written).__name__}: {written}"
    if plan.world > 1:
        everyone = distributed.all_gather(mine)
        failed = [(r, w) for r, w in enumerate(everyone) if isinstance(w, str)]
        if isinstance(written, Exception):
            raise written
        if failed:
            r, message = failed[0]
            raise StoreError(f"rank {r} failed, so the harvest stopped: {message}")
        for r, theirs in enumerate(everyone):
            assert isinstance(theirs, _Written)  # a failed rank was raised above
            if theirs.inputs != written.inputs:
                differ = next(
                    (s for s, (a, b) in enumerate(zip(written.inputs, theirs.inputs)) if a != b),
                    min(len(written.inputs), len(theirs.inputs)),
                )
                raise StoreError(
                    f"rank {r} read other data than rank {plan.rank} (from shard {differ}, batch "
                    f"{differ * plan.batches_per_shard} on); every rank must be given the same batches"
                )
    assert isinstance(written, _Written)  # an exception was raised above (in one process: by harvest)
    if plan.state == "done":
        if plan.progress:
            print(f"hooked harvest: {plan.out} is already finished with these settings", file=sys.stderr)
        return
    failure = None
    if plan.rank == 0:
        try:
            _write_manifest(plan, written)
        except Exception as e:
            failure = e
    message = distributed.broadcast(None if failure is None else f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    if message is not None:
        raise StoreError(f"rank 0 could not finish the store: {message}")


def _write_manifest(plan: _Plan, written: _Written) -> None:
    """Rank 0, after every rank is done: the manifest, then the rename to the final name."""
    partial = plan.partial
    shards = []
    for s, digest in enumerate(written.inputs):
        path = partial / PROGRESS / f"{shard_file(s)}.json"
        if not path.is_file():
            raise StoreError(
                f"shard {s} was not written (its rank stopped early?); run the harvest again to resume"
            )
        record = read_json(path)
        check_shard(partial / record["file"], record, verify=False)
        if record["inputs_sha256"] != digest:
            raise StoreError(f"shard {s} of {partial} was written from other inputs than this run read")
        shards.append(record)
    from hooked import __version__

    manifest = {
        "format": FORMAT,
        "model": {"name": plan.settings["model"], **plan.fingerprint},
        "hooks": plan.layout.to_json()["hooks"],
        "sequence": plan.layout.sequence,
        "columns": plan.layout.columns,
        "rows": written.rows,
        "sequences": written.sequences,
        "shards": shards,
        "settings": plan.settings,
        "world_size": plan.world,
        "seconds": time.perf_counter() - plan.started,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hooked_version": __version__,
    }
    write_json(partial / MANIFEST, manifest)
    _tidy_and_rename(partial, plan.out, read_manifest(partial))  # what was written reads back


def _tidy_and_rename(partial: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Remove what a finished store does not hold (records, settings, the lock, shard files the
    manifest does not list), then rename ``partial`` to ``out``."""
    shutil.rmtree(partial / PROGRESS, ignore_errors=True)
    listed = {s["file"] for s in manifest["shards"]} | {MANIFEST}
    for extra in partial.iterdir():
        if extra.name not in listed and (extra.name in (SETTINGS, LOCK) or "shard-" in extra.name):
            extra.unlink()
    try:
        os.rename(partial, out)
    except OSError as e:
        raise StoreError(f"could not rename {partial} to {out}: {e.strerror or e}") from None


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


def _progress_bar(total: int | None, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="harvest", unit="batch", leave=False, mininterval=1.0)
