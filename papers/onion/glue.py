"""Task glue for the repeat task: counterfactual batches for the interventions, loss and metric.

Everything here handles token tensors only; the interventions themselves are generic
(:mod:`interventions.subspace`, :mod:`interventions.onion`) and the model is reached through its
hook name. Each builder takes original sequences ``tokens`` [batch, T] with ``lengths`` [batch]
and returns an :class:`~interventions.intervention.InterventionBatch` whose base input is a dict
``{"x": modified tokens, "lengths": ..., "target": original tokens}`` (the decoder is
teacher-forced on the original, as in the paper) and whose target is ``(tokens, lengths)``: a
successful intervention makes the model output the *original* sequence.

* :func:`unigram_batch` (the paper's, variable k = the token at position k): rows are paired at
  random; each position below both lengths is swapped between the pair with probability 1/2;
  the swapped variables are copied back from the partner's state (``source_index``).
* :func:`bigram_batch` (variable k = tokens k, k+1): one position p gets a random token in the
  base; the source keeps the original tokens at p-1..p+1 and is random elsewhere; variables
  (p-1, p) and (p, p+1) are copied from the source.
* :func:`onion_batch`: position p changed from ``old`` to a random ``new``; the onion intervention
  gets ``old``, ``new``, ``pos``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from interventions.intervention import InterventionBatch
from papers.onion.repeat import RepeatSplit, exact_match, sequence_loss


def _positions(tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    pos = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
    return pos, pos < lengths[:, None]


def _base(modified: Tensor, tokens: Tensor, lengths: Tensor) -> dict[str, Tensor]:
    return {"x": modified, "lengths": lengths, "target": tokens}


def unigram_batch(
    tokens: Tensor, lengths: Tensor, generator: torch.Generator | None = None
) -> InterventionBatch:
    """Pairwise token swaps; ``args["vars"]`` [batch, T] marks the positions to copy back."""
    batch, steps = tokens.shape
    if batch % 2:
        raise ValueError(f"unigram_batch: the batch size must be even to pair rows, got {batch}")
    perm = torch.randperm(batch, generator=generator)
    first, second = perm[: batch // 2], perm[batch // 2 :]
    partner = torch.empty_like(perm)
    partner[first], partner[second] = second, first
    limit = torch.minimum(lengths[first], lengths[second])
    raw = torch.rand(batch // 2, steps, generator=generator) < 0.5
    raw &= torch.arange(steps)[None, :] < limit[:, None]
    swap = torch.zeros(batch, steps, dtype=torch.bool)
    swap[first], swap[second] = raw, raw
    modified = torch.where(swap, tokens[partner], tokens)
    return InterventionBatch(
        _base(modified, tokens, lengths), (tokens, lengths), source_index=partner, args={"vars": swap}
    )


def bigram_batch(
    tokens: Tensor, lengths: Tensor, n_symbols: int, generator: torch.Generator | None = None
) -> InterventionBatch:
    """One corrupted position per row; ``args["vars"]`` [batch, T - 1] marks the bigrams to copy."""
    batch, steps = tokens.shape
    pos, valid = _positions(tokens, lengths)
    p = (torch.rand(batch, generator=generator) * lengths).long()
    random = torch.randint(n_symbols, tokens.shape, generator=generator)
    hit = pos == p[:, None]
    corrupted = torch.where(hit, random, tokens)
    keep = ((pos - p[:, None]).abs() <= 1) & valid
    source = torch.where(keep, tokens, random)
    k = torch.arange(steps - 1)[None, :]
    vars = (k == p[:, None]) | (k + 1 == p[:, None])
    return InterventionBatch(
        _base(corrupted, tokens, lengths),
        (tokens, lengths),
        source={"x": source, "lengths": lengths},
        args={"vars": vars},
    )


def onion_batch(
    tokens: Tensor, lengths: Tensor, n_symbols: int, generator: torch.Generator | None = None
) -> InterventionBatch:
    """One position p changed from ``old`` to a uniformly random ``new`` (possibly the same)."""
    batch = tokens.shape[0]
    rows = torch.arange(batch)
    p = (torch.rand(batch, generator=generator) * lengths).long()
    old = tokens[rows, p]
    new = torch.randint(n_symbols, (batch,), generator=generator)
    modified = tokens.clone()
    modified[rows, p] = new
    return InterventionBatch(
        _base(modified, tokens, lengths), (tokens, lengths), args={"old": old, "new": new, "pos": p}
    )


def repeat_loss(output: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
    """Cross-entropy of the edited run against the original sequence."""
    return sequence_loss(output, *target)


def repeat_metric(output: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
    """Per row: the edited run outputs exactly the original sequence."""
    return exact_match(output, *target)


REGIMES = ("unigram", "bigram", "onion")


def make_batch(
    regime: str, tokens: Tensor, lengths: Tensor, n_symbols: int, generator: torch.Generator | None = None
) -> InterventionBatch:
    """The counterfactual batch of ``regime`` ('unigram', 'bigram' or 'onion')."""
    if regime == "unigram":
        return unigram_batch(tokens, lengths, generator)
    if regime == "bigram":
        return bigram_batch(tokens, lengths, n_symbols, generator)
    if regime == "onion":
        return onion_batch(tokens, lengths, n_symbols, generator)
    raise ValueError(f"unknown regime {regime!r}; expected one of {REGIMES}")


def sampler(
    regime: str, split: RepeatSplit, n_symbols: int, batch_size: int = 256
) -> Callable[[torch.Generator], InterventionBatch]:
    """``fn(generator) -> InterventionBatch`` drawing random rows of ``split`` (for ``fit``)."""

    def draw(g: torch.Generator) -> InterventionBatch:
        tokens, lengths = split.sample(batch_size, g)
        return make_batch(regime, tokens, lengths, n_symbols, g)

    return draw


def fixed_batches(
    regime: str, split: RepeatSplit, n_symbols: int, batch_size: int = 1000, seed: int = 1234
) -> list[InterventionBatch]:
    """The whole split as counterfactual batches, drawn once with a fixed seed (for ``evaluate``)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t, ln in split.batches(batch_size - batch_size % 2):
        if regime == "unigram" and t.shape[0] % 2:  # pairs need an even batch: drop the odd row
            t, ln = t[:-1], ln[:-1]
        if t.shape[0]:
            out.append(make_batch(regime, t, ln, n_symbols, g))
    return out
