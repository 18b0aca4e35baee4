"""``python -m benchmarks [--quick] [--device cuda] [--only NAME ...] [--threads N]``: run, save, tabulate.

Each results file records the load average at the run's start and end (``load``)."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import Context, device_name
from benchmarks.report import RESULTS, format_rows, render_readme
from hooked.io import read_json, write_json

HELPERS = {"__main__", "__init__", "common", "timing", "report"}


def suites() -> list[str]:
    """Every module of this folder with a ``run(ctx)`` function; hook_overhead first, then by name."""
    names = sorted(
        p.stem
        for p in Path(__file__).parent.glob("*.py")
        if p.stem not in HELPERS and "\ndef run(" in p.read_text()
    )
    return sorted(names, key=lambda n: (n != "hook_overhead", n))


def _load() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _warn_if_shared(load: float | None) -> None:
    """Threads that wait on each other at every parallel operation are slowed far more by other
    work than one thread is: on this 2-core machine at load ~4, one attribution call took 6-12 s at
    two threads and 1.0-1.7 s at one, and the arms' ratios moved by up to 2x. Say so before timing."""
    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    if load is not None and threads > 1 and load > 0.5:
        print(
            f"benchmarks: load average {load:.2f} on {cores} cores with {threads} torch threads: other work "
            "moves multi-threaded timings and their ratios far more than single-threaded ones "
            "(--threads 1 on a shared machine)",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds (what CI runs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--only", nargs="*", choices=suites(), help="run only these suites")
    p.add_argument("--no-save", action="store_true", help="print the table, write no result file")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's own, one a core); 1 on a shared machine, see below",
    )
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("benchmarks: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 2
    ctx = Context(device=args.device, quick=args.quick)
    load = [_load()]  # other work on the machine moves the ratios: say how much there was
    _warn_if_shared(load[0])
    rows = []
    for suite in args.only or suites():
        module = importlib.import_module(f"benchmarks.{suite}")
        started = time.perf_counter()
        suite_rows = module.run(ctx)
        for r in suite_rows:
            r.sizes.setdefault("suite", suite)
        rows += suite_rows
        print(f"[{suite}: {time.perf_counter() - started:.1f} s]", file=sys.stderr)
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": args.device,
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "load": [*load, _load()],
        "rows": [r.to_json() for r in rows],
    }
    print(format_rows(record["rows"]))
    if not args.no_save:
        kind = "quick" if args.quick else "full"
        path = RESULTS / f"{torch.device(args.device).type}-{kind}.json"
        if args.only and path.exists():  # a partial run replaces its suites' rows, keeps the rest
            kept = [r for r in read_json(path)["rows"] if r.get("sizes", {}).get("suite") not in args.only]
            record["rows"] = kept + record["rows"]
        write_json(path, record)
        render_readme()
        print(f"\nwrote {path} and benchmarks/README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
