"""Views of transformer results: attention patterns, patching grids, the logit lens, direct logit
attribution.

They read tensors, an :class:`~hooked.ActivationCache` and token strings, never a model: compute with
``hooked.lm`` (``logit_lens``, ``logit_attrs``, ``run_with_cache``) or ``interventions`` and pass the
results here. Token strings are shown as given (``tokenizer.convert_ids_to_tokens`` gives ``ĠParis``;
``[tokenizer.decode([i]) for i in ids]`` gives `` Paris``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hooked.errors import CACHE_OWNER, UnknownHookError
from hooked.views.charts import bars_panel, heatmap_panel
from hooked.views.page import View, array, as_numpy, labels

PATTERN_SUFFIX = "hook_pattern"


# ---------------------------------------------------------------------- attention
def _layer_of(name: str) -> int:
    found = re.search(r"\.(\d+)\.", f".{name}.")
    return int(found.group(1)) if found else -1


def pattern_hooks(cache: Mapping[str, Any]) -> list[str]:
    """The names in ``cache`` that hold attention patterns (ending in ``hook_pattern``: TransformerLens's
    ``blocks.L.attn.hook_pattern``, ``hooked.wrap``'s ``model.layers.L.self_attn.hook_pattern``), by layer."""
    names = [n for n in cache if str(n).endswith(PATTERN_SUFFIX)]
    return sorted(names, key=_layer_of)


def _read(cache: Mapping[str, Any], name: str) -> torch.Tensor:
    try:
        return cache[name]
    except UnknownHookError:
        raise
    except KeyError:
        raise UnknownHookError(name, list(cache), owner=CACHE_OWNER) from None


def attention(
    patterns: Mapping[str, Any] | torch.Tensor,
    tokens: Sequence[str],
    *,
    hooks: Sequence[str] | None = None,
    batch: int = 0,
    layer_labels: Sequence[str] | None = None,
    initial: tuple[int, int] = (0, 0),
    title: str = "attention patterns",
) -> View:
    """Every layer and head's attention pattern: a grid of thumbnails (click one) and the chosen head's
    pattern with the tokens on both axes (rows: destination / query, columns: source / key); hover shows
    destination, source and weight.

    Args:
        patterns: an ActivationCache (or dict) holding the patterns ``[batch, head, dest, src]``, or a
            tensor ``[layer, head, dest, src]``.
        tokens: the prompt's tokens, one string per position.
        hooks: the pattern hooks to show, one per layer (default: every name ending in ``hook_pattern``,
            by layer number). A name the cache lacks raises an error naming it.
        batch: which row of the batch.
        layer_labels: a name per layer (default ``L0``, ``L1``, ...).
        initial: the (layer, head) shown first.
    Weights are stored as float16 (about 3 significant digits) to keep the file small.
    """
    if isinstance(patterns, Mapping):
        names = list(hooks) if hooks is not None else pattern_hooks(patterns)
        if not names:
            raise ValueError(
                "attention: the cache holds no attention pattern (no name ends in 'hook_pattern'; it holds "
                f"{len(patterns)} activations). Record them with run_with_cache(tokens, names_filter=lambda "
                "n: n.endswith('hook_pattern')), or name them with hooks="
            )
        stacked = []
        for name in names:
            t = _read(patterns, name)
            if t.dim() == 4:
                if not -t.shape[0] <= batch < t.shape[0]:
                    raise IndexError(
                        f"attention: batch {batch} is out of range for {name!r} of shape {tuple(t.shape)}"
                    )
                t = t[batch]
            if t.dim() != 3:
                raise ValueError(
                    f"attention: {name!r} has shape {tuple(t.shape)}; a pattern is [batch, head, dest, src]"
                )
            stacked.append(t.detach().float().cpu())
        shapes = {tuple(t.shape) for t in stacked}
        if len(shapes) > 1:
            raise ValueError(f"attention: the patterns have different shapes {sorted(shapes)}")
        data = torch.stack(stacked)
    else:
        data = patterns.detach().float().cpu()
        if data.dim() == 3:
            data = data[None]
        if data.dim() != 4:
            raise ValueError(
                f"attention: patterns must be [layer, head, dest, src], got shape {tuple(data.shape)}"
            )
    n_layers, n_heads, dest, src = data.shape
    if dest != src:
        raise ValueError(
            f"attention: a pattern must be square [dest, src] over the prompt, got {dest} x {src}"
        )
    tokens = [str(t) for t in tokens]
    if len(tokens) != dest:
        raise ValueError(f"attention: {len(tokens)} tokens, but the patterns cover {dest} positions")
    if n_layers and n_heads and not (0 <= initial[0] < n_layers and 0 <= initial[1] < n_heads):
        raise ValueError(f"attention: initial head {initial} is outside {n_layers} layers x {n_heads} heads")
    panel = {
        "type": "attention",
        "tokens": tokens,
        "patterns": array(data, encoding="f16"),
        "labels": labels(layer_labels, n_layers, "attention layer_labels") if layer_labels else None,
        "initial": list(initial),
        "note": f"{n_layers} layers x {n_heads} heads; rows: destination (query), columns: source (key)",
    }
    return View([panel], title)


# ---------------------------------------------------------------------- patching and attribution grids
def patching_grid(
    values: Any,
    *,
    rows: Sequence[Any] | None = None,
    cols: Sequence[Any] | None = None,
    attribution: Any = None,
    title: str = "activation patching",
    names: tuple[str, str] = ("activation patching", "attribution patching"),
    xlabel: str = "position",
    ylabel: str = "layer",
    value_label: str = "metric",
    shared_scale: bool = True,
    note: str = "",
) -> View:
    """A patching or attribution grid (layers x positions, or layers x heads) on a diverging scale centred
    on zero; hover shows the layer, the column (its token) and the exact value.

    ``values``: ``[rows, cols]``, or a dict of such grids shown side by side (``{"exact": ..,
    "attribution": ..}``); ``attribution=`` adds a second grid beside ``values`` (named by ``names``).
    ``cols``: the tokens (or head names) of the columns; ``rows``: the layer names. With ``shared_scale``
    every grid uses the same colour range, so colours compare across them.
    """
    grids: dict[str, np.ndarray]
    if isinstance(values, Mapping):
        if attribution is not None:
            raise ValueError("patching_grid: give attribution= or a dict of grids, not both")
        grids = {str(k): as_numpy(v, f"values[{k!r}]") for k, v in values.items()}
    else:
        grids = {names[0]: as_numpy(values, "values")}
        if attribution is not None:
            grids[names[1]] = as_numpy(attribution, "attribution")
    if not grids:
        raise ValueError("patching_grid: no grids given")
    shapes = {k: g.shape for k, g in grids.items()}
    for k, g in grids.items():
        if g.ndim != 2:
            raise ValueError(f"patching_grid: {k!r} must be 2-d [rows, cols], got shape {tuple(g.shape)}")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"patching_grid: the grids have different shapes {shapes}")
    n_rows, n_cols = next(iter(grids.values())).shape
    row_names = labels(rows, n_rows, "patching_grid rows")
    col_names = labels(cols, n_cols, "patching_grid cols")
    scale: dict[str, Any] = {"kind": "diverging"}
    if shared_scale:
        finite = np.concatenate([g[np.isfinite(g)].ravel() for g in grids.values()])
        scale["max"] = float(np.abs(finite).max()) if finite.size else 1.0
    tips = (
        [[f"{xlabel} index {c}" for c in range(n_cols)] for _ in range(n_rows)] if cols is not None else None
    )
    panels = [
        heatmap_panel(
            g,
            rows=row_names,
            cols=col_names,
            scale=scale,
            title=name if len(grids) > 1 else "",
            xlabel=xlabel,
            ylabel=ylabel,
            value_label=value_label,
            tips=tips,
            note=note,
        )
        for name, g in grids.items()
    ]
    return View(panels, title)


