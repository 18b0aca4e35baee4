"""Subspace interventions on a language model (tiny-llama: random weights, no download).

The generic interventions (``interventions.subspace``) at one position of the residual stream:
identity when source == base, full rank == activation patching, fixed bases with known answers,
pairs with different answers, IIA with known answers, and a DAS fit that learns.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooked import lm
from interventions.intervention import InterventionBatch
from interventions.patching import patch
from interventions.subspace import DAS, FixedSubspace
from papers.lm.facts import Facts, interchange_rows, split_by_city
from papers.lm.subspace import (
    Site,
    class_mean_basis,
    eval_batches,
    interchange_accuracy,
    interchange_batch,
    pca_basis,
    random_basis,
    source_answer_loss,
    subspace_site,
    train_sampler,
)


@pytest.fixture(scope="module")
def tiny():
    from hooked.models.lm import tiny_llama

    model, _ = tiny_llama(layers=2, d_model=32, vocab=64, seed=0)
    return model


def tiny_facts(model, n=24, seq=6, seed=0) -> Facts:
    """Random prompts whose 'answer' is the tiny model's own top-1 next token (so it 'knows' them)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 64, (n, seq), generator=g)
    with torch.no_grad():
        answers = lm.logits_of(model(tokens))[:, -1].argmax(-1)
    values, labels = torch.unique(answers, return_inverse=True)
    return Facts(
        tokens,
        answers,
        labels,
        [f"s{i}" for i in range(n)],
        [str(v) for v in values.tolist()],
        subject_position=2,
    )


@pytest.mark.parametrize("position", [2, 5])
def test_subspace_interventions_are_the_identity_when_source_is_base(tiny, position):
    tokens = torch.randint(0, 64, (5, 6), generator=torch.Generator().manual_seed(1))
    hook = lm.residual_hooks(tiny)[1]
    with torch.no_grad():
        want = tiny(tokens)
    batch = InterventionBatch(
        base=tokens, target=None, source_index=torch.arange(5)
    )  # each row its own source
    for intervention in (
        DAS(32, 1, 8, seed=3),
        FixedSubspace(random_basis(32, 5, seed=2)),
        FixedSubspace(torch.eye(32)),
    ):
        with torch.no_grad():
            got = intervention.run(tiny, hook, batch, position=position)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_full_rank_subspace_patching_equals_activation_patching(tiny):
    facts = tiny_facts(tiny)
    base, source = interchange_rows(facts.labels, 1, torch.Generator().manual_seed(0))
    for hook in lm.residual_hooks(tiny):
        for position in (1, 2, 5):
            want = patch(tiny, facts.tokens[base], facts.tokens[source], hook, position)
            # the same patch through the generic intervention: full-rank basis, sources as rows of the
            # same batch
            prompts = torch.cat([torch.arange(len(facts)), base])
            index = torch.cat([torch.arange(len(facts)), source])
            batch = interchange_batch(facts, prompts, index)
            with torch.no_grad():
                got = FixedSubspace(torch.eye(32)).run(tiny, hook, batch, position=position)[len(facts) :]
                rotated = FixedSubspace(random_basis(32, 32, seed=5)).run(
                    tiny, hook, batch, position=position
                )[len(facts) :]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(rotated, want, atol=1e-4, rtol=1e-4)  # any full-rank basis is the same


def test_full_patching_at_the_last_residual_gives_the_source_answer(tiny):
    facts = tiny_facts(tiny)
    hooks = lm.residual_hooks(tiny)
    batches = eval_batches(
        facts, partners=3, seed=0, batch_size=40
    )  # several batches, each with every prompt once
    assert len(batches) > 1
    full = interchange_accuracy(tiny, FixedSubspace(torch.eye(32)), Site(hooks[-1], 5), batches)
    assert full.n == 3 * len(facts)
    assert full.iia == 1.0 and full.kept == 0.0  # the last position after the last layer decides the output
    none = interchange_accuracy(tiny, FixedSubspace(torch.eye(32)), Site(hooks[-1], 2), batches)
    assert (
        none.iia == 0.0 and none.kept == 1.0
    )  # after the last layer, other positions no longer reach the output


