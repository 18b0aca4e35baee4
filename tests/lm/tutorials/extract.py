"""Extract the code cells of TransformerLens's demo notebooks into ``notebooks.json`` (test data).

Usage: ``python -m tests.lm.tutorials.extract GIT_DIR COMMIT`` with ``GIT_DIR`` a clone of
https://github.com/TransformerLensOrg/TransformerLens (a bare one works). Only the code cells are
kept, each as one string, in notebook order. The model-loading lines that the tests change (the
notebooks download GPT-2 and other models; offline, the tests load SmolLM2-135M) are listed in
``ADAPTATIONS`` and stored with the cells, so that the record says exactly what differs from the
original notebook. ``{load}`` in a replacement stands for the loading call of the backend under test
(``lm.load(MODEL, backend=BACKEND)``, or TransformerLens's own bridge for the reference run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = "https://github.com/TransformerLensOrg/TransformerLens"
NOTEBOOKS = {
    "Main_Demo": "demos/Main_Demo.ipynb",
    "Exploratory_Analysis_Demo": "demos/Exploratory_Analysis_Demo.ipynb",
    "Activation_Patching_in_TL_Demo": "demos/Activation_Patching_in_TL_Demo.ipynb",
    "Attribution_Patching_Demo": "demos/Attribution_Patching_Demo.ipynb",
}
# (notebook, cell, the original text, its replacement): the model-loading calls, nothing else
ADAPTATIONS = [
    ("Main_Demo", 8, 'TransformerBridge.boot_transformers("openai-community/gpt2", device=device)', "{load}"),
    ("Main_Demo", 21, 'TransformerBridge.boot_transformers("distilgpt2", device=device)', "{load}"),
    ("Exploratory_Analysis_Demo", 4, 'TransformerBridge.boot_transformers("gpt2")', "{load}"),
    ("Activation_Patching_in_TL_Demo", 7, 'TransformerBridge.boot_transformers("gpt2")', "{load}"),
    ("Activation_Patching_in_TL_Demo", 18, 'HookedTransformer.from_pretrained("attn-only-2l")', "{load}"),
    ("Attribution_Patching_Demo", 6, 'TransformerBridge.boot_transformers("gpt2", device="cpu")', "{load}"),
    (
        "Attribution_Patching_Demo",
        37,
        'TransformerBridge.boot_transformers("gpt2-xl", device="cpu")',
        "{load}",
    ),
]


def code_cells(git_dir: Path, commit: str, path: str) -> list[str]:
    text = subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cells = json.loads(text)["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def extract(git_dir: Path, commit: str) -> dict:
    notebooks = {
        name: {"path": path, "cells": code_cells(git_dir, commit, path)} for name, path in NOTEBOOKS.items()
    }
    for name, cell, old, _new in ADAPTATIONS:
        if old not in notebooks[name]["cells"][cell]:
            raise ValueError(f"{name} cell {cell} does not contain {old!r}")
    return {
        "source": {"repository": REPOSITORY, "commit": commit},
        "note": "code cells of TransformerLens's demo notebooks, unchanged; the tests apply only the "
        "adaptations listed (model loading)",
        "adaptations": [{"notebook": n, "cell": c, "old": o, "new": w} for n, c, o, w in ADAPTATIONS],
        "notebooks": notebooks,
    }


if __name__ == "__main__":
    git_dir, commit = Path(sys.argv[1]), sys.argv[2]
    out = Path(__file__).with_name("notebooks.json")
    out.write_text(json.dumps(extract(git_dir, commit), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
