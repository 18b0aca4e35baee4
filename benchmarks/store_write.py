"""Activation store figures: write rate against in-memory ``run_with_cache``, and peak memory.

Not a suite of ``python -m benchmarks`` (it writes gigabytes); run it by hand::

    python -m benchmarks.store_write rate --model llama --gib 1 --repeats 3
    python -m benchmarks.store_write memory --gib 1 2 4

``rate``: the same forwards, interleaved A/B, medians: (A) ``run_with_cache`` of the hooks on
every batch, the activations kept in memory (a list of tensors); (B) ``hooked.store.harvest`` of
the same hooks on the same batches into a fresh store (shard hashes, manifest and rename
included); (C) the disk's ceiling: as many bytes written to a fresh file by plain ``write`` calls
(no model). ``memory``: one subprocess per store size, peak ``RssAnon`` (anonymous memory, read
from ``/proc/self/status`` every 5 ms by a thread) and ``VmHWM`` for comparison, before and
during the harvest. Stores are written under ``--dir`` (default: a temporary folder) and deleted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

MODELS = ("toy", "llama", "smollm")
TOY_FEATURES = 4096


def build(model: str, gib: float, batch_size: int, lazy: bool = False):
    """``(model, batches, hooks)``: batches enough for ``gib`` GiB of activations at the hooks
    (a generator with ``lazy``: one input batch in memory at a time)."""
    g = torch.Generator().manual_seed(0)
    if model == "toy":
        from hooked.models.toy_relu import ToyReLU, sparse_uniform

        # cheap forwards, wide activations: the write-bound case
        m = ToyReLU(TOY_FEATURES, 16, 1, seed=0)
        hooks = ["hook_pre", "hook_out"]
        n = int(gib * 2**30 / (4 * 2 * TOY_FEATURES) / batch_size) + 1
        density = torch.full((1,), 0.1)
        batches = (sparse_uniform(batch_size, density, TOY_FEATURES, g) for _ in range(n))
    elif model in ("llama", "smollm"):
        from hooked import lm
        from hooked.models.lm import tiny_llama_hf

        if model == "llama":  # a random Llama, 2 layers, d_model 512: compute-bound forwards
            m, d, vocab = lm.wrap_lm(tiny_llama_hf(layers=2, d_model=512, vocab=1024)), 512, 1024
            hooks = ["model.layers.0.hook_out", "model.layers.1.hook_out"]
        else:
            m, d, vocab = lm.load("smollm2-135m", backend="wrap"), 576, 49152
            hooks = ["model.layers.10.hook_out", "model.layers.20.hook_out"]
        n = int(gib * 2**30 / (4 * d * 2 * 128 * batch_size)) + 1
        batches = (torch.randint(0, vocab, (batch_size, 128), generator=g) for _ in range(n))
    else:
        raise ValueError(f"model must be one of {MODELS}")
    return m.eval(), batches if lazy else list(batches), hooks


def in_memory(model, batches, hooks) -> tuple[float, int]:
    kept = []
    started, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for b in batches:
            _, cache = model.run_with_cache(b, names_filter=hooks)
            kept.append([cache[h] for h in hooks])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = sum(t.numel() * t.element_size() for ts in kept for t in ts)
    return seconds, cpu, size


def to_store(model, batches, hooks, folder: Path) -> tuple[float, int]:
    from hooked.store import harvest, read_manifest

    out = folder / "store"
    started, cpu = time.perf_counter(), time.process_time()
    harvest(model, batches, hooks, out, progress=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = sum(s["bytes"] for s in read_manifest(out)["shards"])
    shutil.rmtree(out)
    return seconds, cpu, size


def plain_write(size: int, folder: Path) -> tuple[float, float, int]:
    """The disk's ceiling: ``size`` bytes written to a fresh file with plain ``write`` calls of
    64 MiB (no model, no Arrow, no hash), closed and deleted like a store's shards."""
    chunk = bytes(64 * 2**20)
    path = folder / "plain.bin"
    started, cpu = time.perf_counter(), time.process_time()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            left -= f.write(chunk[: min(left, len(chunk))])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    path.unlink()
    return seconds, cpu, size