# ---------------------------------------------------------------------- logit lens
def _vocab_strings(vocab: Sequence[str] | Callable[[list[int]], Sequence[str]], ids: list[int]) -> list[str]:
    if callable(vocab):
        out = list(vocab(ids))
    else:
        try:
            out = [vocab[i] for i in ids]
        except IndexError:
            raise ValueError(
                f"logit_lens: vocab has {len(vocab)} entries, but a token id is {max(ids)}"
            ) from None
    if len(out) != len(ids):
        raise ValueError(f"logit_lens: vocab gave {len(out)} strings for {len(ids)} ids")
    return [str(s) for s in out]


def logit_lens(
    logits: torch.Tensor,
    tokens: Sequence[str],
    vocab: Sequence[str] | Callable[[list[int]], Sequence[str]],
    *,
    layers: Sequence[str] | None = None,
    batch: int = 0,
    k: int = 5,
    diff: tuple[int, int] | None = None,
    token: int | None = None,
    title: str = "logit lens",
) -> View:
    """The logit lens (or any accumulated-residual readout): layers x positions, each cell the top token
    and its probability; hover shows the top ``k`` with probabilities.

    Args:
        logits: ``[layers, pos, vocab]`` or ``hooked.lm.logit_lens``'s ``[layers, batch, pos, vocab]``.
        tokens: the prompt's tokens (the columns).
        vocab: id -> string: a list, or a function of a list of ids (``tokenizer.convert_ids_to_tokens``).
        layers: row names (``hooked.lm.logit_lens(..., return_labels=True)``'s labels).
        diff: ``(a, b)``: colour by the logit difference ``logit[a] - logit[b]`` (diverging) instead of
            the top token's probability.
        token: colour by the probability of this token id instead.
    """
    x = logits.detach().float().cpu()
    if x.dim() == 4:
        x = x[:, batch]
    if x.dim() != 3:
        raise ValueError(f"logit_lens: logits must be [layers, pos, vocab], got shape {tuple(logits.shape)}")
    n_layers, n_pos, n_vocab = x.shape
    if len(tokens) != n_pos:
        raise ValueError(f"logit_lens: {len(tokens)} tokens, but the logits cover {n_pos} positions")
    if diff is not None and token is not None:
        raise ValueError("logit_lens: give diff= or token=, not both")
    for what, ids in (("diff", diff or ()), ("token", () if token is None else (token,))):
        for i in ids:
            if not 0 <= int(i) < n_vocab:
                raise ValueError(f"logit_lens: {what} token id {i} is outside the vocabulary of {n_vocab}")
    k = max(1, min(k, n_vocab)) if n_vocab else 0
    probs = torch.softmax(x, dim=-1)
    top = probs.topk(k, dim=-1) if k else None
    if top is not None and top.indices.numel():
        ids = torch.unique(top.indices).tolist()
        names = dict(zip(ids, _vocab_strings(vocab, ids)))
        top_ids, top_p = top.indices.tolist(), top.values.tolist()
    else:
        names, top_ids, top_p = {}, [[[] for _ in range(n_pos)] for _ in range(n_layers)], None
    text = [[names[top_ids[r][c][0]] if top_ids[r][c] else "" for c in range(n_pos)] for r in range(n_layers)]
    tips = [
        [
            "\n".join(
                f"{j + 1}. {names[i]!r}  p={p:.4g}"
                for j, (i, p) in enumerate(zip(top_ids[r][c], top_p[r][c]))
            )
            if top_p is not None
            else ""
            for c in range(n_pos)
        ]
        for r in range(n_layers)
    ]
    if diff is not None:
        a, b = diff
        values = x[..., a] - x[..., b]
        scale: Any = "diverging"
        value_label = f"logit diff {_vocab_strings(vocab, [a])[0]!r} - {_vocab_strings(vocab, [b])[0]!r}"
    elif token is not None:
        values, scale = probs[..., token], {"kind": "sequential", "min": 0.0, "max": 1.0}
        value_label = f"p({_vocab_strings(vocab, [token])[0]!r})"
    else:
        values = top.values[..., 0] if top is not None else torch.zeros(n_layers, n_pos)
        scale, value_label = {"kind": "sequential", "min": 0.0, "max": 1.0}, "top-1 probability"
    panel = heatmap_panel(
        values,
        rows=labels(layers, n_layers, "logit_lens layers"),
        cols=tokens,
        scale=scale,
        xlabel="position",
        ylabel="layer",
        value_label=value_label,
        text=text,
        tips=tips,
        cell_w=max(40, min(72, 900 // max(1, n_pos))),
        cell_h=18,
        note=f"each cell: the top token; hover: top {k} with probabilities",
    )
    return View([panel], title)


# ---------------------------------------------------------------------- direct logit attribution
def logit_attribution(
    values: Any,
    names: Sequence[str],
    *,
    title: str = "direct logit attribution",
    value_label: str = "logit attribution",
    sort: bool = False,
) -> View:
    """Bars of each component's direct logit attribution (``hooked.lm.logit_attrs`` of
    ``decompose_resid``'s stack), in the order given or, with ``sort``, by size."""
    a = as_numpy(values, "values").ravel()
    names = labels(names, a.size, "logit_attribution names")
    if sort:
        order = np.argsort(-np.nan_to_num(np.abs(a), nan=-1.0), kind="stable")
        a, names = a[order], [names[i] for i in order]
    return View([bars_panel(a, names, value_label=value_label)], title)


def head_attribution(
    values: Any,
    *,
    layer_labels: Sequence[str] | None = None,
    top: int = 20,
    title: str = "direct logit attribution per head",
    value_label: str = "logit attribution",
) -> View:
    """Per-head values ``[layers, heads]`` (direct logit attribution, a patching effect): a layers x heads
    grid on a diverging scale, and bars of the ``top`` heads by size."""
    a = as_numpy(values, "values")
    if a.ndim != 2:
        raise ValueError(f"head_attribution: values must be [layers, heads], got shape {tuple(a.shape)}")
    n_layers, n_heads = a.shape
    rows = labels(layer_labels, n_layers, "head_attribution layer_labels")
    grid = heatmap_panel(
        a,
        rows=rows,
        cols=[f"H{h}" for h in range(n_heads)],
        scale="diverging",
        xlabel="head",
        ylabel="layer",
        value_label=value_label,
        title="every head",
    )
    flat = a.ravel()
    order = np.argsort(-np.nan_to_num(np.abs(flat), nan=-1.0), kind="stable")[: max(0, top)]
    names = [
        f"L{i // n_heads}H{i % n_heads}" if layer_labels is None else f"{rows[i // n_heads]} H{i % n_heads}"
        for i in order
    ]
    panels = [grid]
    if len(order):
        panels.append(
            bars_panel(flat[order], names, value_label=value_label, title=f"top {len(order)} heads by size")
        )
    return View(panels, title)
