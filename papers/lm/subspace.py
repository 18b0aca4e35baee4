"""Interchange interventions on a language model's residual stream: fixed bases, DAS, full patching.

The experiment (with the facts of :mod:`papers.lm.facts`): a *base* prompt ("The city of Paris
is in the country of" -> France) and a *source* prompt with another answer ("... Rome ..." ->
Italy). At one *site*, a hook and one token position (the city's token, or the last token), the
base run takes the source run's activation inside a rank-k subspace (everything else stays the
base's); the intervention succeeds on a pair when the model's top-1 next token becomes the
source's answer. *Interchange-intervention accuracy* (IIA) is the fraction of held-out pairs
(cities never seen in training) where it does.

Methods, all with the generic interventions of :mod:`interventions.subspace`, unchanged:

* ``full``: the whole activation at the site (``FixedSubspace`` of the identity, rank d): activation
  patching, the upper bound of any subspace at that site.
* ``das``: :class:`~interventions.subspace.DAS`, a learned rotation whose first k coordinates are
  swapped, trained with the model frozen to make the model output the source's answer
  (cross-entropy) on training pairs.
* ``pca``: the top-k principal components of the site's activations over the training prompts.
* ``means``: the top-k directions spanned by the per-country mean activations (difference of
  means; supervised like DAS, not trained); above C - 1 directions, completed by principal
  components orthogonal to them.
* ``random``: a random k-dimensional subspace (what DAS starts from), averaged over seeds.

Every row of a batch is its own pair: the source of a row is another row of the same batch
(``InterventionBatch.source_index``), so one forward serves base and source, and the model is
reached only through hook names (``hooked.Hookable``): the same code runs on the bridge and on
``hooked.wrap``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hooked.lm import logits_of
from hooked.protocol import Hookable, check_hook, collect_activations, model_device
from hooked.rotations import random_orthonormal
from hooked.typecheck import Float, Int, typechecked
from interventions.intervention import Intervention, InterventionBatch
from interventions.subspace import DAS, FixedSubspace
from papers.lm.facts import Facts, interchange_rows

METHODS = ("full", "das", "pca", "means", "random")


@dataclass(frozen=True)
class Site:
    """Where an intervention acts: a hook point and one token position of its [batch, pos, d] activation."""

    hook: str
    position: int
    label: str = ""  # e.g. "pre 12 @ subject"


# ---------------------------------------------------------------------- batches, loss, metric
def interchange_batch(facts: Facts, prompts: Tensor, source_index: Tensor) -> InterventionBatch:
    """Prompts ``facts[prompts]`` as the base batch; row i takes its source from row ``source_index[i]``
    of the same batch. Target [m, 2]: the source's answer (wanted) and the base's own answer."""
    want = facts.answers[prompts[source_index]]
    return InterventionBatch(
        base=facts.tokens[prompts],
        target=torch.stack([want, facts.answers[prompts]], dim=1),
        source_index=source_index,
    )


def eval_batches(
    facts: Facts, partners: int = 4, seed: int = 0, batch_size: int = 128
) -> list[InterventionBatch]:
    """Every prompt as a base ``partners`` times, each with a random source of another country.

    Each batch holds all prompts once (rows 0..n-1) and then base rows in chunks, so that every
    source is a row of the batch."""
    g = torch.Generator().manual_seed(seed)
    base, source = interchange_rows(facts.labels, partners, g)
    n = len(facts)
    everyone = torch.arange(n)
    step = max(1, batch_size - n)
    batches = []
    for start in range(0, base.numel(), step):
        b, s = base[start : start + step], source[start : start + step]
        prompts = torch.cat([everyone, b])
        batches.append(_only_tail(interchange_batch(facts, prompts, torch.cat([everyone, s])), n))
    return batches


def _only_tail(batch: InterventionBatch, n_head: int) -> InterventionBatch:
    """A third target column marks the rows that count: not the first ``n_head`` (there only as sources)."""
    batch.target = torch.cat([batch.target, torch.arange(batch.target.shape[0])[:, None] >= n_head], dim=1)
    return batch


def train_sampler(facts: Facts, batch_size: int = 32) -> Callable[[torch.Generator], InterventionBatch]:
    """``fn(generator) -> InterventionBatch`` of ``batch_size`` random training prompts, each paired
    with another prompt of the batch that has a different answer."""
    size = min(batch_size, len(facts))

    def draw(g: torch.Generator) -> InterventionBatch:
        prompts = torch.randperm(len(facts), generator=g)[:size]
        _, source = interchange_rows(facts.labels[prompts], 1, g)
        return interchange_batch(facts, prompts, source)

    return draw


def source_answer_loss(out: Any, target: Tensor) -> Tensor:
    """Cross-entropy of the next-token logits at the last position against the source's answer."""
    return F.cross_entropy(logits_of(out)[:, -1].float(), target[:, 0])


