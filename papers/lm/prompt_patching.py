"""Activation patching on a language model's residual stream: a layer x position heatmap.

The classic factual-recall experiment: run a *corrupted* prompt (another subject, same number of
tokens) and patch in the *clean* prompt's residual stream at one layer and one position; the
logit difference between the clean answer and the corrupted answer at the last position says how
much of the clean behaviour that one activation restores. Every (layer, position) patch of the
grid rides in batched forwards (:func:`interventions.patching.patching_sweep`), not one forward per
patch.

It uses the hook protocol and :func:`hooked.lm.residual_hooks` (TransformerLens names on the
bridge, module paths on ``hooked.wrap``), so the same call runs on any backend. It sits with the
language-model reproduction (``hooked repro lm``'s ``patching`` stage) because it reads the model's
tokenizer and residual stream through :mod:`hooked.lm` (formerly ``analyses/lm_patching.py``; the
model-agnostic sweep is :func:`interventions.patching.patching_sweep`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hooked.lm import logits_of, residual_hooks, residual_labels, to_tokens, token_id
from hooked.protocol import Hookable, check_hookable
from hooked.sweeps import reads_positions
from hooked.typecheck import Int, typechecked
from interventions.patching import patching_sweep


@dataclass(frozen=True)
class PromptPair:
    """A clean prompt and a corrupted one with the same token count, and their answers."""

    clean: str
    corrupt: str
    answer: str  # the clean prompt's answer, one token (e.g. " Paris")
    wrong: str  # the corrupted prompt's answer, one token


EIFFEL = PromptPair(
    clean="The Eiffel Tower is in the city of",
    corrupt="The Colosseum is in the city of",
    answer=" Paris",
    wrong=" Rome",
)


def logit_diff(answer: int, wrong: int, position: int = -1) -> Callable[[Any], Tensor]:
    """Metric: ``logits[:, position, answer] - logits[:, position, wrong]`` per batch row."""

    def metric(out: Any) -> Tensor:
        logits = logits_of(out)[:, position]
        return logits[:, answer] - logits[:, wrong]

    metric.__qualname__ = f"logit_diff({answer}, {wrong})"
    return reads_positions(metric, [position])  # a sweep may run the output head there only


@dataclass
class PatchingResult:
    """The layer x position grid of a residual-stream patching sweep (clean into corrupt)."""

    logit_diff: Tensor  # [hooks, positions]: the metric after each patch
    clean: float  # the metric on the clean prompt
    corrupt: float  # ... and on the corrupted prompt (no patch)
    hooks: list[str]
    labels: list[str]  # one per hook, e.g. "pre 3"
    clean_tokens: list[str]
    corrupt_tokens: list[str]
    extra: dict = field(default_factory=dict)

    @property
    def restored(self) -> Tensor:
        """``(patched - corrupt) / (clean - corrupt)``: 0 = no effect, 1 = fully clean."""
        return (self.logit_diff - self.corrupt) / (self.clean - self.corrupt)

    def to_json(self) -> dict:
        return {
            "clean_logit_diff": self.clean,
            "corrupt_logit_diff": self.corrupt,
            "hooks": self.hooks,
            "labels": self.labels,
            "clean_tokens": self.clean_tokens,
            "corrupt_tokens": self.corrupt_tokens,
            "logit_diff": self.logit_diff,
            "restored": self.restored,
            **self.extra,
        }


@typechecked
def residual_patching(
    model: Any,
    clean: Int[Tensor, "batch pos"],
    corrupt: Int[Tensor, "batch pos"],
    answer: int,
    wrong: int,
    *,
    hooks: Sequence[str] | None = None,
    positions: Sequence[int] | None = None,
    chunk: int | None = 64,
    progress: bool = False,
) -> PatchingResult:
    """Patch the clean run's residual stream into the corrupted run at every (layer, position).

    Args:
        model: a hooked LM (``model(tokens) -> logits``), e.g. from ``hooked.lm.load``.
        clean, corrupt: token ids of the two prompts, the same shape.
        answer, wrong: token ids of the clean and corrupted answers.
        hooks: hook points to patch (default: :func:`hooked.lm.residual_hooks`).
        positions: token positions (default: all).
        chunk: patches per forward (bounds memory: each patch is one row of the batch).
    """
    check_hookable(model)
    if clean.shape != corrupt.shape:
        raise ValueError(
            f"residual_patching: clean {tuple(clean.shape)} and corrupt {tuple(corrupt.shape)} token ids "
            "must have the same shape (pick a corrupted subject with the same token count)"
        )
    hooks = list(hooks) if hooks is not None else residual_hooks(model)
    positions = list(positions) if positions is not None else list(range(clean.shape[1]))
    metric = logit_diff(answer, wrong)
    with torch.no_grad():
        clean_value = metric(model(clean)).float().mean().item()
        corrupt_value = metric(model(corrupt)).float().mean().item()
    grid = patching_sweep(model, corrupt, clean, hooks, metric, positions, chunk=chunk, progress=progress)
    tokenizer = getattr(model, "tokenizer", None)
    pieces = (
        (lambda ids: tokenizer.convert_ids_to_tokens(ids[0].tolist()))
        if tokenizer
        else (lambda ids: [str(i) for i in ids[0].tolist()])
    )
    default = hooks == residual_hooks(model)
    labels = residual_labels(len(hooks) - 1) if default else list(hooks)
    return PatchingResult(
        grid.cpu(), clean_value, corrupt_value, hooks, labels, pieces(clean), pieces(corrupt)
    )


def prompt_pair_patching(model: Hookable, pair: PromptPair = EIFFEL, **kwargs: Any) -> PatchingResult:
    """:func:`residual_patching` on a :class:`PromptPair` (tokenized with ``hooked.lm.to_tokens``)."""
    clean, corrupt = to_tokens(model, pair.clean), to_tokens(model, pair.corrupt)
    if clean.shape != corrupt.shape:
        raise ValueError(
            f"the prompts {pair.clean!r} ({clean.shape[1]} tokens) and {pair.corrupt!r} "
            f"({corrupt.shape[1]} tokens) must have the same number of tokens"
        )
    result = residual_patching(
        model, clean, corrupt, token_id(model, pair.answer), token_id(model, pair.wrong), **kwargs
    )
    result.extra["pair"] = vars(pair)
    return result


def prompt_pairs_patching(
    model: Hookable, pairs: Sequence[PromptPair], **kwargs: Any
) -> list[PatchingResult]:
    """:func:`prompt_pair_patching` on every pair; under ``torchrun`` the pairs are shared over the
    ranks (:func:`hooked.distributed.sweep`) and every rank gets every result, in order."""
    from hooked import distributed

    pairs = list(pairs)
    return distributed.sweep(lambda pair: prompt_pair_patching(model, pair, **kwargs), pairs, gather="all")


def plot_patching(result: PatchingResult, title: str = "") -> Any:
    """Heatmap of the restored fraction, layers (rows) x positions (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = result.restored.numpy()
    n_rows, n_cols = data.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n_cols, 1.2 + 0.22 * n_rows))
    bound = max(1.0, float(abs(data).max()))
    im = ax.imshow(data, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto", interpolation="nearest")
    cols = [
        f"{c}\n{k}" if c != k else c for c, k in zip(_show(result.clean_tokens), _show(result.corrupt_tokens))
    ]
    ax.set_xticks(range(n_cols), cols[:n_cols], fontsize=8)
    ax.set_yticks(range(n_rows), result.labels, fontsize=7)
    ax.set_xlabel("position (clean token / corrupted token)")
    ax.set_ylabel("residual stream")
    fig.colorbar(im, ax=ax, label="logit difference restored\n(patched - corrupt) / (clean - corrupt)")
    ax.set_title(
        title
        or f"activation patching, clean -> corrupt\n"
        f"clean LD {result.clean:.2f}, corrupt LD {result.corrupt:.2f}",
        fontsize=9,
    )
    return fig


def _show(pieces: list[str]) -> list[str]:
    return [p.replace("Ġ", "·").replace("Ċ", "\\n") for p in pieces]