def test_pca_and_class_mean_bases_known_answers():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    x = 0.1 * torch.randn(300, 10, generator=g)
    x[:, 4] += 5 * torch.randn(300, generator=g)  # the direction of largest variance: e4 ...
    for c in range(3):  # ... with the same mean in every class
        x[labels == c, 4] -= x[labels == c, 4].mean()
    x[:, 7] += 3.0 * (labels == 1).float() - 3.0 * (labels == 2).float()  # the classes differ along e7 and e2
    x[:, 2] += 2.0 * (labels == 0).float()
    p = pca_basis(x, 1)
    assert p.shape == (10, 1) and abs(float(p[4, 0])) > 0.99
    m = class_mean_basis(x, labels, 2)
    torch.testing.assert_close(m.T @ m, torch.eye(2), atol=1e-5, rtol=0)
    assert float((m[[2, 7]] ** 2).sum()) > 1.99  # spans e2 and e7
    more = class_mean_basis(x, labels, 3)  # beyond C - 1 = 2: completed by the top principal direction left
    assert abs(float(more[4, 2])) > 0.99
    r = random_basis(10, 4, seed=1)
    torch.testing.assert_close(r.T @ r, torch.eye(4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="rank must be in"):
        pca_basis(x, 11)


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(1, 5), min_size=2, max_size=6),
    partners=st.integers(1, 3),
    seed=st.integers(0, 99),
)
def test_interchange_rows_pair_different_labels(counts, partners, seed):
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    base, source = interchange_rows(labels, partners, torch.Generator().manual_seed(seed))
    assert base.tolist() == list(range(len(labels))) * partners
    assert bool((labels[base] != labels[source]).all())


def test_interchange_rows_refuses_one_label():
    with pytest.raises(ValueError, match="another label"):
        interchange_rows(torch.zeros(4, dtype=torch.long))


def test_split_by_city_is_stratified_and_disjoint(tiny):
    facts = tiny_facts(tiny, n=40)
    train, test = split_by_city(facts, 0.3, seed=0)
    assert len(train) + len(test) == 40 and not set(train.subjects) & set(test.subjects)
    for c in facts.labels.unique().tolist():
        n_c = int((facts.labels == c).sum())
        assert int((test.labels == c).sum()) == (round(0.3 * n_c) if n_c >= 2 else 0)


def test_das_training_lowers_the_loss_and_sampler_pairs_differ(tiny):
    facts = tiny_facts(tiny, n=32)
    draw = train_sampler(facts, batch_size=16)
    batch = draw(torch.Generator().manual_seed(0))
    assert batch.base.shape == (16, 6)
    assert bool((batch.target[:, 0] != batch.target[:, 1]).all())  # the source's answer is not the base's
    hook = lm.residual_hooks(tiny)[1]
    das = DAS(32, 1, 16, seed=0)
    losses = das.fit(
        tiny,
        hook,
        draw,
        loss=source_answer_loss,
        steps=40,
        lr=3e-2,
        weight_decay=0.0,
        position=5,
        progress=False,
    )
    assert losses[-1] < losses[0]
    assert all(not p.requires_grad or p.grad is None for p in tiny.parameters())  # the model stayed frozen


def test_subspace_site_runs_every_method(tiny):
    facts = tiny_facts(tiny, n=30)
    train, test = split_by_city(facts, 0.3, seed=0)
    site = Site(lm.residual_hooks(tiny)[2], 5, "post 1 @ last")
    result = subspace_site(tiny, train, test, site, [2, 8], steps=3, batch_size=8, partners=1, n_random=2)
    methods = [(r["method"], r["rank"]) for r in result.rows]
    assert ("full", 32) in methods
    for k in (2, 8):
        assert {m for m, r in methods if r == k} == {"pca", "means", "random", "das"}
    assert result.get("full")["iia"] == 1.0 and result.get("full")["n"] == len(test)
    assert all(0 <= r["iia"] <= 1 for r in result.rows)
    assert set(result.losses) == {2, 8} and "train_iia" in result.get("das", 2)
    with pytest.raises(ValueError, match="unknown method"):
        subspace_site(tiny, train, test, site, [2], methods=("full", "ica"))
