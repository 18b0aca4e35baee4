"""Reading an activation store: as a Hugging Face ``datasets.Dataset`` or as a stream of torch batches.

Both memory-map the shard files (Arrow IPC streams): nothing is read into anonymous memory until a
batch is asked for, so a store larger than memory reads in constant memory. Both open a store the
same way (:func:`shards`): the manifest is checked field by field, every shard's size always and
its sha256 with ``verify=True``, and every shard's Arrow schema, row count and row ids against the
manifest, so that an edited manifest is refused by every reader alike.

Shuffled batches gather their rows with Arrow's ``take`` within each record batch the rows fall in.
A ``take`` over a whole table (``Table.take``) is not used: for these columns pyarrow first
concatenates every record batch of the column into memory (a copy of the whole store per batch).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hooked.store.manifest import StoreError, read_manifest, require, store_folder
from hooked.store.rows import Layout, schema


def open(store: str | os.PathLike, *, verify: bool = False) -> Any:
    """The store as a ``datasets.Dataset`` in torch format (memory-mapped), rows in ``row`` order.

    Columns: ``row``, ``sequence``, ``position`` (token rows only) and one per hook, named by the
    hook, whose rows have the hook's shape (``ds["blocks.0.hook_resid_pre"][:10]`` is a
    ``[10, d_model]`` tensor).

    Args:
        store: the store's folder (written by :func:`hooked.store.harvest`).
        verify: also check every shard's sha256 against the manifest (reads every byte once).
    """
    datasets = require("datasets")

    path, manifest, _ = shards(store_folder(store, "hooked.store.open"), verify=verify)
    if not manifest["shards"] or not manifest["rows"]:
        raise StoreError(f"{path} has no rows")
    parts = [datasets.Dataset.from_file(str(path / s["file"])) for s in manifest["shards"]]
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return ds.with_format("torch")


def store_path(store: Any) -> Path:
    """The folder of a store given as a path or as the ``Dataset`` that :func:`open` returned."""
    if isinstance(store, (str, os.PathLike)) and not isinstance(store, bytes):
        return store_folder(store, "hooked.store")
    files = getattr(store, "cache_files", None)
    if files and isinstance(files, list) and isinstance(files[0], dict) and "filename" in files[0]:
        return Path(files[0]["filename"]).parent
    raise TypeError(
        "expected an activation store's folder or the Dataset hooked.store.open gave, "
        f"got {type(store).__name__}"
    )


def manifest_of(store: Any) -> dict[str, Any]:
    """The checked manifest of a store given as a path or a ``Dataset`` from :func:`open`."""
    return read_manifest(store_path(store))


def shards(store: Any, *, verify: bool = False) -> tuple[Path, dict[str, Any], list[Any]]:
    """``(folder, manifest, tables)``: the store's shards as memory-mapped Arrow tables, each checked
    against the manifest (schema, rows, first and last row id); what every reader here opens."""
    pa = require("pyarrow")

    path = store_path(store)
    manifest = read_manifest(path, verify=verify)
    expected = schema(Layout.from_json(manifest))
    tables = []
    for record in manifest["shards"]:
        file = path / record["file"]
        try:
            table = pa.ipc.open_stream(pa.memory_map(str(file))).read_all()
        except (pa.ArrowException, OSError) as e:
            raise StoreError(f"shard {file} is not a readable Arrow stream: {e}") from None
        if not table.schema.equals(expected):
            raise StoreError(
                f"shard {file} holds columns {_describe(table.schema)}, but the manifest describes "
                f"{_describe(expected)} (the manifest or the shard was edited)"
            )
        first, rows = record["first_row"], record["rows"]
        ids = table.column("row")
        ends = (ids[0].as_py(), ids[-1].as_py()) if rows and table.num_rows else None
        if table.num_rows != rows or (rows and ends != (first, first + rows - 1)):
            raise StoreError(
                f"shard {file} holds {table.num_rows} rows, the manifest says {rows} rows with ids "
                f"{first}..{first + rows - 1} (the manifest or the shard was edited)"
            )
        tables.append(table)
    return path, manifest, tables


def _describe(schema: Any) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def iter_batches(
    store: Any,
    batch_size: int = 1024,
    *,
    columns: str | Sequence[str] | None = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    verify: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """Batches of rows as ``{column: tensor}``, shuffled by index, in constant memory.

    Args:
        store: the store's folder, or the ``Dataset`` :func:`open` returned.
        batch_size: rows per batch.
        columns: which columns (a name or a list of names; default: all); a hook's tensor is
            ``[batch, *hook shape]``.
        shuffle: rows in a random order (a permutation of the row indices, drawn from ``seed``;
            only the rows of the current batch are read), else in row order.
        drop_last: leave out a last batch with fewer than ``batch_size`` rows.
        verify: check the shards' sha256 first.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"iter_batches: batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"iter_batches: seed must be an integer, got {seed!r}")
    for flag, value in (("shuffle", shuffle), ("drop_last", drop_last), ("verify", verify)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"iter_batches: {flag} must be True or False, got {value!r}")
    path, manifest, tables = shards(store, verify=verify)
    names = _columns(columns, manifest, path)
    return _batches(tables, names, manifest, int(batch_size), shuffle, int(seed), drop_last)


