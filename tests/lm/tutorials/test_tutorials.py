"""TransformerLens's demo notebooks on both backends, against TransformerLens 4.3's own bridge (slow).

Each notebook runs (``runner.py``, one fresh process per run, TransformerLens's CI settings) on the
small random Llama of ``models.py`` with SmolLM2's tokenizer: once on TransformerLens's own
``TransformerBridge`` (the reference), once per backend of ``hooked.lm.load``. ``expected.json``
lists, per notebook and backend, the cells that run with the reference's numbers
(``compare.py``); a test fails when one of them no longer does (cells that start to match are
printed). ``python -m tests.lm.tutorials.refresh`` reruns everything and rewrites the list and
the table in docs/guide/transformerlens.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lm.tutorials.compare import compare
from tests.lm.tutorials.models import small_llama
from tests.lm.tutorials.runner import CELL_TIMEOUT

HERE = Path(__file__).parent
EXPECTED = json.loads((HERE / "expected.json").read_text())
ROOT = HERE.parents[2]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return small_llama(tmp_path_factory.mktemp("small-llama"))


def run(notebook: str, backend: str, model: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "tests.lm.tutorials.runner", notebook, backend, str(model), str(out), "--ci"]
        + ["--cell-timeout", str(CELL_TIMEOUT)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted(EXPECTED))
def test_notebook_cells_match_transformer_lens(notebook, model_folder, tmp_path):
    ref = run(notebook, "transformer_lens", model_folder, tmp_path / "reference")
    for backend, want in EXPECTED[notebook].items():
        cells = compare(ref, run(notebook, backend, model_folder, tmp_path / backend), vocab=49152)
        same = sorted(c["cell"] for c in cells if c["verdict"] == "same")
        lost = sorted(set(want) - set(same))
        assert not lost, f"{notebook} on {backend}: cells {lost} no longer match TransformerLens: " + str(
            [c for c in cells if c["cell"] in lost]
        )
        print(f"{notebook} on {backend}: cells {sorted(set(same) - set(want))} now match too")
