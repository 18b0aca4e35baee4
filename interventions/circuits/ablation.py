"""Mean ablation for :mod:`interventions.circuits`: each sender replaced by its mean over a reference set.

A patched edge ``s -> r`` adds ``replacement_s - out_s(this run)`` to ``r``'s input (:mod:`.edges`).
Given a corrupt batch, ``replacement_s`` is ``s``'s output on it. Given :class:`MeanAblation`, it is
``s``'s output averaged over the rows of a reference set (one batch, or a list of batches: a data
set, read one batch at a time, so it need not fit in one forward):

* ``per_position=True``: at each position separately (``[..., pos, d_model]``); every reference
  batch must then have the clean input's shape apart from the batch axis (its token count);
* ``per_position=False``: over the positions too (one ``d_model`` vector per sender), any length.

Padding is left out of the mean: a reference batch given as a dict with an ``attention_mask``
(:func:`hooked.lm.tokenize`'s batches) weights each token by its mask. Every circuit function takes a
:class:`MeanAblation` wherever it takes the corrupt batch (``edge_patching``, ``path_patching``,
``run_patched_edges``, ``edge_attribution_patching`` with or without ``steps``, ``acdc``,
``evaluate_circuit``, ``faithfulness_curve``); EAP-IG then interpolates the input senders from their
mean to the clean run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hooked.circuit_graph import Graph
from hooked.protocol import Batch, Hookable, cache_batch, split_batch


@dataclass(frozen=True)
class MeanAblation:
    """Replace each sender by its mean output over ``reference`` (a batch, or a list of batches).

    ``per_position``: the mean at each position (the reference has the clean input's token count)
    or over positions too (any length).
    """

    reference: Batch | list[Batch]
    per_position: bool = True

    def batches(self) -> list[Batch]:
        """The reference batches (a list is several batches; anything else is one)."""
        refs = self.reference if isinstance(self.reference, list) else [self.reference]
        if not refs:
            raise ValueError("MeanAblation: the reference is an empty list; give at least one batch")
        return refs


def check_reference(ablation: MeanAblation, clean: Batch) -> None:
    """A ValueError naming the shapes when a reference batch cannot be averaged per position for
    ``clean`` (``per_position=True`` needs its first input's shape, batch axis aside, to be
    ``clean``'s: the token ids, whether or not a batch also carries an attention mask), or has no
    tensor with a batch axis."""
    want = [tuple(t.shape[1:]) for t in batch_tensors(clean)][:1]
    for k, batch in enumerate(ablation.batches()):
        got = [tuple(t.shape[1:]) for t in batch_tensors(batch)][:1]
        if not got:
            raise ValueError(
                f"MeanAblation: reference batch {k} has no tensor with a batch axis "
                f"(got {type(batch).__name__})"
            )
        if ablation.per_position and got != want:
            raise ValueError(
                f"MeanAblation(per_position=True): reference batch {k} has inputs of shapes {got} (batch "
                f"axis aside) and the clean batch {want}: a mean per position needs the same token count; "
                "pad or cut the reference, or use per_position=False (the mean over positions)"
            )


@torch.no_grad()
def mean_outputs(model: Hookable, graph: Graph, ablation: MeanAblation) -> Tensor:
    """Every sender's mean output over the reference: ``[senders, ..., d_model]`` (per position) or
    ``[senders, d_model]``; one forward per reference batch."""
    hooks = sorted({s.hook for s in graph.senders})
    total: Tensor | None = None
    count: Tensor | None = None
    for k, batch in enumerate(ablation.batches()):
        if any(t.shape[0] == 0 for t in batch_tensors(batch)[:1]):
            continue  # no rows: nothing to add to the sums (and no forward on an empty batch)
        _, cache = cache_batch(model, batch, hooks)
        outs = torch.stack([s.read(cache[s.hook]).detach() for s in graph.senders])  # [S, rows, ..., d]
        w = _weights(batch, outs).to(outs.dtype)  # [rows, ...]: 1 per token, 0 on padding
        keep = (1,) if ablation.per_position else tuple(range(1, outs.dim() - 1))
        part = (outs * w[None, ..., None]).sum(keep)
        n = w.sum(tuple(d - 1 for d in keep))
        if total is not None and part.shape != total.shape:
            raise ValueError(
                f"MeanAblation: reference batch {k} gives sender outputs of shape {tuple(outs.shape[1:])}, "
                f"earlier batches {tuple(total.shape[1:])} per row (per position, every batch needs the same "
                "token count)"
            )
        total = part if total is None else total + part
        count = n if count is None else count + n
    if total is None or count is None:
        raise ValueError("MeanAblation: no reference token to average (every reference batch has no rows)")
    empty = (count == 0).nonzero()
    if len(empty):
        where = f" at position {tuple(int(i) for i in empty[0])}" if count.dim() else ""
        raise ValueError(f"MeanAblation: no reference token{where} to average (every row is padding there)")
    return total / count[None, ..., None]


def expand_mean(mean: Tensor, rows: int, like: Sequence[int] | None) -> Tensor:
    """``mean`` as the senders' replacement for ``rows`` clean rows: ``[senders, rows, ..., d_model]``.

    ``like``: the shape of the senders' outputs on the clean batch ``[senders, rows, ..., d]`` (needed
    for a mean over positions, which has no position axis)."""
    if like is not None and mean.dim() == 2 and len(like) > 3:  # over positions: one vector per sender
        shape = (mean.shape[0], rows, *like[2:-1], mean.shape[-1])
        return mean.reshape(mean.shape[0], 1, *([1] * (len(like) - 3)), mean.shape[-1]).expand(shape)
    return mean.unsqueeze(1).expand(mean.shape[0], rows, *mean.shape[1:])


def needs_clean_shape(ablation: MeanAblation) -> bool:
    """Whether :func:`expand_mean` needs the clean outputs' shape (a mean over positions does)."""
    return not ablation.per_position


def batch_tensors(batch: Batch) -> list[Tensor]:
    """The tensors of ``batch`` that have a batch axis."""
    args, kwargs = split_batch(batch)
    return [v for v in (*args, *kwargs.values()) if isinstance(v, Tensor) and v.dim() > 0]


def _weights(batch: Batch, outs: Tensor) -> Tensor:
    """``[rows, ...]`` token weights of ``outs`` (``[S, rows, ..., d]``): the batch's attention mask
    where it has one of that shape, else ones."""
    mid = tuple(outs.shape[1:-1])
    mask = batch.get("attention_mask") if isinstance(batch, dict) else None
    if isinstance(mask, Tensor) and tuple(mask.shape) == mid:
        return mask.to(outs.device)
    return torch.ones(mid, device=outs.device)
