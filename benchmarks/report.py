"""Tables from benchmark results: printed after a run, and written into benchmarks/README.md.

The README's tables are generated between the markers below from every JSON file in
``benchmarks/results/``; the prose around them is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from hooked.io import atomic_write_bytes

HERE = Path(__file__).parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _fmt_time(s: float, unit: str) -> str:
    """Seconds in a readable unit; ``unit`` "s/patch" prints e.g. "425 µs/patch"."""
    if not unit.startswith("s/"):
        return f"{s:.3g} {unit}"
    per = "" if unit == "s/call" else unit[1:]
    for scale, name in ((1e-9, "ns"), (1e-6, "µs"), (1e-3, "ms"), (1, "s")):
        if s < scale * 1000 or name == "s":
            return f"{s / scale:.3g} {name}{per}"
    return f"{s:.3g} s{per}"


def format_rows(rows: list[dict]) -> str:
    lines = ["| group | measured | time | against | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r.get("ratio") is not None else ""
        base = r.get("baseline") or ""
        if base and r.get("baseline_seconds"):
            base += f" ({_fmt_time(r['baseline_seconds'], r.get('unit', 's/call'))})"
        lines.append(
            f"| {r['group']} | {r['name']} | {_fmt_time(r['seconds'], r.get('unit', 's/call'))} "
            f"| {base} | {ratio} |"
        )
    return "\n".join(lines)


def render_readme() -> None:
    sections = []
    for path in sorted(RESULTS.glob("*.json")):
        rec = json.loads(path.read_text())
        head = (
            f"### `{path.name}`: {rec['device_name']}, torch {rec['torch']}, "
            f"{'quick' if rec['quick'] else 'full'} sizes, {rec['created']}"
        )
        sections.append(head + "\n\n" + format_rows(rec["rows"]))
    body = "\n\n".join(sections) or "(no results yet: run `python -m benchmarks`)"
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    pre, rest = text.split(BEGIN, 1)
    post = rest.split(END, 1)[1]
    atomic_write_bytes(README, f"{pre}{BEGIN}\n{body}\n{END}{post}".encode())
