"""Tables from benchmark results: printed after a run, and written into benchmarks/README.md.

The README's tables are generated between the markers below from every JSON file in
``benchmarks/results/`` (the current figures only; earlier ones are in git history); the prose
around them is kept as written. ``python -m benchmarks`` regenerates them after each run that
saves, ``python -m benchmarks.report --readme`` from the committed files alone, and ``--check``
says whether the README is what the files give (``tests/docs/test_benchmarks_readme.py``).

For each results file the section holds the targets (each compared with the rows that measure
it: ``TARGETS``) and then every row. A row timed in paired rounds (``timing.time_paired``: it has
``rounds_s`` and ``ratio_spread``) shows its ratio as the median of the per-round ratios with their
interquartile range, ``1.039 [1.012, 1.061]``; a target that compares two such rows of one group
(the bridge over ``wrap``, ``wrap`` against nnsight) takes their ratio round by round too, and its
verdict names the rows whose bound lies between the quartiles (there another run may well give
the other verdict). Rows without those fields (older files, other suites) show one ratio, as
before.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from hooked.io import atomic_write_bytes

HERE = Path(__file__).parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# (target, how the rows are compared, [(label, group contains, name contains), ...]). A comparison is
# ("ratio <=", x): the row's ratio to its baseline at most x; ("speed-up >=", x): baseline / row at
# least x; ("ratio <= row", name or (name, label)): at most the ratio of the row of the same group
# named so; ("over row <=", (name, x)): the row's ratio over that row's at most x.
TARGETS: list[tuple[str, tuple[str, Any], list[tuple[str, str, str]]]] = [
    (
        "inactive hook point < 10% of an `nn.Module` call (bare call on a local variable)",
        ("ratio <=", 0.10),
        [("`HookPoint` / `nn.Identity`", "inactive hook point dispatch", "hooked.HookPoint")],
    ),
    (
        "inactive hook point in situ <= 15% of an `nn.Identity` in its place",
        ("ratio <=", 0.15),
        [("MLP stack d=64", "inactive hook point in situ", "hooked.HookPoint in a HookedModule")],
    ),
    (
        "no-hook forward within 2% of raw",
        ("ratio <=", 1.02),
        [
            ("ToyReLU", "forward, no hooks attached", "ToyReLU hooked ("),
            ("MLP stack d=512", "forward, no hooks attached", "MLP stack d=512"),
            ("MLP stack d=64, in situ", "no hooks attached (in situ): MLP stack d=64", "in a HookedModule"),
            ("GPT-2-small stack", "forward, no hooks attached", "GPT-2-small"),
            ("`hooked.wrap` of SmolLM2", "LM forward, no hooks attached", "hooked.wrap"),
            ("compiled", "torch.compile", "compiled hooked model, no hooks"),
        ],
    ),
    (
        "`run_with_cache` of everything within 10%",
        ("ratio <=", 1.10),
        [
            ("GPT-2-small stack", "run_with_cache", "cache every hook point"),
            ("SmolLM2, `hooked.wrap`", "LM run_with_cache", "hooked.wrap, every hook point"),
            ("SmolLM2, bridge", "LM run_with_cache", "TransformerBridge, every hook point"),
        ],
    ),
    (
        "hooks at a few RNN steps below the unrolled cell loop",
        ("ratio <= row", "unrolled nn.GRUCell loop"),
        [
            ("length 256, 1 step", "seq len 256", "edit at 1 step"),
            ("length 256, 3 steps", "seq len 256", "edit at 3 steps"),
            ("length 9, 1 step", "seq len 9", "edit at 1 step"),
            ("length 9, 3 steps", "seq len 9", "edit at 3 steps"),
        ],
    ),
    (
        "batched patching >= 10x serial",
        ("speed-up >=", 10.0),
        [
            ("toy MLP", "activation patching", "batched sweep"),
            ("SmolLM2, bridge", "LM activation patching", "TransformerBridge: batched patching_sweep"),
            ("SmolLM2, `hooked.wrap`", "LM activation patching", "hooked.wrap: batched patching_sweep"),
        ],
    ),
    (
        "prefix reuse >= 1.5x the batched sweep (SmolLM2, 31 x 9)",
        ("speed-up >=", 1.5),
        [
            ("bridge", "LM activation patching", "TransformerBridge: batched, prefix reused"),
            ("`hooked.wrap`", "LM activation patching", "hooked.wrap: batched, prefix reused"),
        ],
    ),
    (
        "peers: caching every module's input and output at most nnsight's ratio",
        ("ratio <= row", ("nnsight", "nnsight")),
        [("`hooked.wrap`", "peers: cache every module", "hooked wrap")],
    ),
    (
        "peers: the bridge within 10% of `wrap`",
        ("over row <=", ("hooked wrap", 1.10)),
        [
            ("steered generation, batch 1", "steering hook, batch 1", "hooked bridge"),
            ("batch 4", "steering hook, batch 4", "hooked bridge"),
            ("attribution patching", "peers: attribution patching", "hooked bridge"),
        ],
    ),
    (
        "peers: a sweep whose metric declares its positions <= 0.5 of the plain batched sweep",
        ("ratio <=", 0.5),
        [
            ("`hooked.wrap`", "peers: patching sweep", "hooked wrap, metric positions declared"),
            ("bridge", "peers: patching sweep", "hooked bridge, metric positions declared"),
        ],
    ),
]


def _fmt_time(s: float, unit: str) -> str:
    """Seconds in a readable unit; ``unit`` "s/patch" prints e.g. "425 µs/patch"."""
    if not unit.startswith("s/"):
        return f"{s:.3g} {unit}"
    per = "" if unit == "s/call" else unit[1:]
    for scale, name in ((1e-9, "ns"), (1e-6, "µs"), (1e-3, "ms"), (1, "s")):
        if s < scale * 1000 or name == "s":
            return f"{s / scale:.3g} {name}{per}"
    return f"{s:.3g} s{per}"


def _spread(values: list[float]) -> dict:
    """Median and quartiles of ``values`` (as ``timing.Spread``: linear interpolation)."""
    v = sorted(values)
    q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else (v[0],) * 3
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "min": v[0], "max": v[-1], "rounds": len(v)}


def _with_iqr(value: float, spread: dict | None) -> str:
    """``1.039 [1.012, 1.061]``: a ratio and, where it was taken round by round, its quartiles."""
    if spread is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{spread['q1']:.3f}, {spread['q3']:.3f}]"


def _paired(r: dict, ref: dict) -> dict | None:
    """The spread of ``r``'s seconds over ``ref``'s round by round, where both were timed in the
    same paired rounds; else None."""
    a, b = r.get("rounds_s"), ref.get("rounds_s")
    if not a or not b or len(a) != len(b):
        return None
    return _spread([x / y for x, y in zip(a, b)])


def format_rows(rows: list[dict]) -> str:
    lines = ["| group | measured | time | against | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = _with_iqr(r["ratio"], r.get("ratio_spread")) if r.get("ratio") is not None else ""
        base = r.get("baseline") or ""
        if base and r.get("baseline_seconds"):
            base += f" ({_fmt_time(r['baseline_seconds'], r.get('unit', 's/call'))})"
        lines.append(
            f"| {r['group']} | {r['name']} | {_fmt_time(r['seconds'], r.get('unit', 's/call'))} "
            f"| {base} | {ratio} |"
        )
    return "\n".join(lines)


def find_row(rows: list[dict], group: str, name: str) -> dict | None:
    """The first row whose group and name contain these strings and that has a ratio."""
    for r in rows:
        if group in r["group"] and name in r["name"] and r.get("ratio") is not None:
            return r
    return None


def format_targets(rows: list[dict]) -> str | None:
    """The targets against the rows that measure them; None when the rows measure none of them."""
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for target, (how, bound), checks in TARGETS:
        shown, met, unsure = [], 0, []
        for label, group, name in checks:
            r = find_row(rows, group, name)
            if r is None:
                continue
            spread, limit = None, 0.0  # where the rounds say it: the bound inside the quartiles
            if how == "speed-up >=":
                value = 1 / r["ratio"]
                ok, text = value >= float(bound), f"{value:.3g}x"
            elif how == "ratio <=":
                ok, text = r["ratio"] <= float(bound), _with_iqr(r["ratio"], r.get("ratio_spread"))
                spread, limit = r.get("ratio_spread"), float(bound)
            elif how == "over row <=":
                ref_name, limit = bound  # type: ignore[misc]
                ref = find_row(rows, r["group"], ref_name)
                if ref is None:
                    continue
                paired = _paired(r, ref)
                value = paired["median"] if paired else r["ratio"] / ref["ratio"]
                ok, text = value <= limit, _with_iqr(value, paired)
                spread = paired
            else:  # "ratio <= row"
                ref_name, ref_label = bound if isinstance(bound, tuple) else (bound, "loop")
                ref = find_row(rows, r["group"], ref_name)
                if ref is None:
                    continue
                paired = _paired(r, ref)
                text = f"{r['ratio']:.3f} ({ref_label} {ref['ratio']:.3f}"
                if paired:  # judged on the rounds' own comparison: the row over the other, at most 1
                    ok = paired["median"] <= 1
                    text += f"; over it round by round {_with_iqr(paired['median'], paired)})"
                    spread, limit = paired, 1.0
                else:
                    ok = r["ratio"] <= ref["ratio"]
                    text += ")"
            shown.append(f"{label} {text}")
            met += ok
            if spread is not None and spread["q1"] <= limit <= spread["q3"]:
                unsure.append(label)
        if not shown:
            continue
        verdict = "met" if met == len(shown) else "not met" if met == 0 else f"met by {met} of {len(shown)}"
        if unsure:  # another run may well say otherwise there
            verdict += f" (the bound within the quartiles: {', '.join(unsure)})"
        lines.append(f"| {target} | {'; '.join(shown)} | {verdict} |")
    return "\n".join(lines) if len(lines) > 2 else None


def results() -> dict[str, dict]:
    """Every results file, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def tables(records: dict[str, dict]) -> str:
    """The generated part of the README: for each results file, its targets and its rows."""
    sections = []
    for name, rec in records.items():
        head = (
            f"### `{name}`: {rec['device_name']}, torch {rec['torch']}, "
            f"{'quick' if rec['quick'] else 'full'} sizes, {rec['created']}"
        )
        if rec.get("load") and None not in rec["load"]:  # 1-minute load average at the start and end
            head += f", load {rec['load'][0]:.2f} -> {rec['load'][-1]:.2f}"
        parts = [head]
        if any(r.get("ratio_spread") for r in rec["rows"]):
            parts.append(
                "Ratios with brackets were taken round by round (each arm against its baseline timed in the "
                "same round, the arms in a rotating order): the median over rounds [first quartile, third "
                "quartile]; the time is the median over rounds."
            )
        targets = format_targets(rec["rows"])
        if targets:
            parts.append(targets)
        parts.append(format_rows(rec["rows"]))
        sections.append("\n\n".join(parts))
    return "\n\n".join(sections) or "(no results yet: run `python -m benchmarks`)"


def render(text: str, records: dict[str, dict]) -> str:
    """``text`` (the README) with the part between the markers generated from ``records``."""
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    pre, rest = text.split(BEGIN, 1)
    post = rest.split(END, 1)[1]
    return f"{pre}{BEGIN}\n{tables(records)}\n{END}{post}"


def render_readme() -> None:
    """Regenerate benchmarks/README.md's tables from the results files."""
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    atomic_write_bytes(README, render(text, results()).encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description="benchmarks/README.md")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--readme", action="store_true", help="regenerate the tables from results/*.json")
    how.add_argument("--check", action="store_true", help="exit 1 if the README's tables are not the files'")
    args = p.parse_args(argv)
    if args.readme:
        render_readme()
        return 0
    if README.read_text() != render(README.read_text(), results()):
        print("benchmarks/README.md is stale: run python -m benchmarks.report --readme", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
