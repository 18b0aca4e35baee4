"""Padded batches end to end: ``lm.tokenize`` batches through ``run_with_cache``, ``run_with_hooks``,
patching, subspace interventions and probes give each text's own unpadded numbers, left and right
padding, on wrap and bridge (and GPT-2's absolute positions on wrap); padding without a mask warns,
unpadded input never does."""

from __future__ import annotations

import warnings

import pytest
import torch

from hooked import lm
from hooked.protocol import cache_batch, run_with_hooks
from tests.lm.conftest import TEXTS

SIDES = ["left", "right"]
HOOKED = ["wrap", "bridge"]


def real(t, mask_row, side):
    """The real positions of one row of a padded [batch, pos, ...] tensor."""
    n = int(mask_row.sum())
    return t[-n:] if side == "left" else t[:n]


def alone(model, text, hooks=()):
    ids = lm.to_tokens(model, text)
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids, names_filter=list(hooks))
    return lm.logits_of(logits)[0], {h: cache[h][0] for h in hooks}


def test_tokenize_and_positions(tiny):
    model = tiny["wrap"]
    left = lm.tokenize(model, TEXTS)
    right = lm.tokenize(model, TEXTS, padding_side="right")
    lengths = torch.tensor([len(t.split()) for t in TEXTS])
    assert left["input_ids"].shape == right["input_ids"].shape == (4, int(lengths.max()))
    assert torch.equal(left["attention_mask"].sum(1), lengths) and torch.equal(
        right["attention_mask"].sum(1), lengths
    )
    assert torch.equal(lm.last_positions(left), torch.full((4,), int(lengths.max()) - 1))
    assert torch.equal(lm.last_positions(right), lengths - 1)
    assert torch.equal(lm.first_positions(left), lengths.max() - lengths)
    assert torch.equal(lm.first_positions(right), torch.zeros(4, dtype=torch.long))
    assert (left["input_ids"][left["attention_mask"] == 0] == lm.pad_id(model)).all()
    for row, text in enumerate(TEXTS):
        assert torch.equal(
            real(left["input_ids"][row], left["attention_mask"][row], "left"), lm.to_tokens(model, text)[0]
        )
    with_bos = lm.tokenize(model, TEXTS, bos=True, max_length=3)
    assert with_bos["input_ids"].shape[1] == 3 and (
        with_bos["input_ids"][:, -3:][with_bos["attention_mask"][:, -3:] == 1][0] == 1
    )
    assert torch.equal(lm.last_positions(left["input_ids"]), torch.full((4,), left["input_ids"].shape[1] - 1))
    with pytest.raises(ValueError, match="padding_side"):
        lm.tokenize(model, TEXTS, padding_side="middle")
    with pytest.raises(ValueError, match="no real token"):
        lm.last_positions(
            {"input_ids": left["input_ids"], "attention_mask": torch.zeros_like(left["input_ids"])}
        )
    with pytest.raises(ValueError, match=r"lm.tokenize\(model, texts\)"):
        lm.to_tokens(model, TEXTS)


