"""Rerun every notebook on TransformerLens's bridge and both backends; refresh ``expected.json`` and
the counts table of docs/guide/transformerlens.md.

Usage (from the repository root)::

    python -m tests.lm.tutorials.refresh [--out DIR] [--reuse] [--cell-timeout S] [NOTEBOOK ...]

Each notebook runs (``runner.py``, one fresh process each, TransformerLens's CI settings, under
``nice -n 5``) on the small random Llama of ``models.py``: on TransformerLens 4.3's own bridge (the
reference), then on ``wrap`` and ``bridge``; ``compare.py`` compares each with the reference. Then
``expected.json`` lists, per notebook and backend, the cells with the reference's numbers (what
``test_tutorials.py`` guards), the table between the ``tutorial-counts`` markers of the guide is
rewritten, and ``DIR/report.md`` lists every cell that differs or fails with the reason. Runs are
kept in ``DIR`` (default ``/tmp/hooked-tutorials``); ``--reuse`` keeps finished runs found there
(only the reference's: the backends always rerun, since they are what changed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.lm.tutorials.compare import compare, table
from tests.lm.tutorials.models import small_llama
from tests.lm.tutorials.runner import CELL_TIMEOUT, FIXTURE

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
EXPECTED = HERE / "expected.json"
GUIDE = ROOT / "docs" / "guide" / "transformerlens.md"
BACKENDS = ("wrap", "bridge")
VOCAB = 49152
START, END = "<!-- tutorial-counts -->", "<!-- /tutorial-counts -->"


def notebooks() -> list[str]:
    return list(json.loads(FIXTURE.read_text())["notebooks"])


def run(notebook: str, backend: str, model: Path, out: Path, cell_timeout: float) -> float:
    """One run of ``runner.py`` in a fresh process; returns its seconds."""
    start = time.perf_counter()
    cmd = ["nice", "-n", "5", sys.executable, "-m", "tests.lm.tutorials.runner", notebook, backend]
    cmd += [str(model), str(out), "--ci", "--cell-timeout", str(cell_timeout)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{notebook} on {backend} stopped ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def finished(folder: Path) -> bool:
    record = folder / "record.json"
    return record.is_file() and json.loads(record.read_text()).get("finished", False)


def write_table(markdown: str) -> None:
    text = GUIDE.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{GUIDE} has no {START} ... {END} markers around the counts table")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    GUIDE.write_text(f"{before}{START}\n{markdown}\n{END}{after}")


def main(argv: list[str]) -> int:
    out, reuse, cell_timeout, chosen = Path("/tmp/hooked-tutorials"), False, CELL_TIMEOUT, []
    args = iter(argv)
    for a in args:
        if a == "--out":
            out = Path(next(args))
        elif a == "--reuse":
            reuse = True
        elif a == "--cell-timeout":
            cell_timeout = float(next(args))
        elif a.startswith("-"):
            print(__doc__, file=sys.stderr)
            return 2
        else:
            chosen.append(a)
    names = chosen or notebooks()
    model = small_llama(out / "small-llama")
    results: dict[tuple[str, str], list[dict]] = {}
    expected = json.loads(EXPECTED.read_text()) if EXPECTED.is_file() else {}
    report = ["# Cells that differ from TransformerLens or fail\n"]
    for notebook in names:
        ref = out / notebook / "transformer_lens"
        if not (reuse and finished(ref)):
            seconds = run(notebook, "transformer_lens", model, ref, cell_timeout)
            print(f"{notebook} on transformer_lens: {seconds:.0f} s")
        expected[notebook] = {}
        for backend in BACKENDS:
            folder = out / notebook / backend
            print(f"{notebook} on {backend}: {run(notebook, backend, model, folder, cell_timeout):.0f} s")
            cells = compare(ref, folder, vocab=VOCAB)
            results[(notebook, backend)] = cells
            expected[notebook][backend] = sorted(c["cell"] for c in cells if c["verdict"] == "same")
            report.append(f"\n## {notebook} on {backend}\n")
            for c in cells:
                if c["verdict"] in ("differs", "failed", "timeout"):
                    report.append(f"- cell {c['cell']}: {c['verdict']}: {c.get('why', '')}")
    counts = table(results)
    EXPECTED.write_text(json.dumps(dict(sorted(expected.items())), indent=1) + "\n")
    if not chosen:
        write_table(counts)
    (out / "report.md").write_text("\n".join(report) + "\n")
    print(counts)
    print(f"expected.json refreshed; cells that differ or fail: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
