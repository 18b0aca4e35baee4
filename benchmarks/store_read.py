"""Activation store reads: a batch from ``hooked.store.iter_batches`` (memory-mapped shards,
shuffled or in order) against the same rows gathered from tensors held in memory.

The store is written once by ``harvest`` into a temporary folder (two hooks of ``d`` floats a row,
4 MiB record batches) and read while its pages are in the page cache, so the rows time the
gather itself (grouping the rows by record batch, Arrow's ``take``, the copies to numpy and
torch), not the disk. The baseline is ``tensor[index]`` on in-memory copies of the same columns,
on one torch thread (the reader is single-threaded; torch's parallel indexing of a few hundred rows
only waits for its threads on a busy machine).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

import hooked
from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved


class _TwoLayers(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.a, self.b = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        return self.b(self.a(x))


def _cycle(make):
    """A function returning the next item of ``make()``, starting it again when it ends."""
    state = {"it": make()}

    def step():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = make()
            return next(state["it"])

    return step


def run(ctx: Context) -> list[Row]:
    from hooked import store

    d, n = ctx.pick((64, 20_000), (576, 100_000))
    torch.manual_seed(0)
    model = hooked.wrap(_TwoLayers(d).eval())
    x = torch.randn(n, d)
    hooks = ["a.hook_out", "b.hook_out"]
    folder = Path(tempfile.mkdtemp(prefix="store-read-"))
    rows = []
    threads = torch.get_num_threads()
    try:
        out = store.harvest(model, x.split(1024), hooks, folder / "s", progress=False)
        mb = sum(s["bytes"] for s in store.read_manifest(out)["shards"]) / 2**20
        with torch.no_grad():
            _, cache = model.run_with_cache(x, names_filter=hooks)
        memory = {"row": torch.arange(n), "sequence": torch.arange(n), **{h: cache[h] for h in hooks}}
        for batch in ctx.pick((256, 1024), (256, 1024, 4096)):
            for shuffle in (True, False):
                read = _cycle(lambda b=batch, s=shuffle: store.iter_batches(out, b, shuffle=s, seed=1))
                order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
                at = {"i": 0}

                def gather(b=batch, s=shuffle, order=order, at=at):
                    start = at["i"] % (n - b)
                    at["i"] += b
                    if s:
                        index = order[start : start + b]
                        return {c: t[index] for c, t in memory.items()}
                    return {c: t[start : start + b].clone() for c, t in memory.items()}

                torch.set_num_threads(1)
                t = time_interleaved(
                    {"store": read, "memory": gather},
                    device=ctx.device,
                    rounds=ctx.pick(2, 5),
                    repeats=ctx.pick(5, 15),
                    budget_s=ctx.pick(0.02, 0.1),
                )
                torch.set_num_threads(threads)
                how = "shuffled" if shuffle else "in order"
                rows.append(
                    Row(
                        group="activation store read",
                        name=f"iter_batches, {batch} rows {how}",
                        seconds=t["store"].median_s,
                        baseline=f"the same rows from tensors in memory ({how})",
                        baseline_seconds=t["memory"].median_s,
                        sizes={"rows": n, "d": d, "hooks": 2, "batch": batch, "store_mb": round(mb, 1)},
                        unit="s/batch",
                    )
                )
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(folder, ignore_errors=True)
    return rows
