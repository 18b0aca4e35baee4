"""Compare two runs of one notebook (``runner.py`` records): which cells ran, with the same numbers.

Usage: ``python -m tests.lm.tutorials.compare REFERENCE_DIR RUN_DIR [...]`` prints, per run, the
cells that ran on the reference and how each fared: ``same`` (every value the cell bound, plotted
or showed equals the reference's within ``atol=rtol=1e-3``), ``differs`` (the values that do not),
``failed`` (the error), ``timeout`` (stopped by the runner's per-cell limit). Logits (a last
dimension of the vocabulary's size) are compared after subtracting their mean over the vocabulary:
TransformerLens's compatibility mode centres the unembedding, which ``wrap`` does not do, so
logits differ by a constant per position there while logit differences and probabilities agree.
:func:`table` gives the counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TOL = 1e-3


def load(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    record = json.loads((folder / "record.json").read_text())
    values = folder / "values.safetensors"
    tensors = load_file(str(values)) if values.is_file() else {}
    return record, tensors


def _same(a: Any, b: Any, ta: dict, tb: dict, vocab: int | None) -> bool:
    import torch

    if isinstance(a, dict) and "tensor" in a:
        if not (isinstance(b, dict) and "tensor" in b) or a["shape"] != b["shape"]:
            return False
        x, y = ta[a["tensor"]], tb[b["tensor"]]
        if not x.is_floating_point():
            return torch.equal(x, y)
        x, y = x.double(), y.double()
        if vocab and x.dim() and x.shape[-1] == vocab:
            x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
        return bool(torch.allclose(x, y, atol=TOL, rtol=TOL, equal_nan=True))
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False
        return all(_same(a[k], b[k], ta, tb, vocab) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, ta, tb, vocab) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= TOL + TOL * abs(a)
    return a == b


def compare(ref_dir: Path, run_dir: Path, vocab: int | None = None) -> list[dict]:
    """Per cell: ``{"cell", "ref", "run", "verdict", "why"}``."""
    ref, tref = load(ref_dir)
    run, trun = load(run_dir)
    out = []
    for a, b in zip(ref["cells"], run["cells"]):
        entry = {"cell": a["cell"], "ref": a["status"], "run": b["status"]}
        if a["status"] != "ok":
            entry["verdict"] = "skipped" if a["status"] == "skipped" else "fails on reference"
        elif b["status"] != "ok":
            entry["verdict"] = "timeout" if b["status"] == "timeout" else "failed"
            entry["why"] = b.get("error", "")[:300]
        else:
            differ = [
                k
                for k in ("values", "plots", "result")
                for name in _keys(a.get(k))
                if not _same(_get(a.get(k), name), _get(b.get(k), name), tref, trun, vocab)
            ]
            entry["verdict"] = "same" if not differ else "differs"
            if differ:
                entry["why"] = ", ".join(_names(a, b, tref, trun, vocab))[:300]
        out.append(entry)
    return out


def _keys(block: Any) -> list[Any]:
    if isinstance(block, dict):
        return list(block)
    if isinstance(block, list):
        return list(range(len(block)))
    return [] if block is None else [None]


def _get(block: Any, key: Any) -> Any:
    if key is None:
        return block
    try:
        return block[key]
    except (KeyError, IndexError, TypeError):
        return None


def _names(a: dict, b: dict, ta: dict, tb: dict, vocab: int | None) -> list[str]:
    out = []
    for name in _keys(a.get("values")):
        if not _same(a["values"][name], _get(b.get("values"), name), ta, tb, vocab):
            out.append(name)
    if not _same(a.get("plots"), b.get("plots"), ta, tb, vocab):
        out.append("<plots>")
    if not _same(a.get("result"), b.get("result"), ta, tb, vocab):
        out.append("<result>")
    return out


def table(results: dict[tuple[str, str], list[dict]]) -> str:
    """Markdown: notebook x backend -> cells that ran on the reference, same / differs / failed /
    timed out."""
    head = "| notebook | backend | ran on reference | same numbers | differ | fail | timeout |"
    lines = [head, "|---" * 7 + "|"]
    for (notebook, backend), cells in results.items():
        ran = [c for c in cells if c["ref"] == "ok"]
        count = {v: sum(c["verdict"] == v for c in ran) for v in ("same", "differs", "failed", "timeout")}
        counts = " | ".join(str(count[v]) for v in ("same", "differs", "failed", "timeout"))
        counts = f"{len(ran)} | {counts}"
        lines.append(f"| {notebook} | {backend} | {counts} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ref_dir = Path(sys.argv[1])
    for run_dir in map(Path, sys.argv[2:]):
        print(f"== {run_dir}")
        for c in compare(ref_dir, run_dir, vocab=49152):
            if c["verdict"] not in ("same", "skipped", "fails on reference"):
                print(f"  cell {c['cell']}: {c['verdict']}: {c.get('why', '')}")