@dataclass
class IIA:
    """What an intervention did on a set of pairs."""

    iia: float  # top-1 is the source's answer
    kept: float  # top-1 is still the base's answer
    p_source: float  # mean probability of the source's answer
    n: int

    def to_json(self) -> dict[str, Any]:
        return vars(self)


@torch.no_grad()
def interchange_accuracy(
    model: Hookable, intervention: Intervention, site: Site, batches: Sequence[InterventionBatch]
) -> IIA:
    """IIA, the base answer's survival and the source answer's probability over ``batches``."""
    intervention.eval()
    hits = kept = p = 0.0
    n = 0
    for batch in batches:
        logits = logits_of(intervention.run(model, site.hook, batch, position=site.position))[:, -1].float()
        target = batch.target
        rows = target[:, 2].bool() if target.shape[1] > 2 else torch.ones(target.shape[0], dtype=torch.bool)
        logits, target = logits[rows], target[rows]
        top = logits.argmax(-1)
        hits += float((top == target[:, 0]).sum())
        kept += float((top == target[:, 1]).sum())
        p += float(logits.softmax(-1).gather(1, target[:, :1]).sum())
        n += int(rows.sum())
    return IIA(hits / max(n, 1), kept / max(n, 1), p / max(n, 1), n)


# ---------------------------------------------------------------------- fixed bases
@typechecked
def pca_basis(acts: Float[Tensor, "n d"], k: int) -> Float[Tensor, "d k"]:
    """The top-k principal directions of ``acts`` (centred), as orthonormal columns."""
    _check_rank(k, acts.shape[1])
    x = acts.double() - acts.double().mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    if k > vh.shape[0]:
        raise ValueError(
            f"pca_basis: {acts.shape[0]} samples give at most {vh.shape[0]} principal directions, "
            f"asked for k={k}"
        )
    return vh[:k].T.to(acts.dtype).contiguous()


@typechecked
def class_mean_basis(acts: Float[Tensor, "n d"], labels: Int[Tensor, " n"], k: int) -> Float[Tensor, "d k"]:
    """The top-k directions spanned by the class means (centred on the mean of the class means):
    the difference-of-means subspace. Beyond its C - 1 dimensions, completed with the top principal
    directions of the data projected off it."""
    _check_rank(k, acts.shape[1])
    x = acts.double()
    classes = labels.unique()
    means = torch.stack([x[labels == c].mean(0) for c in classes])
    means = means - means.mean(0)
    _, s, vh = torch.linalg.svd(means, full_matrices=False)
    span = vh[: int((s > s.max() * 1e-8).sum())][:k]
    if span.shape[0] < k:
        rest = x - x.mean(0)
        rest = rest - (rest @ span.T) @ span
        _, _, vr = torch.linalg.svd(rest, full_matrices=False)
        span = torch.cat([span, vr[: k - span.shape[0]]])
    q, _ = torch.linalg.qr(span.T)
    return q.to(acts.dtype).contiguous()


def random_basis(d: int, k: int, seed: int = 0) -> Tensor:
    """A uniformly random k-dimensional subspace of R^d, as orthonormal columns [d, k]."""
    _check_rank(k, d)
    return random_orthonormal(d, seed, k, dtype=torch.float32).T


def _check_rank(k: int, d: int) -> None:
    if not 1 <= k <= d:
        raise ValueError(f"the subspace rank must be in [1, {d}], got k={k}")


