"""What every encoder of RNN weights shares: the base class and a hooked MLP.

An encoder maps the stacked parameters of M zoo members (``{ZooLSTM state-dict key: [M, ...]}``)
to M L2-normalised embeddings ([M, embed_dim]); the last hook point of every encoder is
``hook_embed``, so the downstream evaluation reads embeddings through the hook protocol
(``hooked.protocol.collect_activations(encoder, [(params,)], "hook_embed")``) for any encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule
from hooked.typecheck import Float, typechecked
from papers.weight_space.zoo.lstm import LSTMLayout, check_params


def as_layout(layout: LSTMLayout | Mapping) -> LSTMLayout:
    return layout if isinstance(layout, LSTMLayout) else LSTMLayout.of(layout)


class WeightEncoder(HookedModule):
    """Base class: ``encoder(params) -> [M, embed_dim]`` unit vectors; subclasses define ``encode``.

    Args:
        layout: the zoo member's sizes (an :class:`LSTMLayout` or its dict).
        embed_dim: embedding size (the paper: 16).
    """

    family = "?"  # "mechanistic" (reads weights) or "functionalist" (runs the network)

    def __init__(self, layout: LSTMLayout | Mapping, embed_dim: int = 16):
        super().__init__()
        self.layout = as_layout(layout)
        self.embed_dim = embed_dim
        self.hook_embed = HookPoint()

    @typechecked
    def forward(self, params: Mapping[str, Tensor]) -> Float[Tensor, "members embed"]:
        check_params(params, self.layout, f"{type(self).__name__} params")
        z = self.encode(params)
        return self.hook_embed(F.normalize(z, dim=-1))

    def encode(self, params: Mapping[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MLPLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int, activation: bool):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.activation = activation
        self.hook_out = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x)
        return self.hook_out(F.relu(x) if self.activation else x)


class HookedMLP(nn.Module):
    """Linear layers with ReLU between them and a hook point after each (``layers.{i}.hook_out``)."""

    def __init__(self, sizes: Sequence[int], final_activation: bool = False):
        super().__init__()
        n = len(sizes) - 1
        self.layers = nn.ModuleList(
            MLPLayer(sizes[i], sizes[i + 1], activation=i < n - 1 or final_activation) for i in range(n)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
