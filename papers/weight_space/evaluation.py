"""Downstream evaluation of RNN-weight embeddings (``docs/methods/weight-space.md``): task splits,
targets, probes.

Frozen embeddings of zoo members (read at an encoder's ``hook_embed`` through the hook
protocol by :func:`papers.weight_space.encoders.embed_zoo`) are used to predict, with small
MLPs fitted on the training split:

* ``task``: the exact task, i.e. which formal language (the three offsets d2, d3, d4, each one
  of six values; correct only if all three are) or which angle bin a digit classifier was
  trained on. Only members whose return reaches ``min_return`` count: an untrained snapshot
  has no task to find.
* ``step``: which training snapshot the member is (classification over the snapshot steps).
* ``return``: the member's return / test accuracy (regression, R²).

Splits follow the paper: tasks (unique task vectors or angles) are sorted by a criterion (the
language's entropy, the angle); the top 15% are out-of-distribution (OOD), the rest go 70/15 to
train / validation (in-distribution, "ID") at random. Encoders are trained on the train split
only. As in the authors' code (``downstream_training_on_ood``), a fraction of the OOD tasks may
join the downstream predictors' training set (default one half), so that OOD classes (e.g. the
angle bins only OOD runs have) are learnable; the other half is what the OOD column reports.

All predictors of one target (every encoder x every seed) train at once as one stacked MLP.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from papers.weight_space.zoo.store import Zoo
from papers.weight_space.zoo.tasks import language_entropy

TARGETS = ("task", "step", "return")


# ---------------------------------------------------------------------- splits
def task_criterion(kind: str, tasks: Tensor) -> Tensor:
    """The sorting criterion of each task: the language's entropy, or the angle."""
    if kind == "formal-languages":
        return language_entropy(tasks)
    return tasks[:, 0].float()


def task_splits(zoo: Zoo, *, val: float = 0.15, ood: float = 0.15, seed: int = 0) -> dict[str, Tensor]:
    """Member indices of the 'train', 'val' (in-distribution) and 'ood' splits, split by task."""
    unique, inverse = torch.unique(zoo.tasks, dim=0, return_inverse=True)
    crit = task_criterion(zoo.kind, unique)
    order = crit.argsort(stable=True)
    n = len(unique)
    n_train, n_val = int(n * (1 - val - ood)), int(n * val)
    n_ood = n - n_train - n_val
    ood_tasks = order[n - n_ood :]
    rest = order[: n - n_ood][torch.randperm(n - n_ood, generator=torch.Generator().manual_seed(seed))]
    split_of_task = torch.empty(n, dtype=torch.long)
    split_of_task[rest[:n_train]] = 0
    split_of_task[rest[n_train:]] = 1
    split_of_task[ood_tasks] = 2
    member_split = split_of_task[inverse]
    return {name: (member_split == i).nonzero().flatten() for i, name in enumerate(("train", "val", "ood"))}


def downstream_splits(
    zoo: Zoo, splits: Mapping[str, Tensor], *, ood_train_fraction: float = 0.5, seed: int = 0
) -> dict[str, Tensor]:
    """'train' (+ a fraction of the OOD tasks), 'id' (= val) and 'ood' (the remaining OOD tasks)."""
    ood = splits["ood"]
    _, inverse = torch.unique(zoo.tasks[ood], dim=0, return_inverse=True)
    n_tasks = int(inverse.max()) + 1 if len(ood) else 0
    moved = torch.randperm(n_tasks, generator=torch.Generator().manual_seed(seed + 1))[
        : int(n_tasks * ood_train_fraction)
    ]
    to_train = torch.isin(inverse, moved)
    return {"train": torch.cat([splits["train"], ood[to_train]]), "id": splits["val"], "ood": ood[~to_train]}


# ---------------------------------------------------------------------- targets
def task_labels(zoo: Zoo, *, angle_bins: int = 8) -> tuple[Tensor, list[int]]:
    """([N, heads] class labels, classes per head): (d2, d3, d4) + 3, or the angle's bin."""
    if zoo.kind == "formal-languages":
        return zoo.tasks[:, 1:] + 3, [6, 6, 6]
    bins = (zoo.tasks[:, 0] / (360.0 / angle_bins)).long().clamp(0, angle_bins - 1)
    return bins[:, None], [angle_bins]


def step_labels(zoo: Zoo) -> tuple[Tensor, list[int]]:
    steps = zoo.steps
    values = torch.unique(steps)
    return torch.searchsorted(values, steps)[:, None], [len(values)]


