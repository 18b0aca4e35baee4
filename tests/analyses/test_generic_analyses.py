"""Generic analyses run on every registered model through the command line, at that model's hooks.

The promise of the project: an analysis written once against hook names runs on all models. Here
``hooked run spotlight`` runs on each registered model (all but the embedded LM, which has its own
tests) at its last hook point, and must produce counts over real activations of that hook.
"""

from __future__ import annotations

import json

import pytest

from hooked import cli
from hooked.registry import entries

CHEAP = [name for name in entries("model") if name != "smollm2-135m"]


def test_every_builtin_model_is_covered():
    assert {"toy-relu", "repeat-gru", "repeat-lstm", "tiny-llama", "digits-ae", "zoo-lstm"} <= set(CHEAP)
    assert "spotlight" in entries("analysis")


@pytest.mark.parametrize("model_name", CHEAP)
def test_spotlight_runs_on_every_model(model_name, tmp_path, capsys):
    model, _ = entries("model")[model_name].call()
    hook = list(model.hook_dict)[-1]
    out = tmp_path / "run"
    code = cli.main(
        [
            "run",
            "spotlight",
            "--model",
            model_name,
            "--hook",
            hook,
            "--max-planes",
            "40",
            "--n-angles",
            "16",
            "--null-bases",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "result.json").read_text())
    assert (record["model"], record["hook"]) == (model_name, hook)
    srm = record["result"]["srm"]
    assert srm["n"] > 0 and srm["n_planes"] <= 40 and srm["n_angles"] == len(srm["mean"]) == 16
    assert record["result"]["alignment"]["verdict"] in {
        "aligned",
        "anti-aligned",
        "basis-locked",
        "isotropic",
        "empty",
    }
    assert (out / "spotlight.png").stat().st_size > 0