def site_activations(model: Hookable, site: Site, tokens: Tensor, batch_size: int = 64) -> Tensor:
    """The activations [n, d] at ``site`` (its hook, at its position) for token rows ``tokens``."""
    acts = collect_activations(model, tokens.split(batch_size), [site.hook])[site.hook]
    if acts.dim() != 3:
        raise ValueError(
            f"site {site.hook!r}: expected a [batch, pos, d] activation, got shape {tuple(acts.shape)}"
        )
    return acts[:, site.position].float()


# ---------------------------------------------------------------------- the experiment at one site
@dataclass
class SiteResult:
    """IIA of every method and rank at one site (held-out pairs; DAS also on training pairs)."""

    site: Site
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per (method, rank)
    losses: dict[int, list[float]] = field(default_factory=dict)  # DAS training loss per rank
    seconds: float = 0.0

    def get(self, method: str, rank: int | None = None) -> dict[str, Any]:
        for r in self.rows:
            if r["method"] == method and (rank is None or r["rank"] == rank):
                return r
        raise KeyError(f"no result for method {method!r} at rank {rank}")

    def to_json(self) -> dict[str, Any]:
        return {
            "hook": self.site.hook,
            "position": self.site.position,
            "label": self.site.label,
            "rows": self.rows,
            "das_losses": self.losses,
            "seconds": self.seconds,
        }