# ---------------------------------------------------------------------- stacked predictors
def fit_predict(
    x_train: Tensor,
    y_train: Tensor,
    x_eval: Tensor,
    *,
    classes: list[int] | None,
    hidden: int = 64,
    steps: int = 400,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> Tensor:
    """Fit G independent 1-hidden-layer MLPs at once and predict.

    ``x_train`` [G, n, d], ``y_train`` [n, heads] class labels (``classes`` per head) or [n] values
    (``classes=None``: regression on standardised targets); returns [G, n_eval, heads] class
    predictions or [G, n_eval] values.
    """
    g, n, d = x_train.shape
    mean, std = x_train.mean(1, keepdim=True), x_train.std(1, keepdim=True) + 1e-6
    xt, xe = (x_train - mean) / std, (x_eval - mean) / std
    out = sum(classes) if classes else 1
    gen = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(g, d, hidden, generator=gen) / d**0.5).requires_grad_()
    b1 = torch.zeros(g, 1, hidden, requires_grad=True)
    w2 = (torch.randn(g, hidden, out, generator=gen) / hidden**0.5).requires_grad_()
    b2 = torch.zeros(g, 1, out, requires_grad=True)
    opt = torch.optim.AdamW([w1, b1, w2, b2], lr=lr, weight_decay=weight_decay)
    if classes is None:
        y_mean, y_std = y_train.float().mean(), y_train.float().std() + 1e-6
        yt = ((y_train.float() - y_mean) / y_std).expand(g, -1)

    def forward(x: Tensor) -> Tensor:
        return torch.relu(x @ w1 + b1) @ w2 + b2

    for _ in range(steps):
        pred = forward(xt)
        if classes is None:
            loss = F.mse_loss(pred[..., 0], yt, reduction="none").mean(1).sum()
        else:
            loss = sum(
                F.cross_entropy(chunk.flatten(0, 1), y_train[:, h].repeat(g), reduction="sum") / n
                for h, chunk in enumerate(pred.split(classes, dim=-1))
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = forward(xe)
        if classes is None:
            return pred[..., 0] * y_std + y_mean
        return torch.stack([chunk.argmax(-1) for chunk in pred.split(classes, dim=-1)], dim=-1)


def r2(pred: Tensor, y: Tensor) -> Tensor:
    """Coefficient of determination of each row of ``pred`` [G, n] against ``y`` [n]."""
    ss_res = ((pred - y) ** 2).sum(-1)
    ss_tot = ((y - y.mean()) ** 2).sum().clamp_min(1e-12)
    return 1 - ss_res / ss_tot


def evaluate(
    embeddings: Mapping[str, Tensor],
    zoo: Zoo,
    splits: Mapping[str, Tensor],
    *,
    min_return: float = 0.5,
    seeds: int = 3,
    angle_bins: int = 8,
    steps: int = 400,
) -> dict:
    """Downstream scores of every encoder's embeddings [N, d]: {target: {encoder: {split: score}}}.

    ``splits`` has 'train', 'id' and 'ood' member indices (see :func:`downstream_splits`).
    Scores: exact-task accuracy (and, with several heads, the mean per-head accuracy under
    '<split>_heads'), snapshot accuracy, R² of the return; each the mean over ``seeds`` predictor
    initialisations, with a 'chance' row (majority class / training mean).
    """
    names = list(embeddings)
    width = max(embeddings[n].shape[1] for n in names)  # narrower embeddings are zero-padded
    x_all = torch.stack(
        [F.pad(embeddings[n].float(), (0, width - embeddings[n].shape[1])) for n in names]
    )  # [E, N, d]
    returns = zoo.returns
    results: dict = {"n_members": {k: int(len(v)) for k, v in splits.items()}}
    for target in TARGETS:
        if target == "task":
            labels, classes = task_labels(zoo, angle_bins=angle_bins)
            keep = returns >= min_return
        elif target == "step":
            labels, classes = step_labels(zoo)
            keep = torch.ones(len(zoo), dtype=torch.bool)
        else:
            labels, classes = returns, None
            keep = torch.ones(len(zoo), dtype=torch.bool)
        idx = {k: v[keep[v]] for k, v in splits.items()}
        table: dict = {n: {} for n in [*names, "chance"]}
        results[target] = table
        results.setdefault("n_used", {})[target] = {k: int(len(v)) for k, v in idx.items()}
        if len(idx["train"]) < 2:
            continue
        evals = {k: idx[k] for k in ("id", "ood") if len(idx[k])}
        all_eval = torch.cat(list(evals.values())) if evals else idx["train"][:0]
        # every encoder x seed in one stacked fit (seeds differ by their initialisation)
        preds = fit_predict(
            x_all[:, idx["train"]].repeat(seeds, 1, 1),
            labels[idx["train"]],
            x_all[:, all_eval].repeat(seeds, 1, 1),
            classes=classes,
            steps=steps,
        )
        start = 0
        for split, rows in evals.items():
            y = labels[rows]
            if classes is None:
                scores = r2(preds[:, start : start + len(rows)], y)
                chance = float(r2(labels[idx["train"]].float().mean().expand(1, len(rows)), y)[0])
            else:
                hits = preds[:, start : start + len(rows)] == y
                scores = hits.all(-1).float().mean(-1)
                majority = torch.stack([labels[idx["train"], h].mode().values for h in range(len(classes))])
                chance = float((y == majority).all(-1).float().mean())
                if len(classes) > 1:  # also the mean accuracy of each head (e.g. each offset d_k)
                    per_head = hits.float().mean((-1, -2)).view(seeds, len(names)).mean(0)
                    for n, v in zip(names, per_head.tolist()):
                        table[n][f"{split}_heads"] = v
                    table["chance"][f"{split}_heads"] = float((y == majority).float().mean())
            scores = scores.view(seeds, len(names)).mean(0)
            for n, s in zip(names, scores.tolist()):
                table[n][split] = s
            table["chance"][split] = chance
            start += len(rows)
    return results
