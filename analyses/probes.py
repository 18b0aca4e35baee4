"""Ridge probes: is a class label linearly decodable from the activation at a hook? Any model, any hook.

* :func:`ridge_probes`: a ridge-regression classifier (one-vs-all least squares on one-hot labels,
  the probe of sklearn's ``RidgeClassifier``) for every row of a stack of activations
  ``[probes, samples, features]`` (e.g. one per layer), with stratified k-fold held-out accuracy.
  The ridge penalty is chosen per probe and fold by exact leave-one-out error on the training
  part (closed form). Every probe and penalty is solved in one batched eigendecomposition: no
  loop over layers.
* :func:`hook_features`: the activations of a hooked model at any hooks, one vector per input row
  (``[batch, d]`` as is; ``[batch, pos, d]`` at the last position, averaged over positions, or at
  one position), streamed batch by batch (never the whole cache); :func:`store_features` reads the
  same vectors from an activation store written by :func:`hooked.store.harvest` (no model run),
  and :func:`hook_features`, :func:`layer_probes` and the ``ridge-probe`` analysis take a store
  in place of inputs.
* :func:`layer_probes`: probes at many hooks at once (e.g. every layer's residual stream) with a
  shuffled-label control; :func:`plot_layer_probes`.
* the ``ridge-probe`` analysis of the command line: ``python -m hooked run ridge-probe --model M
  --hook H --labels SPEC`` (labels from a file, the input's token at a position, or the model's
  own prediction).

Which probe when. These are *linear, closed-form* probes of one class label per input row (a
topic, a country, a token id), cheap enough to run at every layer, with held-out accuracy and a
control. :mod:`interventions.probes` holds a different tool: probes *trained by gradient descent*
that read a whole token sequence out of one state (the repeat task's memory: a label per
position, exact-match accuracy), including the onion paper's sequential probes. Use this module
to ask "is y linearly readable at hook h?"; use ``interventions.probes`` when the target is a
sequence or the probe must be nonlinear or sequential.

Everything here uses only the hook protocol, so the probes run on toy models, RNNs,
``hooked.wrap`` models and TransformerLens's bridge alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hooked.checks import require_finite
from hooked.protocol import Batch, Hookable, batch_mask, hook_names, iter_activations, mask_ends, split_batch
from hooked.typecheck import Float, Int, typechecked

DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)


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
    require_finite(features, "ridge_probes: the features")
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"ridge_probes: labels must be class ids >= 0, got {int(labels.min())}")
    n_classes = int(labels.max()) + 1
    labels = labels.to(features.device)
    fold_of = stratified_folds(labels, folds, seed).to(features.device)
    empty = (torch.bincount(fold_of, minlength=folds) == 0).nonzero().flatten().tolist()
    if empty:
        largest = int(torch.bincount(labels).max()) if len(labels) else 0
        raise ValueError(
            f"ridge_probes: folds={folds} leaves {len(empty)} fold(s) with no held-out sample ({len(labels)} "
            f"samples, the largest class has {largest}); use at most {largest} folds"
        )
    grid = torch.tensor(list(alphas), dtype=torch.float64, device=features.device)
    accs, chosen = [], []
    for f in range(folds):  # a handful of folds; probes and penalties are batched inside
        train, test = fold_of != f, fold_of == f
        scores, loo = _ridge(features[:, train], labels[train], features[:, test], grid, n_classes)
        best = loo.argmin(dim=-1)  # [probes]
        picked = scores[torch.arange(len(best), device=best.device), best]  # [probes, m, C]
        if not bool(torch.isfinite(picked).all()):
            raise ValueError(
                "ridge_probes: the probe's scores overflowed (features too large for "
                f"{features.dtype}?); pass float64 features"
            )
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
POOLS = ("last", "mean")


def pool_rows(act: Tensor, pool: str | int, mask: Tensor | None = None) -> Tensor:
    """One vector per input row: ``[batch, d]`` as is; ``[batch, pos, ..., d]`` along axis 1 at the
    last position (``"last"``), averaged (``"mean"``) or at position ``pool`` (an int).

    With ``mask`` (``[batch, pos]``, 1 at real tokens: a padded batch's attention mask) only real
    tokens count: ``"last"`` is each row's last real token, ``"mean"`` the mean over its real
    tokens, and an int counts real tokens (0: each row's first, -1: its last), so a padded batch
    gives each row what it gives alone.
    """
    if act.dim() == 2:
        return act
    if act.dim() < 2:
        raise ValueError(
            f"probes need activations of shape [batch, d] or [batch, pos, d], got {tuple(act.shape)}"
        )
    if mask is not None and tuple(mask.shape) != tuple(act.shape[:2]):
        raise ValueError(
            f"the attention mask has shape {tuple(mask.shape)} but the activation {tuple(act.shape)}: "
            "only [batch, pos, ...] activations of a padded batch can be pooled over its real tokens"
        )
    if pool not in ("last", "mean") and not isinstance(pool, int):
        raise ValueError(f"pool must be 'last', 'mean' or a position index, got {pool!r}")
    if mask is None:
        if pool == "last":
            out = act[:, -1]
        elif pool == "mean":
            out = act.mean(dim=1)
        else:
            if not -act.shape[1] <= pool < act.shape[1]:
                raise ValueError(
                    f"position {pool} is out of range for an activation with {act.shape[1]} positions"
                )
            out = act[:, pool]
        return out.reshape(out.shape[0], -1)
    mask = mask.to(act.device)
    rows = torch.arange(act.shape[0], device=act.device)
    if pool == "mean":
        weights = mask.to(act.dtype).reshape(*mask.shape, *([1] * (act.dim() - 2)))
        out = (act * weights).sum(dim=1) / weights.sum(dim=1)
    else:
        out = act[rows, real_position(mask, -1 if pool == "last" else pool)]
    return out.reshape(out.shape[0], -1)


def real_position(mask: Tensor, position: int) -> Tensor:
    """``[batch]``: the index of each row's ``position``-th real token (0 its first, -1 its last)
    in a padded batch with attention ``mask``; an error if some row is too short."""
    first, last = mask_ends(mask)
    index = first + position if position >= 0 else last + 1 + position
    short = (index < first) | (index > last)
    if bool(short.any()):
        rows = short.nonzero().flatten().tolist()
        raise ValueError(
            f"position {position} is past the real tokens of rows {rows[:10]} "
            f"(they have {(last - first + 1)[short].tolist()[:10]} tokens)"
        )
    return index


def hook_features(
    model: Hookable | None,
    inputs: Tensor | dict[str, Tensor] | Iterable[Batch] | Any,
    hooks: Sequence[str],
    *,
    pools: Sequence[str | int] = POOLS,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str | int, Tensor]:
    """``{pool: [hooks, n, d]}``: each hook's activation, one vector per input row, for every pooling
    in ``pools`` (see :func:`pool_rows`), streamed batch by batch. A padded batch (a dict with an
    ``attention_mask``) is pooled over its real tokens only.

    Args:
        inputs: a tensor of input rows or a dict batch of them (split into ``batch_size`` rows),
            an iterable of batches, or an activation store (its folder or ``hooked.store.open``'s
            Dataset: then ``model`` is not run and may be None; see :func:`store_features`).
    """
    if is_store(inputs):
        return store_features(inputs, hooks, pools=pools)
    hooks = hook_names(model, list(hooks))
    batches = _split_rows(inputs, batch_size) if isinstance(inputs, (Tensor, dict)) else inputs
    parts: dict[str | int, list[Tensor]] = {p: [] for p in pools}
    for acts, mask in iter_activations(
        model, batches, hooks, device="cpu", progress="activations" if progress else False, with_mask=True
    ):
        for p in pools:
            parts[p].append(torch.stack([pool_rows(acts[h].float(), p, mask) for h in hooks]))
    if not any(parts.values()):
        raise ValueError("hook_features: no batches were given")
    return {p: torch.cat(v, dim=1) for p, v in parts.items()}


def is_store(data: Any) -> bool:
    """Whether ``data`` is an activation store: a folder with a manifest, or a ``datasets.Dataset``."""
    if isinstance(data, (str, Path)):
        return (Path(data) / "manifest.json").is_file()
    return type(data).__name__ == "Dataset" and type(data).__module__.startswith("datasets")


def store_features(
    store: Any, hooks: Sequence[str], *, pools: Sequence[str | int] = POOLS, chunk_rows: int = 65536
) -> dict[str | int, Tensor]:
    """``{pool: [hooks, n, d]}`` read from an activation store (:mod:`hooked.store`), one vector per
    input row, as :func:`hook_features` gives on the inputs the store was harvested from.

    A store of token rows is pooled per sequence over its stored (real) tokens: ``"last"``, ``"mean"``,
    or an int: its ``p``-th real token (negative: counted from its last), as :func:`hook_features`
    pools a padded batch; read ``chunk_rows`` rows at a time, twice (the lengths first). A store
    of sample rows is pooled with :func:`pool_rows`.

    Args:
        store: the store's folder, or the ``datasets.Dataset`` that ``hooked.store.open`` gave.
        hooks: hook names (columns of the store).
    """
    from hooked.store import iter_batches, manifest_of

    manifest = manifest_of(store)
    hooks = list(hooks)
    missing = [h for h in hooks if h not in manifest["hooks"]]
    if missing:
        raise ValueError(f"the store holds no hook {missing[0]!r}; it has {', '.join(manifest['hooks'])}")
    for p in pools:
        if p not in POOLS and not isinstance(p, int):
            raise ValueError(f"pool must be 'last', 'mean' or a position index, got {p!r}")
    if not manifest["sequence"]:
        parts: dict[str | int, list[Tensor]] = {p: [] for p in pools}
        for b in iter_batches(store, chunk_rows, shuffle=False, columns=hooks):
            for p in pools:
                parts[p].append(torch.stack([pool_rows(b[h].float(), p) for h in hooks]))
        return {p: torch.cat(v, dim=1) for p, v in parts.items()}
    n = manifest["sequences"]
    counts = torch.zeros(n, dtype=torch.long)  # stored tokens per sequence
    for b in iter_batches(store, chunk_rows, shuffle=False, columns=["sequence"]):
        counts.index_add_(0, b["sequence"], torch.ones_like(b["sequence"]))
    d = {h: int(torch.tensor(manifest["hooks"][h]["shape"]).prod()) for h in hooks}
    out = {p: {h: torch.zeros(n, d[h]) for h in hooks} for p in pools}
    seen = {p: torch.zeros(n, dtype=torch.bool) for p in pools}
    for b in iter_batches(store, chunk_rows, shuffle=False, columns=["sequence", "position", *hooks]):
        seq, pos = b["sequence"], b["position"]
        acts = {h: b[h].reshape(len(seq), -1).float() for h in hooks}
        for p in pools:
            if p == "mean":
                rows = None
            else:  # "last" is position -1; negative positions count from each sequence's end
                want = counts[seq] - 1 if p == "last" else (p if p >= 0 else counts[seq] + p)
                rows = (pos == want).nonzero().squeeze(1)
            for h in hooks:
                if rows is None:
                    out[p][h].index_add_(0, seq, acts[h])
                else:
                    out[p][h][seq[rows]] = acts[h][rows]
            seen[p][seq if rows is None else seq[rows]] = True
    for p in pools:
        if not bool(seen[p].all()):
            first = int((~seen[p]).nonzero()[0])
            raise ValueError(f"store_features: sequence {first} has no stored token for pool {p!r}")
    if "mean" in pools:
        for h in hooks:
            out["mean"][h] /= counts[:, None].clamp_min(1)
    return {p: torch.stack([out[p][h] for h in hooks]) for p in pools}


def _split_rows(inputs: Tensor | dict[str, Tensor], size: int) -> list[Batch]:
    if isinstance(inputs, Tensor):
        return list(inputs.split(size))
    parts = {k: v.split(size) if isinstance(v, Tensor) else None for k, v in inputs.items()}
    n = len(next(p for p in parts.values() if p is not None))
    return [{k: (p[i] if p is not None else inputs[k]) for k, p in parts.items()} for i in range(n)]


# ---------------------------------------------------------------------- probes at many hooks
@dataclass
class LayerProbes:
    """Probe accuracy at each hook (e.g. each layer), for each pooling, with a shuffled-label control."""

    labels: list[str]  # one per hook
    results: dict[str, ProbeResult]  # "last token", "mean over tokens", "last token, shuffled labels", ...
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "layers": self.labels,
            **self.info,
            "probes": {k: v.to_json() for k, v in self.results.items()},
        }


def layer_probes(
    model: Hookable | None,
    tokens: Tensor | dict[str, Tensor] | Any,
    labels: Tensor,
    hooks: Sequence[str],
    hook_labels: Sequence[str] | None = None,
    *,
    folds: int = 5,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> LayerProbes:
    """Ridge probes for ``labels`` at every hook, at the last position and mean-pooled (``[batch, d]``
    activations: as is); the same probes on shuffled labels are the control (they sit at chance).
    ``tokens`` may be a padded batch (``hooked.lm.tokenize``): pooled over each row's real tokens;
    or an activation store of those hooks (then ``model`` is not run)."""
    feats = hook_features(model, tokens, hooks, batch_size=batch_size, progress=progress)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))]
    results = {}
    for pooling, x in feats.items():
        name = {"last": "last token", "mean": "mean over tokens"}[pooling]
        results[name] = ridge_probes(x, labels, folds=folds, seed=seed)
        results[f"{name}, shuffled labels"] = ridge_probes(x, shuffled, folds=folds, seed=seed)
    if is_store(tokens):
        info = {"n_texts": next(iter(feats.values())).shape[1], "tokens_per_text": None, "folds": folds}
    else:
        ids = tokens["input_ids"] if isinstance(tokens, dict) else tokens
        mask = batch_mask(tokens)
        per_text = int(ids.shape[1]) if mask is None else round(float(mask.sum(dim=1).float().mean()), 2)
        info = {"n_texts": int(ids.shape[0]), "tokens_per_text": per_text, "folds": folds}
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


# ---------------------------------------------------------------------- the command-line analysis
def resolve_labels(spec: str, model: Hookable, batches: Sequence[Batch]) -> Tensor:
    """The label of every input row (over ``batches``, in order), from a spec:

    * ``input:POS``: the integer input (e.g. the token id) at position POS of each row (the first
      tensor of each batch; in a padded batch, the POS-th real token: 0 the first, -1 the last);
    * ``output``: the model's own top prediction (argmax over the last axis of its output, at the
      last (real) position when the output has one);
    * a path to a ``.safetensors`` file (a tensor ``labels``) or a ``.json`` file (a list of ints,
      or ``{"labels": [...]}``), one label per row.
    """
    if spec.startswith("input:"):
        try:
            pos = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"labels {spec!r}: expected input:POS with an integer position") from None
        out = []
        for b in batches:
            args, kwargs = split_batch(b)
            first = next((v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)), None)
            if first is None or first.is_floating_point() or first.dim() < 2:
                raise ValueError(
                    f"labels {spec!r}: the model's input must be an integer tensor [batch, pos, ...]"
                )
            mask = batch_mask(b)
            index = pos if mask is None else real_position(mask, pos).to(first.device)
            rows = torch.arange(first.shape[0], device=first.device)
            picked = first[:, index] if mask is None else first[rows, index]
            out.append(picked.reshape(first.shape[0], -1)[:, 0].cpu())
        return torch.cat(out)
    if spec == "output":
        from hooked.protocol import run_with_hooks

        out = []
        with torch.no_grad():
            for b in batches:
                y = run_with_hooks(model, b)
                y = getattr(y, "logits", y)
                y = y[0] if isinstance(y, (tuple, list)) else y
                if not isinstance(y, Tensor) or y.dim() < 2:
                    raise ValueError(
                        "labels 'output': the model's output must be a tensor [batch, ..., classes]"
                    )
                mask = batch_mask(b)
                if y.dim() > 2:
                    last = -1 if mask is None else real_position(mask, -1).to(y.device)
                    y = y[:, -1] if mask is None else y[torch.arange(y.shape[0], device=y.device), last]
                out.append(y.reshape(y.shape[0], -1).argmax(-1).cpu())
        return torch.cat(out)
    path = Path(spec)
    if path.suffix == ".safetensors" and path.is_file():
        from hooked.io import read_tensors

        tensors = read_tensors(path)
        if "labels" not in tensors and len(tensors) != 1:
            raise ValueError(
                f"labels file {path}: expected a tensor named 'labels' (found {', '.join(tensors)})"
            )
        return tensors.get("labels", next(iter(tensors.values()))).long().flatten()
    if path.suffix == ".json" and path.is_file():
        from hooked.io import read_json

        data = read_json(path)
        data = data["labels"] if isinstance(data, dict) and "labels" in data else data
        if not isinstance(data, list) or not all(isinstance(v, int) for v in data):
            raise ValueError(f'labels file {path}: expected a list of integers or {{"labels": [...]}}')
        return torch.tensor(data, dtype=torch.long)
    raise ValueError(
        f"labels {spec!r}: expected input:POS, output, or an existing .safetensors / .json file "
        "of one label per row"
    )


def ridge_probe_analysis(
    model: Hookable,
    hook: str,
    data: Any,
    *,
    labels: str = "output",
    pool: str = "last",
    folds: int = 5,
    batch_size: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Ridge probe: how well a class label is linearly decodable at a hook (held-out k-fold accuracy).

    ``data`` may also be an activation store of ``hook`` (``hooked.store``); its labels then come
    from a file.

    Args:
        labels: input:POS (the input token at a position), output (the model's own prediction), or a
            .safetensors / .json file with one integer label per row.
        pool: for [batch, pos, d] activations: last, mean, or a position index (padded batches: of
            each row's real tokens).
        folds: stratified folds; each is held out once (every class needs at least this many rows).
        batch_size: split the model's data into batches of this many rows (streaming).
        seed: fold assignment and shuffled-control seed.
    """
    from analyses.spotlight.stream import split_data
    from hooked.checks import positive
    from hooked.errors import OptionError

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise OptionError("folds", f"must be an integer >= 2, got {folds!r}")
    if batch_size is not None:
        positive(batch_size=batch_size)
    pooled: str | int = int(pool) if pool.lstrip("-").isdigit() else pool
    if is_store(data):
        if labels.startswith("input:") or labels == "output":
            raise ValueError(
                f"labels {labels!r} need the model's inputs, which a store does not hold; pass a label file"
            )
        y = resolve_labels(labels, model, [])
        x = store_features(data, [hook], pools=[pooled])[pooled]
    else:
        batches = split_data(data, batch_size)
        y = resolve_labels(labels, model, batches)
        x = hook_features(model, batches, [hook], pools=[pooled])[pooled]
    require_finite(x, f"ridge-probe: the activations at {hook!r}")
    if x.shape[1] != y.shape[0]:
        raise ValueError(f"labels {labels!r} give {y.shape[0]} labels for {x.shape[1]} input rows")
    values, dense = torch.unique(y, return_inverse=True)
    counts = torch.bincount(dense)
    if int(counts.min()) < folds or len(values) < 2:
        raise ValueError(
            f"ridge-probe: {len(values)} classes with {counts.tolist()[:10]} rows each; every class needs "
            f"at least folds={folds} rows and there must be 2 classes or more (give the model a bigger "
            "batch: see its --model-* options)"
        )
    result = ridge_probes(x, dense, folds=folds, seed=seed)
    shuffled = dense[torch.randperm(len(dense), generator=torch.Generator().manual_seed(seed + 1))]
    control = ridge_probes(x, shuffled, folds=folds, seed=seed)
    return {
        "hook": hook,
        "labels": labels,
        "pool": pool,
        "n": int(x.shape[1]),
        "d": int(x.shape[2]),
        "classes": values.tolist() if len(values) <= 50 else len(values),
        "accuracy": float(result.accuracy[0]),
        "accuracy_per_fold": result.per_fold[:, 0].tolist(),
        "alpha": result.alpha[:, 0].tolist(),
        "chance": result.chance,
        "shuffled_labels_accuracy": float(control.accuracy[0]),
    }


# the command line may hand this analysis padded batches (``--data texts.txt``): it pools over each
# row's real tokens (see :mod:`hooked.lm.loading.command_line`)
ridge_probe_analysis.masks_padding = True  # type: ignore[attr-defined]
