"""A user's route on SmolLM2-135M, end to end (slow): harvest the residual stream of Wikipedia text
into a store, train a TopK dictionary on it, evaluate it on held-out text, splice it in and steer
a feature while generating. The numbers are checked against what a hand computation and a working
dictionary must give: L0 = k, explained variance well above 0 and the loss recovered well above a
random dictionary's, the clean logits with the error term, and steering that moves the activation
by ``alpha * W_dec[i]``."""

from __future__ import annotations

import json
import time

import pytest
import torch

import hooked.sae as S
from hooked import lm, store
from hooked.sae.texts import wiki_texts

HOOK = "model.layers.10.hook_out"


@pytest.mark.slow
@pytest.mark.smollm2
def test_train_evaluate_splice_and_steer_on_smollm2(tmp_path):
    model = lm.load("smollm2-135m", backend="wrap")
    texts = wiki_texts("train", 96)
    batches = [
        lm.tokenize(model, texts[i : i + 8], padding_side="right", max_length=64) for i in range(0, 96, 8)
    ]
    started = time.perf_counter()
    store.harvest(model, batches, [HOOK], tmp_path / "acts", progress=False)
    harvested = time.perf_counter() - started
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert store.manifest_of(tmp_path / "acts")["rows"] == tokens  # one row per real token

    started = time.perf_counter()
    sae = S.train(
        tmp_path / "acts", HOOK, kind="topk", width=8 * 576, k=32, steps=300, batch_size=512,
        out=tmp_path / "run", progress=False,
    )  # fmt: skip
    trained = time.perf_counter() - started
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["explained_variance"] > metrics[0]["explained_variance"]

    heldout = wiki_texts("heldout", 24)
    result = S.evaluate(model, sae, heldout, batch_size=8, max_length=64)
    summary = result["summary"]
    random = S.evaluate(model, S.SAE(576, 8 * 576, "topk", k=32, hook=HOOK, seed=0), heldout, max_length=64)
    print(
        f"\nSmolLM2-135M {HOOK}: {tokens} tokens harvested in {harvested:.1f} s, trained 300 steps x 512 "
        f"in {trained:.1f} s; held-out {summary['tokens']} tokens: EV {summary['explained_variance']:.3f}, "
        f"L0 {summary['l0']:.1f}, dead {summary['dead_fraction']:.3f}, CE clean {summary['ce_clean']:.3f} "
        f"spliced {summary['ce_spliced']:.3f} zero {summary['ce_zero_ablation']:.3f}, loss recovered "
        f"{summary['loss_recovered']:.3f} (random dictionary: {random['summary']['loss_recovered']:.3f})"
    )
    assert summary["l0"] == pytest.approx(32, abs=0.5)  # TopK: k features per token (a few ties at 0)
    assert summary["explained_variance"] > 0.5
    assert summary["loss_recovered"] > 0.5 > random["summary"]["loss_recovered"]

    ids = lm.to_tokens(model, "The Eiffel Tower is in Paris")
    feature = S.feature_name(HOOK)
    with torch.no_grad():
        clean, cache = model.run_with_cache(ids, names_filter=[HOOK])
        with S.spliced(model, {HOOK: sae}) as m:
            spliced, spliced_cache = m.run_with_cache(ids, names_filter=[feature])
            i = int(spliced_cache[feature][0, -1].argmax())
            steered = m.run_with_hooks(ids, fwd_hooks=[(feature, S.steer(i, 8.0))])
            generated = lm.generate(m, "My favourite city is", 8, fwd_hooks=[(feature, S.steer(i, 8.0))])

        def push(a, hook):
            return a + 8.0 * sae.W_dec[i]

        by_hand = model.run_with_hooks(ids, fwd_hooks=[(HOOK, push)])
        generated_by_hand = lm.generate(model, "My favourite city is", 8, fwd_hooks=[(HOOK, push)])
        plain = lm.generate(model, "My favourite city is", 8)
    print(f"steering feature {i} by 8: {generated!r} (unsteered: {plain!r})")
    torch.testing.assert_close(lm.logits_of(spliced), lm.logits_of(clean), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(spliced_cache[feature], sae.encode(cache[HOOK]))
    torch.testing.assert_close(lm.logits_of(steered), lm.logits_of(by_hand), atol=1e-3, rtol=1e-4)
    assert generated == generated_by_hand  # greedy: the same tokens as the edit by hand
