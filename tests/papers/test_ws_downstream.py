"""Downstream evaluation of weight embeddings: splits by task, stacked predictors, scores."""

from __future__ import annotations

import torch

from papers.weight_space.evaluation import (
    downstream_splits,
    evaluate,
    fit_predict,
    r2,
    step_labels,
    task_criterion,
    task_labels,
    task_splits,
)
from papers.weight_space.zoo import LSTMLayout, Zoo, init_params
from papers.weight_space.zoo.tasks import random_language_tasks

LAYOUT = LSTMLayout(d_in=6, d_out=6, hidden=4, layers=1)


def language_zoo(runs: int = 60, snaps: tuple[int, ...] = (0, 10, 20), seed: int = 0) -> Zoo:
    """A zoo with random weights but real task / step / return records (for the bookkeeping)."""
    gen = torch.Generator().manual_seed(seed)
    tasks = random_language_tasks(runs, gen)
    members = [
        {"run": r, "step": s, "task": tasks[r].tolist(), "return": float(torch.rand((), generator=gen))}
        for r in range(runs)
        for s in snaps
    ]
    n = len(members)
    seqs = torch.randint(0, 6, (n, 1, 5), generator=gen)
    return Zoo(
        "formal-languages", LAYOUT, init_params(n, LAYOUT, gen), seqs, torch.zeros(n, 1, 4, 6), members
    )


def test_task_splits_partition_members_by_task_with_ood_on_top():
    zoo = language_zoo()
    splits = task_splits(zoo, seed=0)
    all_idx = torch.cat(list(splits.values())).sort().values
    assert torch.equal(all_idx, torch.arange(len(zoo)))
    tasks = {k: {tuple(t) for t in zoo.tasks[v].tolist()} for k, v in splits.items()}
    assert (
        not (tasks["train"] & tasks["val"])
        and not (tasks["train"] & tasks["ood"])
        and not (tasks["val"] & tasks["ood"])
    )
    n_tasks = sum(len(t) for t in tasks.values())
    assert len(tasks["train"]) == int(n_tasks * 0.7)

    def crit(idx):
        return task_criterion(zoo.kind, zoo.tasks[idx])

    assert crit(splits["ood"]).min() >= max(crit(splits["train"]).max(), crit(splits["val"]).max())
    # members of one run stay together
    for v in splits.values():
        runs = set(zoo.runs[v].tolist())
        assert sum(int((zoo.runs == r).sum()) for r in runs) == len(v)


def test_downstream_splits_move_half_the_ood_tasks_into_training():
    zoo = language_zoo()
    splits = task_splits(zoo)
    down = downstream_splits(zoo, splits, ood_train_fraction=0.5)
    assert torch.equal(down["id"], splits["val"])
    moved = set(down["train"].tolist()) - set(splits["train"].tolist())
    assert moved and moved | set(down["ood"].tolist()) == set(splits["ood"].tolist())
    ood_tasks = {tuple(t) for t in zoo.tasks[down["ood"]].tolist()}
    assert not ood_tasks & {tuple(t) for t in zoo.tasks[down["train"]].tolist()}
    none_moved = downstream_splits(zoo, splits, ood_train_fraction=0.0)
    assert torch.equal(none_moved["ood"], splits["ood"])


def test_labels():
    zoo = language_zoo(runs=3)
    labels, classes = task_labels(zoo)
    assert (
        classes == [6, 6, 6]
        and torch.equal(labels, zoo.tasks[:, 1:] + 3)
        and labels.min() >= 0
        and labels.max() <= 5
    )
    steps, n = step_labels(zoo)
    assert n == [3] and steps[:3, 0].tolist() == [0, 1, 2]


def test_fit_predict_known_answers():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen)
    y_cls = torch.stack([(x[:, 0] > 0).long(), (x[:, 1] > 0.5).long() + (x[:, 1] > -0.5).long()], dim=1)
    pred = fit_predict(
        x[None, :150].repeat(2, 1, 1), y_cls[:150], x[None, 150:].repeat(2, 1, 1), classes=[2, 3], steps=200
    )
    assert pred.shape == (2, 50, 2)
    assert (pred == y_cls[150:]).all(-1).float().mean() > 0.85
    y_reg = 3 * x[:, 2] - x[:, 3] + 10
    pred = fit_predict(x[None, :150], y_reg[:150], x[None, 150:], classes=None, steps=200)
    assert r2(pred, y_reg[150:]).item() > 0.9
    assert abs(r2(torch.full((1, 50), float(y_reg[150:].mean())), y_reg[150:]).item()) < 1e-5


def test_evaluate_ranks_an_informative_embedding_above_noise():
    zoo = language_zoo(runs=60)
    gen = torch.Generator().manual_seed(1)
    n = len(zoo)
    labels, _ = task_labels(zoo)
    oracle = torch.cat(
        [
            torch.nn.functional.one_hot(labels, 6).flatten(1).float(),
            zoo.returns[:, None],
            step_labels(zoo)[0].float(),
        ],
        dim=1,
    )
    embeddings = {
        "oracle": oracle + 0.01 * torch.randn(oracle.shape, generator=gen),
        "noise": torch.randn(n, 8, generator=gen),
    }
    down = downstream_splits(zoo, task_splits(zoo))
    scores = evaluate(embeddings, zoo, down, min_return=0.0, seeds=1, steps=200)
    for split in ("id", "ood"):
        assert scores["task"]["oracle"][split] > 0.6 and scores["task"]["noise"][split] < 0.2
        assert scores["task"]["oracle"][f"{split}_heads"] > scores["task"]["noise"][f"{split}_heads"]
        assert scores["step"]["oracle"][split] > 0.9
        assert scores["return"]["oracle"][split] > 0.8 and scores["return"]["noise"][split] < 0.3
    assert set(scores["task"]["chance"]) == {"id", "ood", "id_heads", "ood_heads"}
