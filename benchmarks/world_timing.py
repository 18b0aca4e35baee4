"""World 2 against world 1 on this machine's cores: wall time of the same job under ``torchrun``.

Not a suite of ``python -m benchmarks``; run it by hand::

    python -m benchmarks.world_timing harvest --repeats 3
    python -m benchmarks.world_timing tms --repeats 3

Three ways, interleaved round by round, medians: one process with all cores' threads (the
default), one process with one thread, and ``torchrun --nproc_per_node=2`` with one thread per
process (``OMP_NUM_THREADS=1``). Each run writes into a fresh temporary folder, deleted after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

JOBS = {
    # a compute-bound harvest: a random Llama (4 layers, d_model 256), 2 hooks, 64k tokens
    "harvest": [
        "harvest",
        "--model",
        "tiny-llama",
        "--model-layers",
        "4",
        "--model-d-model",
        "256",
        "--model-vocab",
        "512",
        "--model-seq",
        "128",
        "--hooks",
        "model.layers.1.hook_out,model.layers.3.hook_out",
        "--rows",
        "65536",
        "--batch-size",
        "16",
        "--shard-mb",
        "8",
        "--no-progress",
    ],
    # the TMS reproduction with fewer steps (its four sweeps are the work items)
    "tms": [
        "repro",
        "tms",
        "--steps",
        "300",
        "--big-steps",
        "300",
        "--phase-steps",
        "300",
        "--no-progress",
    ],
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(job: str, world: int, threads: int | None, rows: int | None = None) -> float:
    folder = tempfile.mkdtemp(prefix="world-timing-")
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={world}",
        "--master_addr=127.0.0.1",
    ]
    out = os.path.join(folder, "out")
    cmd += [f"--master_port={_port()}", "-m", "hooked", *_job(job, rows), "--out", out]
    started = time.perf_counter()
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _job(job: str, rows: int | None) -> list[str]:
    """The job's command line, with ``--rows`` replaced where a row count is given."""
    words = list(JOBS[job])
    if rows is not None:
        if "--rows" not in words:
            raise SystemExit(f"--rows: the {job!r} job has no row count")
        words[words.index("--rows") + 1] = str(rows)
    return words


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.world_timing", description=__doc__)
    p.add_argument("job", choices=list(JOBS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, default=None, help="harvest: tokens to harvest (default 65,536)")
    args = p.parse_args(argv)
    ways = {"world 1, all threads": (1, None), "world 1, 1 thread": (1, 1), "world 2, 1 thread each": (2, 1)}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.repeats):
        for name, (world, threads) in ways.items():
            times[name].append(run_once(args.job, world, threads, args.rows))
            print(f"{name}: {times[name][-1]:.1f} s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "job": args.job,
        "command": ["hooked", *_job(args.job, args.rows)],
        "cpus": os.cpu_count(),
        "seconds": times,
        "median_seconds": med,
        "speedup_world2_over_world1_all_threads": med["world 1, all threads"] / med["world 2, 1 thread each"],
        "speedup_world2_over_world1_1_thread": med["world 1, 1 thread"] / med["world 2, 1 thread each"],
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
