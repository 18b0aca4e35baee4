"""The sparse kernels of training: only the active (row, feature) pairs cost gradient work.

A TopK dictionary of width ``M`` on ``d``-wide rows computes the dense pre-activations ``[B, M]``
once (one matmul, no graph), keeps ``k`` entries per row and needs gradients only there: for the
encoder rows of the active features, for the decoder rows, and for the input. Written densely,
each of those is another ``[B, M] x d`` matmul; here each is a gather or a scatter of ``B * k``
rows of length ``d`` (``torch.nn.functional.embedding_bag`` and its backward), so a step costs
about one dense matmul instead of four.

Active pairs are given as bags: ``cols [N]`` (feature index of each active pair, row by row) and
``offsets [B]`` (where each row's entries start), the layout ``embedding_bag`` takes, with
``rows [N]`` the row of each pair.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class _SelectedPre(torch.autograd.Function):
    """``values[n] = c[rows[n]] @ enc[cols[n]] + b_enc[cols[n]]``, read off the dense ``pre``."""

    @staticmethod
    def forward(
        ctx: Any,
        c: Tensor,
        enc: Tensor,
        b_enc: Tensor,
        pre: Tensor,
        rows: Tensor,
        cols: Tensor,
        offsets: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(c, enc, cols, offsets)
        ctx.width = enc.shape[0]
        return pre[rows, cols]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        c, enc, cols, offsets = ctx.saved_tensors
        grad_c = grad_enc = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_c = F.embedding_bag(cols, enc, offsets, mode="sum", per_sample_weights=grad)
        if ctx.needs_input_grad[1]:
            grad_enc = bag_weight_grad(cols, offsets, grad, c, enc)
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(ctx.width, dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        return grad_c, grad_enc, grad_b, None, None, None, None


def selected_pre(
    c: Tensor, enc: Tensor, b_enc: Tensor, pre: Tensor, rows: Tensor, cols: Tensor, offsets: Tensor
) -> Tensor:
    """The pre-activations at the active pairs, differentiable in ``c``, ``enc`` and ``b_enc``
    (``pre = c @ enc.T + b_enc`` computed without a graph; ``enc`` is ``[M, d]``)."""
    return _SelectedPre.apply(c, enc, b_enc, pre, rows, cols, offsets)


def decode_bags(cols: Tensor, offsets: Tensor, acts: Tensor, dec: Tensor) -> Tensor:
    """``sum_n acts[n] * dec[cols[n]]`` per row ``[B, d]`` (differentiable in ``acts`` and ``dec``)."""
    return F.embedding_bag(cols, dec, offsets, mode="sum", per_sample_weights=acts)


def bag_weight_grad(
    cols: Tensor, offsets: Tensor, weights: Tensor, rows_grad: Tensor, like: Tensor
) -> Tensor:
    """``G[cols[n]] += weights[n] * rows_grad[row of n]`` (``G`` shaped as ``like``, ``[M, d]``):
    the gradient ``embedding_bag`` gives its weight matrix, taken from its own backward (one pass
    over the ``N`` pairs; a scatter of ``N x d`` products would hold them all in memory)."""
    with torch.enable_grad():
        w = like.detach().requires_grad_(True)
        out = F.embedding_bag(cols, w, offsets, mode="sum", per_sample_weights=weights.detach())
        (g,) = torch.autograd.grad(out, w, grad_outputs=rows_grad)
    return g


def topk_bags(pre: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` largest entries of each row as bags: ``rows``, ``cols``, ``offsets``."""
    B = pre.shape[0]
    cols = pre.topk(k, dim=-1, sorted=False).indices.reshape(-1)
    rows = torch.arange(B, device=pre.device).repeat_interleave(k)
    offsets = torch.arange(0, B * k, k, device=pre.device)
    return rows, cols, offsets


def mask_bags(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The ``True`` entries of a ``[B, M]`` mask as bags (row-major)."""
    rows, cols = mask.nonzero(as_tuple=True)
    counts = mask.sum(dim=1)
    offsets = torch.cumsum(counts, 0) - counts
    return rows, cols, offsets