def rate(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model, batches, hooks = build(args.model, args.gib, args.batch_size)
    folder = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.dir))
    times: dict[str, list[float]] = {"memory": [], "store": [], "plain_write": []}
    cpus: dict[str, list[float]] = {"memory": [], "store": [], "plain_write": []}
    sizes = {}
    try:
        in_memory(model, batches[:2], hooks)  # warm up (first hook attach, allocator)
        for _ in range(args.repeats):
            for name in ("memory", "store", "plain_write"):
                os.sync()  # the last arm's dirty pages go to disk before this one starts
                if name == "memory":
                    s, cpu, size = in_memory(model, batches, hooks)
                elif name == "store":
                    s, cpu, size = to_store(model, batches, hooks, folder)
                else:
                    s, cpu, size = plain_write(sizes["store"], folder)
                times[name].append(s)
                cpus[name].append(cpu)
                sizes[name] = size
                print(f"{name}: {s:.2f} s (cpu {cpu:.2f} s), {size / 2**30:.3f} GiB", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "batches": len(batches),
        "activation_gib": sizes["memory"] / 2**30,
        "store_gib": sizes["store"] / 2**30,
        "seconds": times,
        "median_seconds": med,
        "memory_gib_per_s": sizes["memory"] / 2**30 / med["memory"],
        "store_gib_per_s": sizes["memory"] / 2**30 / med["store"],
        "store_rate_over_memory_rate": med["memory"] / med["store"],
        "plain_write_gib_per_s": sizes["store"] / 2**30 / med["plain_write"],
        "store_rate_over_plain_write_rate": med["plain_write"] / med["store"],
        "cpu_seconds": cpus,
        "store_cpu_rate_over_memory_cpu_rate": statistics.median(cpus["memory"])
        / statistics.median(cpus["store"]),
    }
    print(json.dumps(out, indent=2))
    return out


# ---------------------------------------------------------------------- memory
def _rss() -> dict[str, int]:
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "VmHWM", "VmRSS", "RssFile"):
                found[key] = int(value.split()[0]) * 1024
    return found


class PeakSampler:
    """Peak RssAnon (and VmRSS) of this process, sampled by a thread every ``every`` seconds."""

    def __init__(self, every: float = 0.005):
        self.every, self.peak, self._stop = every, {"RssAnon": 0, "VmRSS": 0}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = _rss()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], now[k])
            time.sleep(self.every)

    def __enter__(self) -> PeakSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()


def one_memory_run(gib: float, model: str, batch_size: int, folder: str) -> dict:
    from hooked.store import harvest, read_manifest

    m, gen, hooks = build(model, gib, batch_size, lazy=True)
    first = next(gen)
    gen = itertools.chain([first], gen)
    import pyarrow  # noqa: F401  (imported before the baseline, as the harvest needs it)

    with torch.no_grad():  # one forward before the baseline: allocator and hook machinery warm
        m.run_with_cache(first, names_filter=hooks)
    before = _rss()
    out = Path(folder) / f"store-{gib}"
    started = time.perf_counter()
    with PeakSampler() as peak:
        harvest(m, gen, hooks, out, progress=False)
    seconds = time.perf_counter() - started
    shards = read_manifest(out)["shards"]
    size = sum(s["bytes"] for s in shards)
    shutil.rmtree(out)
    return {
        "gib_target": gib,
        "store_gib": size / 2**30,
        "seconds": seconds,
        "RssAnon_before_MiB": before["RssAnon"] / 2**20,
        "peak_RssAnon_MiB": peak.peak["RssAnon"] / 2**20,
        "peak_VmRSS_MiB": peak.peak["VmRSS"] / 2**20,
        "VmHWM_MiB": _rss()["VmHWM"] / 2**20,
        "shards": len(shards),
    }


def memory(args: argparse.Namespace) -> list[dict]:
    folder = tempfile.mkdtemp(prefix="store-mem-", dir=args.dir)
    rows = []
    try:
        for gib in args.gib:
            code = (
                "import json, sys; from benchmarks.store_write import one_memory_run; "
                f"print(json.dumps(one_memory_run({gib}, {args.model!r}, {args.batch_size}, {folder!r})))"
            )
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(rows, indent=2))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.store_write", description=__doc__)
    p.add_argument("what", choices=["rate", "memory"])
    p.add_argument("--model", choices=MODELS, default="llama")
    p.add_argument("--gib", type=float, nargs="+", default=[1.0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=os.environ.get("TMPDIR"), help="where stores are written")
    args = p.parse_args(argv)
    if args.what == "rate":
        args.gib = args.gib[0]
        rate(args)
    else:
        memory(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
