"""The sparse kernel of training: only the active (row, feature) pairs cost gradient work.

A TopK dictionary of width ``M`` on ``d``-wide rows computes the dense pre-activations ``[B, M]``
once (one matmul, no graph) and keeps ``k`` entries per row. :func:`sparse_code` decodes those
and gives gradients only where they are non-zero: to the encoder and decoder rows of the active
features, to their encoder biases and to the input. Written densely, each of those is another
``[B, M] x d`` matmul; here each is a gather-and-sum of ``B * k`` rows of length ``d``
(``torch.nn.functional.embedding_bag``), so a step costs about one dense matmul instead of four.

Active pairs are given as bags: ``cols [N]`` (feature index of each active pair, row by row),
``offsets [B]`` (where each row's entries start; the layout ``embedding_bag`` takes) and
``rows [N]`` (the row of each pair). The weight gradients are sums over the pairs of each
feature: the pairs are sorted by feature once per step and the same ``embedding_bag`` sums them,
one bag per feature (no ``[N, d]`` products held in memory, no scatter).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class _SparseCode(torch.autograd.Function):
    """``out[b] = sum_n relu(values[n]) * dec[cols[n]]`` over the pairs ``n`` of row ``b``, where
    ``values[n] = c[b] @ enc[cols[n]] + b_enc[cols[n]]`` was computed beforehand without a graph."""

    @staticmethod
    def forward(
        ctx: Any,
        c: Tensor,
        enc: Tensor,
        b_enc: Tensor,
        dec: Tensor,
        values: Tensor,
        rows: Tensor,
        cols: Tensor,
        offsets: Tensor,
    ) -> tuple[Tensor, Tensor]:
        acts = torch.relu(values)
        out = F.embedding_bag(cols, dec, offsets, mode="sum", per_sample_weights=acts)
        ctx.save_for_backward(c, enc, dec, acts, rows, cols, offsets)
        ctx.mark_non_differentiable(acts)
        return out, acts

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, _grad_acts: Tensor | None) -> tuple[Tensor | None, ...]:
        c, enc, dec, acts, rows, cols, offsets = ctx.saved_tensors
        need_c, need_enc, need_b, need_dec = ctx.needs_input_grad[:4]
        width = dec.shape[0]
        grad_out = grad_out.contiguous()
        order, starts = feature_bags(cols, width)
        row_of = rows[order]
        g_c = g_enc = g_b = g_dec = None
        if need_dec:  # dec[m] gets sum over m's pairs of acts * grad_out[row]
            g_dec = F.embedding_bag(row_of, grad_out, starts, mode="sum", per_sample_weights=acts[order])
        if need_c or need_enc or need_b:
            g_pre = pair_dots(grad_out, dec, cols, offsets) * (acts > 0)
            if need_c:
                g_c = F.embedding_bag(cols, enc, offsets, mode="sum", per_sample_weights=g_pre)
            if need_enc:
                g_enc = F.embedding_bag(row_of, c, starts, mode="sum", per_sample_weights=g_pre[order])
            if need_b:
                g_b = torch.zeros(width, dtype=g_pre.dtype, device=g_pre.device).index_add_(0, cols, g_pre)
        return g_c, g_enc, g_b, g_dec, None, None, None, None


def sparse_code(
    c: Tensor,
    enc: Tensor,
    b_enc: Tensor,
    dec: Tensor,
    values: Tensor,
    rows: Tensor,
    cols: Tensor,
    offsets: Tensor,
) -> tuple[Tensor, Tensor]:
    """The decoded active features ``[B, d_out]`` (no ``b_dec``) and their activations ``[N]``.

    ``values [N]`` are the pre-activations ``c @ enc.T + b_enc`` at the pairs (``enc`` is
    ``[M, d_in]``, ``dec`` ``[M, d_out]``), computed without a graph; the result is
    differentiable in ``c``, ``enc``, ``b_enc`` and ``dec`` as if ``values`` had been computed
    with one, through a ReLU.
    """
    return _SparseCode.apply(c, enc, b_enc, dec, values, rows, cols, offsets)


def feature_bags(cols: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """The pairs grouped by feature: ``order`` (pair indices sorted by feature) and ``starts``
    ``[width]`` (where each feature's pairs start in ``order``; a feature with none gets an empty bag)."""
    order = torch.argsort(cols, stable=True)
    counts = torch.bincount(cols, minlength=width)
    return order, counts.cumsum(0) - counts


def pair_dots(a: Tensor, table: Tensor, cols: Tensor, offsets: Tensor) -> Tensor:
    """``a[row of n] @ table[cols[n]]`` for every pair ``n`` ``[N]`` (a sampled matmul: only the
    ``N`` entries of ``a @ table.T`` that are asked for)."""
    n = cols.numel()
    crow = torch.cat([offsets, offsets.new_full((1,), n)])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the sampled matmul is all we use
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            crow, cols, a.new_zeros(n), size=(a.shape[0], table.shape[0]), check_invariants=False
        )
        # beta=0 still multiplies the pattern's values, hence zeros there (not an empty tensor)
        return torch.sparse.sampled_addmm(pattern, a, table.T, beta=0.0).values()


def topk_bags(pre: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``k`` largest entries of each row as bags: ``values``, ``rows``, ``cols``, ``offsets``."""
    B = pre.shape[0]
    values, index = pre.topk(k, dim=-1, sorted=False)
    rows = torch.arange(B, device=pre.device).repeat_interleave(k)
    offsets = torch.arange(0, B * k, k, device=pre.device)
    return values.reshape(-1), rows, index.reshape(-1), offsets


def mask_bags(pre: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``True`` entries of a ``[B, M]`` mask as bags (row-major), with ``pre``'s values there."""
    rows, cols = mask.nonzero(as_tuple=True)
    counts = mask.sum(dim=1)
    offsets = torch.cumsum(counts, 0) - counts
    return pre[rows, cols], rows, cols, offsets