def _columns(columns: Any, manifest: dict[str, Any], path: Path) -> list[str]:
    if columns is None:
        return list(manifest["columns"])
    names = [columns] if isinstance(columns, str) else columns
    if not isinstance(names, Sequence) or not all(isinstance(c, str) for c in names):
        raise TypeError(
            f"iter_batches: columns must be a column name or a list of names, got {columns!r:.80}"
        )
    if not names:
        raise ValueError("iter_batches: columns is empty; give at least one column (or None for all)")
    if len(set(names)) != len(names):
        raise ValueError(f"iter_batches: columns are named twice in {list(names)}")
    unknown = [c for c in names if c not in manifest["columns"]]
    if unknown:
        raise StoreError(
            f"{path} has no column {unknown[0]!r}; its columns: {', '.join(manifest['columns'])}"
        )
    return list(names)


def _batches(
    tables: list[Any],
    names: list[str],
    manifest: dict[str, Any],
    batch_size: int,
    shuffle: bool,
    seed: int,
    drop_last: bool,
) -> Iterator[dict[str, Tensor]]:
    rows = _Rows(tables, names, manifest)
    n = manifest["rows"]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy() if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        got = rows.slice(start, end) if order is None else rows.take(order[start:end])
        yield {c: torch.from_numpy(v) for c, v in got.items()}


class _Rows:
    """The asked columns of every shard's record batches (memory-mapped) and where each batch starts."""

    def __init__(self, tables: list[Any], names: list[str], manifest: dict[str, Any]):
        self.pa = require("pyarrow")
        self.batches = [b for t in tables for b in t.select(names).to_batches() if b.num_rows]
        self.starts = np.cumsum([0] + [b.num_rows for b in self.batches])
        hooks = manifest["hooks"]
        self.shapes = {c: tuple(hooks[c]["shape"]) if c in hooks else () for c in names}
        self.dtypes = {c: np.dtype(hooks[c]["dtype"]) if c in hooks else np.dtype(np.int64) for c in names}

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        return {c: np.empty((n, *s), dtype=self.dtypes[c]) for c, s in self.shapes.items()}

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Rows ``index`` (any order) as fresh arrays: the rows grouped by record batch with one sort,
        Arrow's ``take`` in every record batch they fall in, then put back in the asked order."""
        which = np.searchsorted(self.starts, index, side="right") - 1
        order = np.argsort(which, kind="stable")
        which = which[order]
        local = self.pa.array(index[order] - self.starts[which])
        cuts = np.r_[0, np.flatnonzero(which[1:] != which[:-1]) + 1, len(order)]
        taken = self.pa.Table.from_batches(
            [self.batches[which[lo]].take(local.slice(lo, hi - lo)) for lo, hi in zip(cuts[:-1], cuts[1:])]
        )
        out = self._empty(len(index))
        for i, (c, col) in enumerate(out.items()):
            col[order] = self._values(taken.column(i).combine_chunks(), self.shapes[c])
        return out

    def slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``start`` to ``stop`` as fresh arrays (copied from the record batches they span)."""
        out = self._empty(stop - start)
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        at = start
        for b in range(first, len(self.batches)):
            if at >= stop:
                break
            lo, hi = at - self.starts[b], min(stop, self.starts[b + 1]) - self.starts[b]
            part = self.batches[b].slice(lo, hi - lo)
            for i, (c, col) in enumerate(out.items()):
                col[at - start : at - start + hi - lo] = self._values(part.column(i), self.shapes[c])
            at = self.starts[b] + hi
        return out

    def _values(self, array: Any, shape: tuple[int, ...]) -> np.ndarray:
        """An Arrow column of (nested fixed-size list) rows as numpy ``[rows, *shape]``: a view where
        it can be one (numbers without nulls), else a copy (booleans are stored as bits)."""
        rows = len(array)
        while self.pa.types.is_fixed_size_list(array.type):
            array = array.flatten()
        return array.to_numpy(zero_copy_only=False).reshape(rows, *shape)