def subspace_site(
    model: Hookable,
    train: Facts,
    test: Facts,
    site: Site,
    ranks: Sequence[int],
    *,
    methods: Sequence[str] = METHODS,
    steps: int = 120,
    lr: float = 1e-2,
    batch_size: int = 32,
    partners: int = 4,
    n_random: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> SiteResult:
    """Every method at every rank at one site: fit on ``train`` pairs, IIA on ``test`` pairs.

    Args:
        ranks: subspace dimensions k to compare (``full`` ignores them: it is rank d).
        methods: any of ``full``, ``das``, ``pca``, ``means``, ``random``.
        steps, lr, batch_size: DAS training (AdamW, no weight decay, model frozen).
        partners: sources per held-out base prompt.
        n_random: random subspaces averaged for ``random``.
    """
    check_hook(model, site.hook)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {METHODS}")
    started = time.perf_counter()
    tests = eval_batches(test, partners, seed=seed + 1)
    train_eval = eval_batches(train, 1, seed=seed + 2)
    acts = site_activations(model, site, train.tokens)
    d = acts.shape[1]
    device = model_device(model)
    result = SiteResult(site)

    def record(method: str, rank: int, intervention: Intervention, **extra: Any) -> None:
        intervention.to(device)
        row = {
            "method": method,
            "rank": rank,
            **interchange_accuracy(model, intervention, site, tests).to_json(),
            **extra,
        }
        result.rows.append(row)

    if "full" in methods:
        record("full", d, FixedSubspace(torch.eye(d)))
    for k in ranks:
        _check_rank(k, d)
        if "pca" in methods:
            record("pca", k, FixedSubspace(pca_basis(acts, k)))
        if "means" in methods:
            record("means", k, FixedSubspace(class_mean_basis(acts, train.labels, k)))
        if "random" in methods:
            runs = [
                interchange_accuracy(
                    model, FixedSubspace(random_basis(d, k, seed=1000 * seed + r)).to(device), site, tests
                )
                for r in range(n_random)
            ]
            result.rows.append(
                {
                    "method": "random",
                    "rank": k,
                    "iia": _mean(r.iia for r in runs),
                    "kept": _mean(r.kept for r in runs),
                    "p_source": _mean(r.p_source for r in runs),
                    "n": runs[0].n,
                    "iia_per_seed": [r.iia for r in runs],
                }
            )
        if "das" in methods:
            das = DAS(d, 1, k, seed=seed).to(device)
            t = time.perf_counter()
            losses = das.fit(
                model,
                site.hook,
                train_sampler(train, batch_size),
                loss=source_answer_loss,
                steps=steps,
                lr=lr,
                weight_decay=0.0,
                seed=seed,
                position=site.position,
                progress=f"DAS k={k} {site.label or site.hook}" if progress else False,
            )
            result.losses[k] = losses
            train_iia = interchange_accuracy(model, das, site, train_eval)
            record("das", k, das, train_iia=train_iia.iia, fit_seconds=time.perf_counter() - t)
    result.seconds = time.perf_counter() - started
    return result


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


# ---------------------------------------------------------------------- full patching over layers
@torch.no_grad()
def full_patching_curve(
    model: Hookable,
    facts: Facts,
    hooks: Sequence[str],
    positions: Sequence[int],
    *,
    partners: int = 2,
    seed: int = 0,
    chunk: int = 256,
    progress: bool = False,
) -> Tensor:
    """IIA of full-vector activation patching at every (hook, position), [hooks, positions], on
    pairs of ``facts``: every patch of the grid rides in batched forwards
    (:func:`interventions.patching.patching_sweep`)."""
    from interventions.patching import patching_sweep

    base, source = interchange_rows(facts.labels, partners, torch.Generator().manual_seed(seed))
    want = facts.answers[source]

    def metric(out: Any) -> Tensor:
        top = logits_of(out)[:, -1].argmax(-1)
        return (top == want.to(top.device).repeat(top.shape[0] // want.shape[0])).float()

    rows = max(1, chunk // base.numel())
    return patching_sweep(
        model,
        facts.tokens[base],
        facts.tokens[source],
        list(hooks),
        metric,
        list(positions),
        chunk=rows,
        progress=progress,
    )


# ---------------------------------------------------------------------- plots
def plot_sweep(
    results: Sequence[SiteResult], full_curve: dict[str, Any] | None = None, title: str = ""
) -> Any:
    """IIA against layer, one panel per position; a line per method and rank; full patching of
    every layer (``full_curve``: ``{"labels", "positions": {name: values}}``) in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = list(dict.fromkeys(r.site.label.split(" @ ")[-1] for r in results))
    if full_curve:
        positions = list(dict.fromkeys([*full_curve["positions"], *positions]))
    fig, axes = plt.subplots(
        1, len(positions), figsize=(6.2 * len(positions), 3.8), squeeze=False, sharey=True
    )
    colors = {"full": "k", "das": "tab:red", "pca": "tab:blue", "means": "tab:green", "random": "tab:grey"}
    styles = ["-", "--", ":", "-."]
    layer_names = (
        full_curve["labels"]
        if full_curve
        else list(dict.fromkeys(r.site.label.split(" @ ")[0] for r in results))
    )
    for ax, pos in zip(axes[0], positions):
        if full_curve and pos in full_curve["positions"]:
            ax.plot(
                range(len(layer_names)),
                full_curve["positions"][pos],
                color="0.7",
                lw=3,
                label="full patching (all layers)",
            )
        here = [r for r in results if r.site.label.endswith(f"@ {pos}")]
        ranks = sorted({row["rank"] for r in here for row in r.rows if row["method"] != "full"})
        for method in METHODS:
            for i, k in enumerate(ranks if method != "full" else [None]):
                xs, ys = [], []
                for r in here:
                    layer = r.site.label.split(" @ ")[0]
                    hit = [
                        row for row in r.rows if row["method"] == method and (k is None or row["rank"] == k)
                    ]
                    if hit and layer in layer_names:
                        xs.append(layer_names.index(layer))
                        ys.append(hit[0]["iia"])
                if xs:
                    label = "full (rank d)" if k is None else f"{method} k={k}"
                    ax.plot(
                        xs,
                        ys,
                        styles[i % len(styles)] if k is not None else "-",
                        marker="o",
                        ms=4,
                        color=colors[method],
                        label=label,
                    )
        step = max(1, len(layer_names) // 10)
        ax.set_xticks(range(0, len(layer_names), step), layer_names[::step], rotation=45, fontsize=7)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("residual stream")
        ax.set_title(f"position: {pos}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("interchange-intervention accuracy\n(held-out pairs)")
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for h, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, h)
    axes[0][-1].legend(
        handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5)
    )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