@pytest.mark.parametrize("backend", HOOKED)
@pytest.mark.parametrize("side", SIDES)
def test_cache_and_logits_of_a_padded_batch_are_each_texts_own(tiny, backend, side):
    model = tiny[backend]
    hooks = lm.residual_hooks(model)
    batch = lm.tokenize(model, TEXTS, padding_side=side)
    with torch.no_grad():
        logits, cache = cache_batch(model, batch, hooks)  # a dict batch, passed as keywords
        hooked_logits = run_with_hooks(model, batch, [(hooks[1], lambda a, hook: a * 1.0)])
    logits = lm.logits_of(logits)
    torch.testing.assert_close(lm.logits_of(hooked_logits), logits)
    for row, text in enumerate(TEXTS):
        want_logits, want = alone(model, text, hooks)
        m = batch["attention_mask"][row]
        torch.testing.assert_close(real(logits[row], m, side), want_logits, atol=1e-5, rtol=1e-5)
        for h in hooks:
            torch.testing.assert_close(real(cache[h][row], m, side), want[h], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", SIDES)
def test_absolute_positions_get_each_rows_own(tiny_gpt2, side):
    """GPT-2 adds a position embedding: a left-padded row is right only with positions counted from
    its first real token, which the wrap backend derives from the mask."""
    model, hf = tiny_gpt2["wrap"], tiny_gpt2["hf"]
    batch = lm.tokenize(model, TEXTS, padding_side=side)
    with torch.no_grad():
        logits = model(**batch)
        plain = hf(**batch).logits  # the transformers forward alone counts from the padding
    for row, text in enumerate(TEXTS):
        want, _ = alone(model, text)
        torch.testing.assert_close(
            real(logits[row], batch["attention_mask"][row], side), want, atol=1e-5, rtol=1e-5
        )
    if side == "left":
        assert not torch.allclose(real(plain[1], batch["attention_mask"][1], side), alone(model, TEXTS[1])[0])
    assert lm.generate(model, TEXTS, 5) == [lm.generate(model, t, 5) for t in TEXTS]


@pytest.mark.parametrize("backend", HOOKED)
def test_padding_without_its_mask_warns_and_unpadded_input_never(tiny, backend):
    model = tiny[backend]
    left, right = lm.tokenize(model, TEXTS), lm.tokenize(model, TEXTS, padding_side="right")
    for batch, side in ((left, "left"), (right, "right")):
        with pytest.warns(lm.UnmaskedPaddingWarning, match=f"{side}-padded"):
            model(batch["input_ids"])
        with pytest.warns(lm.UnmaskedPaddingWarning):
            model.run_with_cache(batch["input_ids"], names_filter=lm.residual_hooks(model)[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(**left)  # with its mask: quiet
        same = lm.to_tokens(model, ["the cat sat", "a dog ran"])
        model(same)
        model(lm.tokenize(model, ["the cat sat", "a dog ran"])["input_ids"])  # no padding needed
        pad, eos, bos = 0, 2, 1
        model(torch.cat([same, torch.full((2, 1), eos)], dim=1))  # every row ends the same way
        model(torch.cat([torch.full((2, 1), pad), same], dim=1))  # every row starts the same way
        model(torch.cat([torch.full((2, 1), bos), same], dim=1))
        model(left["input_ids"][:1])  # one row: nothing to compare with
    with pytest.warns(lm.UnmaskedPaddingWarning):
        lm.generate(model, left["input_ids"], 2)


@pytest.mark.parametrize("backend", HOOKED)
@pytest.mark.parametrize("side", SIDES)
def test_patching_a_padded_batch_equals_patching_each_text(tiny, backend, side):
    from interventions.patching import patch

    model = tiny[backend]
    hook = lm.residual_hooks(model)[1]
    base_texts, source_texts = (
        TEXTS,
        ["one two three four", "the sun", "a big red car ran on the road", "it was"],
    )
    base = lm.tokenize(model, base_texts, padding_side=side)
    source = lm.tokenize(model, source_texts, padding_side=side)
    if side == "left":
        where, source_where = -1, None
    else:
        where, source_where = lm.last_positions(base), lm.last_positions(source)
    with torch.no_grad():
        got = lm.logits_of(patch(model, base, source, hook, where, source_position=source_where))
    last = lm.last_positions(base)
    wanted = []
    for b, s in zip(base_texts, source_texts):
        with torch.no_grad():
            one = patch(model, lm.to_tokens(model, b), lm.to_tokens(model, s), hook, -1)
        wanted.append(lm.logits_of(one)[0, -1])
    torch.testing.assert_close(got[torch.arange(4), last], torch.stack(wanted), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", HOOKED)
@pytest.mark.parametrize("side", SIDES)
def test_a_patching_sweep_of_a_padded_batch_is_the_mean_of_each_texts_sweep(tiny, backend, side):
    from interventions.patching import patching_sweep

    model = tiny[backend]
    hooks = lm.residual_hooks(model)[:2]
    base_texts = ["the cat sat on the mat", "a dog ran", "the big red house is in the old city", "we ran"]
    source_texts = ["a bird sat on a rug", "the cat sat", "a small blue car was on the new road", "they sat"]
    base = lm.tokenize(model, base_texts, padding_side=side)
    source = lm.tokenize(model, source_texts, padding_side=side)
    last = lm.last_positions(base)
    answer = 5

    def metric(out):  # the answer's logit at each row's last real token, for every patch's rows
        logits = lm.logits_of(out)
        return logits[torch.arange(logits.shape[0]), last.repeat(logits.shape[0] // len(last)), answer]

    # left padding: -1, -2 are each row's last two tokens; right: one index per row
    positions = [-1, -2] if side == "left" else [last, last - 1]
    grid = patching_sweep(model, base, source, hooks, metric, positions=positions, chunk=3)
    serial = patching_sweep(model, base, source, hooks, metric, positions=positions, batched=False)

    def one_metric(out):
        return lm.logits_of(out)[:, -1, answer]

    per_text = [
        patching_sweep(
            model, lm.to_tokens(model, b), lm.to_tokens(model, s), hooks, one_metric, positions=[-1, -2]
        )
        for b, s in zip(base_texts, source_texts)
    ]
    want = torch.stack(per_text).mean(0)
    torch.testing.assert_close(grid, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(serial, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", HOOKED)
@pytest.mark.parametrize("side", SIDES)
def test_subspace_interventions_on_a_padded_batch(tiny, backend, side):
    from interventions.intervention import InterventionBatch
    from interventions.subspace import DAS, FixedSubspace

    model = tiny[backend]
    hook = lm.residual_hooks(model)[1]
    source_texts = ["one two three four", "the sun", "a big red car ran on the road", "it was"]
    base = lm.tokenize(model, TEXTS, padding_side=side)
    source = lm.tokenize(model, source_texts, padding_side=side)
    where = -1 if side == "left" else lm.last_positions(base)
    source_where = None if side == "left" else lm.last_positions(source)
    basis = torch.linalg.qr(torch.randn(32, 4, generator=torch.Generator().manual_seed(0)))[0]
    last = lm.last_positions(base)
    for intervention in (FixedSubspace(basis), DAS(32, 1, 4, seed=0)):
        with torch.no_grad():
            out = intervention.run(
                model,
                hook,
                InterventionBatch(base, None, source),
                position=where,
                source_position=source_where,
            )
            got = lm.logits_of(out)[torch.arange(4), last]
            want = torch.stack(
                [
                    lm.logits_of(
                        intervention.run(
                            model,
                            hook,
                            InterventionBatch(lm.to_tokens(model, b), None, lm.to_tokens(model, s)),
                            position=-1,
                        )
                    )[0, -1]
                    for b, s in zip(TEXTS, source_texts)
                ]
            )
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # the identity when the source is the base itself
        with torch.no_grad():
            same = intervention.run(
                model, hook, InterventionBatch(base, None, source_index=torch.arange(4)), position=where
            )
            plain = model(**base)
        torch.testing.assert_close(
            lm.logits_of(same)[torch.arange(4), last],
            lm.logits_of(plain)[torch.arange(4), last],
            atol=1e-5,
            rtol=1e-5,
        )


@pytest.mark.parametrize("backend", HOOKED)
@pytest.mark.parametrize("side", SIDES)
def test_probe_features_of_a_padded_batch_are_each_texts_own(tiny, backend, side):
    from analyses.probes import hook_features, layer_probes, resolve_labels

    model = tiny[backend]
    hooks = lm.residual_hooks(model)[1:3]
    texts = TEXTS[:3] + ["we ran"]  # two tokens at least: pool -2 exists in every row
    batch = lm.tokenize(model, texts, padding_side=side)
    feats = hook_features(model, batch, hooks, pools=["last", "mean", 0, -2], batch_size=3)
    for row, text in enumerate(texts):
        _, acts = alone(model, text, hooks)
        for k, h in enumerate(hooks):
            a = acts[h]
            torch.testing.assert_close(feats["last"][k, row], a[-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(feats["mean"][k, row], a.mean(0), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(feats[0][k, row], a[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(feats[-2][k, row], a[-2], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="position -2 is past the real tokens of rows"):
        hook_features(model, lm.tokenize(model, TEXTS, padding_side=side), hooks, pools=[-2])
    first_words = resolve_labels("input:0", model, [batch])
    assert first_words.tolist() == [lm.token_id(model, t.split()[0]) for t in texts]
    outputs = resolve_labels("output", model, [batch])
    assert outputs.tolist() == [int(alone(model, t)[0][-1].argmax()) for t in texts]
    texts = TEXTS * 3
    labels = torch.tensor([0, 1, 0, 1] * 3)
    result = layer_probes(
        model, lm.tokenize(model, texts, padding_side=side), labels, hooks, folds=3, batch_size=5
    )
    assert result.info["n_texts"] == 12 and result.results["mean over tokens"].accuracy.shape == (2,)


# ---------------------------------------------------------------------- SmolLM2 (slow)
@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.parametrize("backend", HOOKED)
@pytest.mark.parametrize("side", SIDES)
def test_smollm2_padded_batch_equals_each_prompt(smol, backend, side):
    from interventions.patching import patch

    model = smol[backend]
    texts = ["The Eiffel Tower is in the city of", "Rome is the capital of", "Hello"]
    hook = lm.residual_hooks(model)[12]
    batch = lm.tokenize(model, texts, padding_side=side)
    last = lm.last_positions(batch)
    with torch.no_grad():
        logits = lm.logits_of(model(**batch))[torch.arange(3), last]
        patched = lm.logits_of(patch(model, batch, batch, hook, last))[torch.arange(3), last]
        for row, text in enumerate(texts):
            want = lm.logits_of(model(lm.to_tokens(model, text)))[0, -1]
            torch.testing.assert_close(logits[row], want, atol=2e-3, rtol=1e-4)
        torch.testing.assert_close(patched, logits, atol=2e-3, rtol=1e-4)
    with pytest.warns(lm.UnmaskedPaddingWarning):
        model(batch["input_ids"])
