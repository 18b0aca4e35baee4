"""Deep-weight-space (DWS) layers adapted to LSTMs: linear maps of a network's weights that commute
with every permutation of its hidden units (``docs/methods/weight-space.md``).

The weights of an L-layer LSTM with a linear head are 4L + 2 tensors. Each is viewed with the
four gates (i, f, g, o) as channels (the head's tensors are repeated over the four channels), so
``weight_ih_l`` is [4, H, d], ``weight_hh_l`` [4, H, H], the biases [4, H], the head [4, d_out, H]
and [4, d_out]. Every axis belongs to a *group*: ``h{l}`` (the hidden units of layer l, permuted
together wherever they appear: rows of layer l's tensors, both axes of ``weight_hh_l``, the
columns of the next layer's ``weight_ih`` or of the head), ``x`` (inputs) or ``y`` (outputs).

For each tensor T, a layer adds up

* a 1x1 map of T itself (channels mixed at every entry),
* a linear map of the means of all tensors over all their axes, broadcast everywhere,
* for each axis of T, a linear map of every feature indexed by that axis's group (row means,
  column means and biases of all tensors that share that hidden permutation, the neighbouring
  layers' included), broadcast along the other axis;

plus learned position embeddings on the input and output axes (which are not symmetric). Every
term commutes with hidden-unit permutations, so the layer is equivariant; the encoder's mean over
all axes of each tensor is invariant. ``tests/models/test_ws_encoders.py`` checks both numerically.
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
from papers.weight_space.zoo.lstm import LSTMLayout

Spec = tuple[str, tuple[str, ...]]  # (state-dict key, group of each axis)


def tensor_specs(layout: LSTMLayout) -> list[Spec]:
    """Every parameter tensor with the permutation group of each of its (non-channel) axes."""
    specs: list[Spec] = []
    for l in range(layout.layers):
        h, prev = f"h{l}", ("x" if l == 0 else f"h{l - 1}")
        specs += [
            (f"lstm.weight_ih_l{l}", (h, prev)),
            (f"lstm.weight_hh_l{l}", (h, h)),
            (f"lstm.bias_ih_l{l}", (h,)),
            (f"lstm.bias_hh_l{l}", (h,)),
        ]
    last = f"h{layout.layers - 1}"
    specs += [("head.weight", ("y", last)), ("head.bias", ("y",))]
    return specs


def to_channels(params: Mapping[str, Tensor], layout: LSTMLayout) -> list[Tensor]:
    """Gates as channels: [M, 4, H, ...] for LSTM tensors, the head repeated on 4 channels."""
    out = []
    for key, _ in tensor_specs(layout):
        p = params[key]
        if key.startswith("lstm."):
            out.append(p.reshape(p.shape[0], 4, layout.hidden, *p.shape[2:]))
        else:
            out.append(p.unsqueeze(1).expand(-1, 4, *p.shape[1:]))
    return out


def _broadcast(v: Tensor, axis: int, ndim: int) -> Tensor:
    """[M, C, n] placed along ``axis`` of a [M, C, rows(, cols)] tensor."""
    if ndim == 3:
        return v
    return v.unsqueeze(-1) if axis == 0 else v.unsqueeze(-2)


def _hook_name(key: str) -> str:
    return "hook_" + key.replace("lstm.", "").replace(".", "_")


class DWSLayer(nn.Module):
    """One permutation-equivariant linear layer on all weight tensors of an LSTM (see module doc).

    Hook points: ``out.hook_<tensor>`` for each output tensor (e.g. ``out.hook_weight_hh_l0``,
    ``out.hook_head_weight``), [M, c_out, rows(, cols)].
    """

    def __init__(self, layout: LSTMLayout, c_in: int, c_out: int, io_embed: bool = True):
        super().__init__()
        self.specs = tensor_specs(layout)
        k = len(self.specs)
        sizes = {"x": layout.d_in, "y": layout.d_out}
        groups = {g for _, gs in self.specs for g in gs}
        self.sources = {
            g: [(i, a) for i, (_, gs) in enumerate(self.specs) for a, gg in enumerate(gs) if gg == g]
            for g in groups
        }
        self.w_self = nn.Parameter(torch.empty(k, c_out, c_in))
        self.b_self = nn.Parameter(torch.empty(k, c_out))
        self.w_glob = nn.Parameter(torch.empty(k, c_out, c_in * k))
        self.w_axis = nn.ParameterList()
        self.axis_index: list[list[int]] = []
        for i, (_, gs) in enumerate(self.specs):
            idx = []
            fan = c_in + c_in * k + sum(c_in * len(self.sources[g]) for g in gs)
            bound = 1 / math.sqrt(fan)
            for g in gs:
                idx.append(len(self.w_axis))
                self.w_axis.append(
                    nn.Parameter(torch.empty(c_out, c_in * len(self.sources[g])).uniform_(-bound, bound))
                )
            self.axis_index.append(idx)
            for w in (self.w_self[i], self.b_self[i], self.w_glob[i]):
                nn.init.uniform_(w, -bound, bound)
        # learned embeddings of the input / output positions (those axes are not symmetric)
        self.io = nn.ParameterList()
        self.io_index: list[list[tuple[int, int]]] = []
        for _, gs in self.specs:
            slots = []
            for a, g in enumerate(gs):
                if io_embed and g in sizes:
                    slots.append((a, len(self.io)))
                    self.io.append(nn.Parameter(torch.randn(c_in, sizes[g])))
            self.io_index.append(slots)
        self.out = nn.ModuleDict({_hook_name(key): HookPoint() for key, _ in self.specs})

    def forward(self, ts: Sequence[Tensor]) -> list[Tensor]:
        ts = list(ts)
        for i, slots in enumerate(self.io_index):
            for a, j in slots:
                ts[i] = ts[i] + _broadcast(self.io[j], a, ts[i].dim())
        # pooled features, each computed once: per tensor its row (and column) means, and its mean
        pools = [[t] if t.dim() == 3 else [t.mean(-1), t.mean(-2)] for t in ts]
        glob = torch.cat([p[0].mean(-1) for p in pools], dim=1)  # [M, C*K]
        feats = {g: torch.cat([pools[i][a] for i, a in src], dim=1) for g, src in self.sources.items()}
        out = []
        for i, ((key, gs), t) in enumerate(zip(self.specs, ts)):
            m, o = t.shape[0], self.w_self.shape[1]
            small = (self.b_self[i] + glob @ self.w_glob[i].T).view(m, o, *([1] * (t.dim() - 2)))
            for a, g in enumerate(gs):
                v = torch.matmul(self.w_axis[self.axis_index[i][a]], feats[g])  # [M, O, n]
                small = small + _broadcast(v, a, t.dim())
            small = small.expand(m, o, *t.shape[2:]).reshape(m, o, -1)
            # the 1x1 map of the tensor itself, added onto the broadcast terms in one fused op
            y = torch.baddbmm(small, self.w_self[i].expand(m, -1, -1), t.flatten(2)).view(m, o, *t.shape[2:])
            out.append(self.out[_hook_name(key)](y))
        return out


@loadable
class DWSEncoder(WeightEncoder):
    """DWS layers with ReLUs, invariant pooling (mean of each tensor), MLP -> embedding.

    Args:
        layout: the zoo member's sizes.
        channels: channels of each DWS layer (the paper: 4 x 48).
        hidden: hidden sizes of the MLP after pooling.
        embed_dim: embedding size.
        io_embed: learned position embeddings on the input and output axes.
    """

    family = "mechanistic"

    def __init__(
        self,
        layout,
        *,
        channels: Sequence[int] = (48, 48, 48, 48),
        hidden: Sequence[int] = (128,),
        embed_dim: int = 16,
        io_embed: bool = True,
    ):
        super().__init__(layout, embed_dim)
        self.config = dict(
            layout=self.layout.to_json(),
            channels=list(channels),
            hidden=list(hidden),
            embed_dim=embed_dim,
            io_embed=io_embed,
        )
        sizes = [4, *channels]
        self.layers = nn.ModuleList(
            DWSLayer(self.layout, sizes[i], sizes[i + 1], io_embed) for i in range(len(channels))
        )
        self.hook_pooled = HookPoint()
        self.mlp = HookedMLP([len(tensor_specs(self.layout)) * sizes[-1], *hidden, embed_dim])

    def equivariant(self, params: Mapping[str, Tensor]) -> list[Tensor]:
        """The last DWS layer's output tensors (equivariant to hidden-unit permutations)."""
        ts = to_channels(params, self.layout)
        for i, layer in enumerate(self.layers):
            if i:
                ts = [F.relu(t) for t in ts]
            ts = layer(ts)
        return ts

    def encode(self, params: Mapping[str, Tensor]) -> Tensor:
        ts = self.equivariant(params)
        pooled = torch.cat([t.flatten(2).mean(-1) for t in ts], dim=1)
        return self.mlp(self.hook_pooled(pooled))
