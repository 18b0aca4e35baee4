"""Reading an activation store: as a Hugging Face ``datasets.Dataset`` or as a stream of torch batches.

Both memory-map the shard files (Arrow IPC streams): nothing is read into anonymous memory until a
batch is asked for, so a store larger than memory reads in constant memory. The manifest is
checked first, every shard's size always and its sha256 with ``verify=True``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hooked.store.manifest import StoreError, read_manifest, require


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

    store = Path(store)
    manifest = read_manifest(store, verify=verify)
    if not manifest["shards"]:
        raise StoreError(f"{store} has no rows")
    parts = [datasets.Dataset.from_file(str(store / s["file"])) for s in manifest["shards"]]
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if ds.num_rows != manifest["rows"] or list(ds.column_names) != manifest["columns"]:
        raise StoreError(
            f"{store}: the shards hold {ds.num_rows} rows with columns {ds.column_names}, the manifest says "
            f"{manifest['rows']} rows with {manifest['columns']}"
        )
    return ds.with_format("torch")


def store_path(store: Any) -> Path:
    """The folder of a store given as a path or as the ``Dataset`` that :func:`open` returned."""
    if isinstance(store, (str, os.PathLike)):
        return Path(store)
    files = getattr(store, "cache_files", None)
    if files:
        return Path(files[0]["filename"]).parent
    raise TypeError(
        "expected an activation store's folder or the Dataset hooked.store.open gave, "
        f"got {type(store).__name__}"
    )


def manifest_of(store: Any) -> dict[str, Any]:
    """The checked manifest of a store given as a path or a ``Dataset`` from :func:`open`."""
    return read_manifest(store_path(store))


class _Column:
    """One column of every shard as zero-copy numpy views of the memory-mapped record batches."""

    def __init__(self, tables: list[Any], name: str, shape: tuple[int, ...]):
        pa = require("pyarrow")

        self.views: list[np.ndarray] = []
        for table in tables:
            for chunk in table.column(name).chunks:
                values = chunk
                while pa.types.is_fixed_size_list(values.type):
                    values = values.flatten()
                self.views.append(values.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape))
        self.starts = np.cumsum([0] + [len(v) for v in self.views])
        self.shape = shape
        self.dtype = self.views[0].dtype if self.views else np.dtype(np.float32)

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order) as a fresh array."""
        out = np.empty((len(index), *self.shape), dtype=self.dtype)
        chunk = np.searchsorted(self.starts, index, side="right") - 1
        order = np.argsort(chunk, kind="stable")
        bounds = np.searchsorted(chunk[order], np.arange(len(self.views) + 1))
        for c in np.flatnonzero(bounds[1:] > bounds[:-1]):  # only the record batches this batch touches
            sel = order[bounds[c] : bounds[c + 1]]
            out[sel] = self.views[c][index[sel] - self.starts[c]]
        return out

    def slice(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts, at = [], start
        for c in range(first, len(self.views)):
            if at >= stop:
                break
            lo = at - self.starts[c]
            hi = min(stop, self.starts[c + 1]) - self.starts[c]
            parts.append(self.views[c][lo:hi])
            at = self.starts[c] + hi
        return np.concatenate(parts) if len(parts) != 1 else parts[0].copy()


def iter_batches(
    store: Any,
    batch_size: int = 1024,
    *,
    columns: Sequence[str] | None = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    verify: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """Batches of rows as ``{column: tensor}``, shuffled by index, in constant memory.

    Args:
        store: the store's folder, or the ``Dataset`` :func:`open` returned.
        batch_size: rows per batch.
        columns: which columns (default: all); a hook's tensor is ``[batch, *hook shape]``.
        shuffle: rows in a random order (a permutation of the row indices, drawn from ``seed``;
            only the rows of the current batch are read), else in row order.
        drop_last: leave out a last batch with fewer than ``batch_size`` rows.
        verify: check the shards' sha256 first.
    """
    pa = require("pyarrow")

    if batch_size < 1:
        raise ValueError(f"iter_batches: batch_size must be positive, got {batch_size}")
    path = store_path(store)
    manifest = read_manifest(path, verify=verify)
    names = list(columns) if columns is not None else manifest["columns"]
    unknown = [c for c in names if c not in manifest["columns"]]
    if unknown:
        raise StoreError(
            f"{path} has no column {unknown[0]!r}; its columns: {', '.join(manifest['columns'])}"
        )
    tables = [pa.ipc.open_stream(pa.memory_map(str(path / s["file"]))).read_all() for s in manifest["shards"]]
    hooks = manifest["hooks"]
    cols = {c: _Column(tables, c, tuple(hooks[c]["shape"]) if c in hooks else ()) for c in names}
    n = manifest["rows"]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy() if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        if order is None:
            yield {c: torch.from_numpy(col.slice(start, end)) for c, col in cols.items()}
        else:
            index = order[start:end]
            yield {c: torch.from_numpy(col.take(index)) for c, col in cols.items()}
