"""Evaluating a dictionary on a language model: every number of the summary against a hand
computation (explained variance, L0, cross-entropies clean / spliced / zero-ablated, loss
recovered), and ``features.json`` in the format the feature pages read."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import hooked.sae as S
from hooked import lm
from hooked.sae.evaluation import FEATURES_FORMAT, evaluate, write_features
from tests.lm.conftest import save_tiny

TEXTS = [
    "the cat sat on the mat and the dog ran to the house",
    "a big red bird is in the old tree",
    "we ran up the road to the city",
    "one two three four five six seven eight nine ten",
    "the sun and the moon and the star",
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def wrapped(tiny_folder):
    return lm.load(tiny_folder, backend="wrap")


def _sae(seed=0):
    sae = S.SAE(32, 48, "topk", k=6, hook="model.layers.0.hook_out", seed=seed)
    with torch.no_grad():
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(seed))
    return sae.requires_grad_(False)


def _hand(model, sae, texts):
    hook = sae.hook
    sq, ysq, ysum, n, active = 0.0, 0.0, torch.zeros(32, dtype=torch.float64), 0, 0.0
    ce = {"clean": [0.0, 0], "spliced": [0.0, 0], "zero": [0.0, 0]}
    fired = torch.zeros(48)
    with torch.no_grad():
        for text in texts:  # one text at a time: no padding at all
            ids = lm.to_tokens(model, text)
            out, cache = model.run_with_cache(ids, names_filter=[hook])
            x = cache[hook][0]
            err = (sae(x) - x).double()
            sq += float(err.pow(2).sum())
            ysq += float(x.double().pow(2).sum())
            ysum += x.double().sum(0)
            n += x.shape[0]
            acts = sae.encode(x)
            active += float((acts > 0).sum())
            fired += (acts > 0).sum(0)
            for key, hooks in (
                ("clean", []),
                ("spliced", [(hook, lambda a, hook: sae(a))]),
                ("zero", [(hook, lambda a, hook: torch.zeros_like(a))]),
            ):
                logits = lm.logits_of(model.run_with_hooks(ids, fwd_hooks=hooks))[0]
                loss = F.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum")
                ce[key][0] += float(loss)
                ce[key][1] += ids.shape[1] - 1
    variance = ysq - float(ysum.pow(2).sum()) / n
    mean = {k: v[0] / v[1] for k, v in ce.items()}
    return {
        "explained_variance": 1 - sq / variance,
        "l0": active / n,
        "tokens": n,
        "ce_clean": mean["clean"],
        "ce_spliced": mean["spliced"],
        "ce_zero_ablation": mean["zero"],
        "loss_recovered": (mean["zero"] - mean["spliced"]) / (mean["zero"] - mean["clean"]),
        "density": fired / n,
    }


def test_the_summary_equals_a_hand_computation(wrapped):
    sae = _sae()
    got = evaluate(wrapped, sae, TEXTS, batch_size=2)  # padded batches of two texts
    want = _hand(wrapped, sae, TEXTS)
    summary = got["summary"]
    assert summary["tokens"] == want["tokens"]
    for key in ("explained_variance", "l0", "ce_clean", "ce_spliced", "ce_zero_ablation", "loss_recovered"):
        assert summary[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
    assert summary["dead_fraction"] == pytest.approx(float((want["density"] == 0).float().mean()))
    dens = {f["index"]: f["density"] for f in got["features"]["features"]}
    for i, d in enumerate(want["density"].tolist()):
        assert dens.get(i, 0.0) == pytest.approx(d)


def test_features_json_has_the_shared_format(wrapped, tmp_path):
    sae = _sae(seed=1)
    result = evaluate(
        wrapped, sae, TEXTS, batch_size=3, top_contexts=4, context=(3, 2), promoted=5, model_name="tiny"
    )
    feats = result["features"]
    assert feats["format"] == FEATURES_FORMAT and feats["hook"] == sae.hook and feats["model"] == "tiny"
    assert feats["n_tokens"] == result["summary"]["tokens"]
    W_U = wrapped.module.lm_head.weight.detach()
    for f in feats["features"]:
        i = f["index"]
        assert f["density"] > 0
        ctx = f["top_contexts"]
        assert 1 <= len(ctx) <= 4
        tops = [c["activations"][c["max_position"]] for c in ctx]
        assert tops == sorted(tops, reverse=True)
        assert tops[0] == pytest.approx(f["max_activation"])
        for c in ctx:
            assert len(c["tokens"]) == len(c["activations"]) <= 6
        assert max(ctx[0]["activations"]) == pytest.approx(tops[0])  # the top context holds the maximum
        h = f["histogram"]
        assert len(h["edges"]) == len(h["counts"]) + 1 and h["edges"][-1] == pytest.approx(
            f["max_activation"]
        )
        assert sum(h["counts"]) == round(f["density"] * feats["n_tokens"])
        want = (sae.W_dec[i] @ W_U.T).topk(5)
        assert [p["logit"] for p in f["promoted"]] == pytest.approx(want.values.tolist(), rel=1e-5)
        assert [p["token"] for p in f["promoted"]] == [
            wrapped.tokenizer.decode([t]) for t in want.indices.tolist()
        ]
        assert f["suppressed"][0]["logit"] == pytest.approx(float((sae.W_dec[i] @ W_U.T).min()), rel=1e-5)
    # the context of a feature's top activation holds the tokens around it, as the text has them
    first = feats["features"][0]
    c = first["top_contexts"][0]
    joined = " ".join(t.strip() for t in c["tokens"])
    assert any(joined in text for text in TEXTS)
    path = write_features({**feats, "extra": math.nan}, tmp_path / "features.json")
    assert json.loads(path.read_text())["extra"] is None  # JSON has no NaN: null


def test_the_command_line_evaluates_a_run(tiny_folder, wrapped, tmp_path):
    from hooked.cli import main

    S.save(_sae(), tmp_path / "dictionary")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "eval"
    argv = [
        "sae",
        "eval",
        "--model",
        str(tiny_folder),
        "--model-backend",
        "wrap",
        "--sae",
        str(tmp_path / "dictionary"),
        "--data",
        str(tmp_path / "texts.txt"),
        "--out",
        str(out),
        "--no-progress",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "result.json").read_text())["dictionaries"]["dictionary"]
    want = _hand(wrapped, _sae(), TEXTS)
    assert summary["loss_recovered"] == pytest.approx(want["loss_recovered"], rel=1e-4)
    assert json.loads((out / "features.json").read_text())["format"] == FEATURES_FORMAT
    assert main(argv) == 2  # a finished evaluation is not replaced without --overwrite


def test_the_feature_page_shows_what_the_evaluation_wrote(wrapped, tmp_path):
    # the file `hooked sae eval` writes, read by the view as a user would: every feature's numbers,
    # histogram, contexts and promoted tokens reach the page unchanged
    from hooked import views

    result = evaluate(
        wrapped, _sae(seed=2), TEXTS, batch_size=2, top_contexts=3, promoted=4, model_name="tiny"
    )
    path = write_features(result["features"], tmp_path / "features.json")
    written = json.loads(path.read_text())["features"]
    assert written
    view = views.feature_page(path)  # every feature in the file
    assert view.title == "SAE features at model.layers.0.hook_out (tiny)"
    kinds = [p["type"] for p in view.panels]
    assert kinds.count("stats") == kinds.count("histogram") == kinds.count("text") == len(written)
    assert kinds.count("bars") == 2 * len(written)  # promoted and suppressed
    for f in written:
        panels = views.feature_page(path, f["index"]).panels
        stats = dict(map(tuple, panels[0]["items"]))
        assert stats["feature"] == f["index"] and stats["tokens evaluated"] == result["summary"]["tokens"]
        assert stats["density (fraction of tokens active)"] == f["density"]
        assert stats["max activation"] == f["max_activation"]
        (hist,) = [p for p in panels if p["type"] == "histogram"]
        assert hist["counts"]["v"] == f["histogram"]["counts"]
        assert hist["edges"]["v"] == pytest.approx(f["histogram"]["edges"], rel=1e-6)
        (text,) = [p for p in panels if p["type"] == "text"]
        assert [r["tokens"] for r in text["rows"]] == [c["tokens"] for c in f["top_contexts"]]
        for row, c in zip(text["rows"], f["top_contexts"]):
            assert row["values"]["v"] == pytest.approx(c["activations"], rel=1e-6)
        promoted, suppressed = [p for p in panels if p["type"] == "bars"]
        assert promoted["labels"] == [p["token"] for p in f["promoted"]]
        assert promoted["values"]["v"] == pytest.approx([p["logit"] for p in f["promoted"]], rel=1e-6)
        assert suppressed["values"]["v"] == pytest.approx([p["logit"] for p in f["suppressed"]], rel=1e-6)
    page = view.save(tmp_path / "features.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
