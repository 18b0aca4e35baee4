"""Training batches from an activation store: shuffled, endless, resumable, shared over ranks.

:class:`StoreStream` reads a store written by ``hooked harvest`` (:mod:`hooked.store`) through
:func:`hooked.store.iter_batches`, which memory-maps the shards and reads only the rows of the
batch asked for, so memory does not grow with the store. Epoch ``e`` visits every row once in the
order of a permutation drawn from ``seed + e``; a run resumed at (epoch, batch) gets exactly the
batches an uninterrupted run got (the batches before it in that epoch are read again and dropped).

Under ``torchrun`` every rank draws the same global batch of ``batch_size`` rows and keeps its
own contiguous slice of ``batch_size / world`` rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from hooked.store import StoreError, iter_batches, manifest_of, store_path


def store_columns(store: Any, hooks: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The row shape of each of ``hooks`` in the store, or a clear error naming the missing hook."""
    manifest = manifest_of(store)
    have = manifest["hooks"]
    for hook in hooks:
        if hook not in have:
            raise StoreError(
                f"the store {store_path(store)} has no hook {hook!r}; it holds "
                f"{', '.join(have) or 'no hooks'}"
            )
        shape = tuple(have[hook]["shape"])
        if len(shape) != 1:
            raise StoreError(
                f"the store's rows at {hook!r} have shape {shape}; a dictionary reads one vector per row "
                "(harvest a hook whose rows are vectors)"
            )
    return {h: tuple(have[h]["shape"]) for h in hooks}


class StoreStream:
    """Endless global batches of ``columns`` from ``store`` (this rank's slice of each)."""

    def __init__(
        self,
        store: str | os.PathLike,
        columns: Sequence[str],
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        if batch_size % world:
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of the number of processes ({world})"
            )
        self.store = store_path(store)
        self.columns = list(dict.fromkeys(columns))
        self.shapes = store_columns(self.store, self.columns)
        self.rows: int = manifest_of(self.store)["rows"]
        if self.rows < batch_size:
            raise StoreError(
                f"the store {self.store} has {self.rows} rows, fewer than one batch ({batch_size})"
            )
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.per_epoch = self.rows // batch_size
        self.epoch = self.index = 0
        self._it: Any = None

    def seek(self, epoch: int, index: int) -> None:
        """Continue at batch ``index`` of epoch ``epoch`` (the next ``next`` returns it)."""
        self.epoch, self.index, self._it = epoch, index, None

    def __iter__(self) -> StoreStream:
        return self

    def __next__(self) -> dict[str, Tensor]:
        if self.index >= self.per_epoch:
            self.epoch, self.index, self._it = self.epoch + 1, 0, None
        if self._it is None:
            self._it = iter_batches(
                self.store,
                self.batch_size,
                columns=self.columns,
                shuffle=True,
                seed=self.seed + self.epoch,
                drop_last=True,
            )
            for _ in range(self.index):
                next(self._it)
        batch = next(self._it)
        self.index += 1
        share = self.batch_size // self.world
        lo = self.rank * share
        return {c: t[lo : lo + share] for c, t in batch.items()}
