"""``python -m benchmarks [--quick] [--device cuda] [--only NAME ...]``: run, save, tabulate."""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds (what CI runs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--only", nargs="*", choices=suites(), help="run only these suites")
    p.add_argument("--no-save", action="store_true", help="print the table, write no result file")
    args = p.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("benchmarks: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 2
    ctx = Context(device=args.device, quick=args.quick)
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
