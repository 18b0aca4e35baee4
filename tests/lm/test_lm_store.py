"""Activation stores of a real language model: the TransformerLens bridge and ``hooked harvest
--data texts.txt`` on SmolLM2-135M (slow: loading and booting the bridge take seconds)."""

from __future__ import annotations

import pytest
import torch

from hooked import lm, store

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]

TEXTS = [
    "The Eiffel Tower is in the city of Paris, which",
    "The Colosseum is in the city of Rome, and it",
    "Mount Fuji is the highest mountain in Japan and",
]


def test_bridge_store_equals_its_cache(tmp_path):
    model = lm.load("smollm2-135m", backend="bridge")
    tokens = lm.to_tokens(model, TEXTS, length=8)
    hooks = ["blocks.3.hook_resid_post", "blocks.20.mlp.hook_post"]
    out = store.harvest(model, tokens.split(2), hooks, tmp_path / "s", progress=False)
    ds = store.open(out)
    assert ds.num_rows == 24 and ds["position"][:8].tolist() == list(range(8))
    _, cache = model.run_with_cache(tokens, names_filter=hooks)
    for h in hooks:
        torch.testing.assert_close(ds[h][:], cache[h].reshape(24, -1), atol=1e-5, rtol=1e-5)


def test_harvest_command_reads_a_text_file(tmp_path):
    from hooked.cli import main

    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n\nshort\n")  # a text shorter than --length
    argv = [
        "harvest",
        "--model",
        "smollm2-135m",
        "--model-backend",
        "wrap",
        "--hooks",
        "model.layers.5.hook_out",
    ]
    argv += ["--data", str(tmp_path / "texts.txt"), "--length", "6", "--batch-size", "2", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 0
    ds = store.open(tmp_path / "s")
    model = lm.load("smollm2-135m", backend="wrap")
    hook = "model.layers.5.hook_out"
    texts = [*TEXTS, "short"]
    batches = [lm.tokenize(model, texts[i : i + 2], padding_side="right", max_length=6) for i in (0, 2)]
    want = torch.cat(
        [model.run_with_cache(**b, names_filter=[hook])[1][hook][b["attention_mask"].bool()] for b in batches]
    )  # the same padded batches of 2 texts, real tokens only
    n_short = len(lm.to_tokens(model, "short")[0])
    assert ds.num_rows == 18 + n_short and torch.equal(ds["sequence"][:].unique(), torch.arange(4))
    assert ds["position"][18:].tolist() == list(range(n_short))
    torch.testing.assert_close(ds[hook][:], want)
