"""The three simple mechanistic encoders: they read the weights as numbers (``docs/methods/weight-space.md``).

* :class:`FlatEncoder`: an MLP on all parameters flattened, trained with hidden-neuron
  permutation augmentation (each batch sees every member under fresh random permutations of
  its hidden units, which leave its function unchanged).
* :class:`StatsEncoder`: mean, variance and the quantiles {0, .25, .5, .75, 1} of every weight
  tensor, then an MLP.
* :class:`TransformerEncoder`: one token per weight row of every layer (the row of
  [W_ih | W_hh | b_ih | b_hh] that computes one gate of one unit; the head's rows with their
  bias), a CLS token, learned positions, pre-norm transformer blocks; also trained with
  permutation augmentation, since the positions break the weights' symmetry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hooked.checkpoint import loadable
from hooked.hook_point import HookPoint
from papers.weight_space.encoders.base import HookedMLP, WeightEncoder
from papers.weight_space.zoo.lstm import LSTMLayout, flatten_params, permute_hidden, random_permutations


def augment(params: Mapping[str, Tensor], layout: LSTMLayout) -> dict[str, Tensor]:
    """Every member under a fresh random permutation of the hidden units of each layer."""
    m = params["head.weight"].shape[0]
    return permute_hidden(params, random_permutations(m, layout, device=params["head.weight"].device))


@loadable
class FlatEncoder(WeightEncoder):
    """MLP on the flattened parameters.

    Args:
        layout: the zoo member's sizes.
        hidden: hidden layer sizes (the paper: 3 x 128).
        embed_dim: embedding size.
        augment: permute hidden units at random while training.
    """

    family = "mechanistic"

    def __init__(
        self, layout, *, hidden: Sequence[int] = (128, 128, 128), embed_dim: int = 16, augment: bool = True
    ):
        super().__init__(layout, embed_dim)
        self.config = dict(
            layout=self.layout.to_json(), hidden=list(hidden), embed_dim=embed_dim, augment=augment
        )
        self.augment = augment
        self.hook_flat = HookPoint()
        self.mlp = HookedMLP([self.layout.n_params, *hidden, embed_dim])

    def encode(self, params: Mapping[str, Tensor]) -> Tensor:
        if self.augment and self.training:
            params = augment(params, self.layout)
        return self.mlp(self.hook_flat(flatten_params(params, self.layout)))


QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def layer_statistics(
    params: Mapping[str, Tensor], keys: Sequence[str], quantiles: Sequence[float] = QUANTILES
) -> Tensor:
    """[M, tensors x (2 + quantiles)]: mean, variance and quantiles of each tensor, per member."""
    q = torch.tensor(quantiles, dtype=params[keys[0]].dtype, device=params[keys[0]].device)
    feats = []
    for k in keys:
        flat = params[k].flatten(1)
        feats += [flat.mean(1, keepdim=True), flat.var(1, keepdim=True), torch.quantile(flat, q, dim=1).T]
    return torch.cat(feats, dim=1)


@loadable
class StatsEncoder(WeightEncoder):
    """Layerwise statistics -> MLP.

    Args:
        layout: the zoo member's sizes.
        hidden: hidden layer sizes of the MLP.
        embed_dim: embedding size.
    """

    family = "mechanistic"

    def __init__(self, layout, *, hidden: Sequence[int] = (128, 128), embed_dim: int = 16):
        super().__init__(layout, embed_dim)
        self.config = dict(layout=self.layout.to_json(), hidden=list(hidden), embed_dim=embed_dim)
        self.keys = list(self.layout.shapes)
        self.hook_stats = HookPoint()
        self.mlp = HookedMLP([len(self.keys) * (2 + len(QUANTILES)), *hidden, embed_dim])

    def encode(self, params: Mapping[str, Tensor]) -> Tensor:
        return self.mlp(self.hook_stats(layer_statistics(params, self.keys)))


def row_tokens(params: Mapping[str, Tensor], layout: LSTMLayout) -> list[Tensor]:
    """Per layer [M, 4H, d_l + H + 2] rows of [W_ih | W_hh | b_ih | b_hh]; the head [M, d_out, H + 1]."""
    out = []
    for l in range(layout.layers):
        out.append(
            torch.cat(
                [
                    params[f"lstm.weight_ih_l{l}"],
                    params[f"lstm.weight_hh_l{l}"],
                    params[f"lstm.bias_ih_l{l}"][..., None],
                    params[f"lstm.bias_hh_l{l}"][..., None],
                ],
                dim=-1,
            )
        )
    out.append(torch.cat([params["head.weight"], params["head.bias"][..., None]], dim=-1))
    return out


class Block(nn.Module):
    """Pre-norm transformer block with hook points on both residual contributions."""

    def __init__(self, d: int, heads: int, d_ff: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"TransformerEncoder: d_model={d} is not divisible by heads={heads}")
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))
        self.hook_attn_out = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        m, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(m, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(m, n, d)
        x = x + self.hook_attn_out(self.proj(a))
        x = x + self.hook_mlp_out(self.ff(self.ln2(x)))
        return self.hook_resid_post(x)


@loadable
class TransformerEncoder(WeightEncoder):
    """Parameter transformer: a token per weight row, a CLS token, learned positions.

    Args:
        layout: the zoo member's sizes.
        d_model: token width (the paper: 128).
        n_layers: transformer blocks (the paper: 6).
        heads: attention heads (the paper: 2).
        embed_dim: embedding size.
        augment: permute hidden units at random while training.
    """

    family = "mechanistic"

    def __init__(
        self,
        layout,
        *,
        d_model: int = 128,
        n_layers: int = 6,
        heads: int = 2,
        embed_dim: int = 16,
        augment: bool = True,
    ):
        super().__init__(layout, embed_dim)
        self.config = dict(
            layout=self.layout.to_json(),
            d_model=d_model,
            n_layers=n_layers,
            heads=heads,
            embed_dim=embed_dim,
            augment=augment,
        )
        L, H = self.layout, self.layout.hidden
        self.augment = augment
        widths = [(L.d_in if l == 0 else H) + H + 2 for l in range(L.layers)] + [H + 1]
        self.embed_rows = nn.ModuleList(nn.Linear(w, d_model) for w in widths)
        n_tokens = 1 + 4 * H * L.layers + L.d_out
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.randn(1, n_tokens, d_model) / math.sqrt(d_model))
        self.hook_tokens = HookPoint()
        self.blocks = nn.ModuleList(Block(d_model, heads, 4 * d_model) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model)
        self.hook_cls = HookPoint()
        self.out = nn.Linear(d_model, embed_dim)

    def encode(self, params: Mapping[str, Tensor]) -> Tensor:
        if self.augment and self.training:
            params = augment(params, self.layout)
        rows = [emb(r) for emb, r in zip(self.embed_rows, row_tokens(params, self.layout))]
        m = rows[0].shape[0]
        x = torch.cat([self.cls.expand(m, -1, -1), *rows], dim=1) + self.pos
        x = self.hook_tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.out(self.hook_cls(self.ln_final(x[:, 0])))
