"""The toy ReLU model of superposition, hooked: x' = ReLU(Wᵀ W x + b).

``ToyReLU`` holds ``n_instances`` independent models in one set of stacked parameters, so a
sweep over sparsity or importance trains as one batched computation (``docs/methods/tms.md``).
The same tied autoencoder with one instance and binary bag-of-words inputs is the BOWS model
(``docs/methods/bows.md``).

Hook points: ``hook_hidden`` (the code h = W x, [batch, instance, d_hidden]), ``hook_pre`` (the
pre-activation output Wᵀ h + b) and ``hook_out`` (after the ReLU), both [batch, instance,
n_features]. This module also has the paper's synthetic sparse data and its loss; the batched
training loop is :mod:`hooked.models.toy_relu_training`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hooked.checkpoint import loadable
from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule
from hooked.typecheck import Float, typechecked


@loadable
class ToyReLU(HookedModule):
    """``n_instances`` tied ReLU autoencoders ``x' = ReLU(Wᵀ W x + b)``, W: [d_hidden, n_features].

    Args:
        n_features: number of input features n.
        d_hidden: size m of the hidden code.
        n_instances: independent copies trained side by side.
        bias: learn the output bias b (initialised to zero).
        seed: seed for the initial weights (Xavier-normal per instance).
    """

    def __init__(
        self,
        n_features: int,
        d_hidden: int,
        n_instances: int = 1,
        *,
        bias: bool = True,
        seed: int | None = None,
    ):
        super().__init__()
        for arg, v in (("n_features", n_features), ("d_hidden", d_hidden), ("n_instances", n_instances)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ToyReLU: {arg} must be a positive int, got {v!r}")
        self.config = dict(
            n_features=n_features, d_hidden=d_hidden, n_instances=n_instances, bias=bias, seed=seed
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        std = math.sqrt(2.0 / (n_features + d_hidden))
        self.W = nn.Parameter(torch.randn(n_instances, d_hidden, n_features, generator=generator) * std)
        self.b = nn.Parameter(torch.zeros(n_instances, n_features), requires_grad=bias)
        self.hook_hidden = HookPoint()
        self.hook_pre = HookPoint()
        self.hook_out = HookPoint()

    @property
    def n_instances(self) -> int:
        return self.W.shape[0]

    @property
    def n_features(self) -> int:
        return self.W.shape[2]

    @typechecked
    def forward(
        self, x: Float[Tensor, "batch instances features"] | Float[Tensor, "batch features"]
    ) -> Float[Tensor, "batch instances features"] | Float[Tensor, "batch features"]:
        """Reconstruct ``x`` ([batch, instance, feature]; [batch, feature] with one instance)."""
        squeeze = x.dim() == 2
        if squeeze:
            if self.n_instances != 1:
                raise ValueError(
                    f"ToyReLU: x of shape {tuple(x.shape)} has no instance axis, but the model has "
                    f"{self.n_instances} instances; pass [batch, {self.n_instances}, {self.n_features}]"
                )
            x = x.unsqueeze(1)
        if x.shape[1:] != self.W.shape[::2]:
            raise ValueError(
                f"ToyReLU: x has shape {tuple(x.shape)}, "
                f"expected [batch, {self.n_instances}, {self.n_features}]"
            )
        h = self.hook_hidden(torch.einsum("ihf,bif->bih", self.W, x))
        pre = self.hook_pre(torch.einsum("ihf,bih->bif", self.W, h) + self.b)
        out = self.hook_out(torch.relu(pre))
        return out.squeeze(1) if squeeze else out


@typechecked
def sparse_uniform(
    batch_size: int,
    density: Float[Tensor, "instances features"] | Float[Tensor, " instances"],
    n_features: int,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "batch instances features"]:
    """The paper's synthetic features: 0 with probability 1 - p (p = ``density``), else uniform on [0, 1].

    ``density`` is p per instance ([instances]) or per instance and feature ([instances,
    features]). One random number per entry: u ~ U[0, 1], x = u / p where u < p, else 0.
    """
    p = density if density.dim() == 2 else density[:, None].expand(-1, n_features)
    if p.shape[-1] != n_features:
        raise ValueError(f"sparse_uniform: density has {p.shape[-1]} features, n_features is {n_features}")
    u = torch.rand((batch_size, *p.shape), generator=generator, device=p.device)
    return torch.where(u < p, u / p, 0.0)


def weighted_mse(out: Tensor, x: Tensor, importance: Tensor | float = 1.0) -> Tensor:
    """The paper's loss per instance, ``mean_{batch, features} I_f (x - x')^2``: shape [instances].

    ``out`` and ``x`` are [batch, instances, features]; sum the result to train all instances at once.
    """
    return (importance * (x - out) ** 2).mean(dim=(0, 2))


def toy_relu_example(
    *,
    n_features: int = 5,
    d_hidden: int = 2,
    n_instances: int = 4,
    feature_probability: float = 0.1,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[ToyReLU, Tensor]:
    """The toy model of superposition (untrained unless --checkpoint), on sparse features.

    Args:
        n_features: input features n.
        d_hidden: hidden size m.
        n_instances: models side by side.
        feature_probability: probability 1 - S that a feature is active.
        batch_size: samples in the example batch.
        seed: seed for weights and data.
    """
    from hooked.checks import positive
    from hooked.errors import OptionError

    positive(n_features=n_features, d_hidden=d_hidden, n_instances=n_instances, batch_size=batch_size)
    if not 0.0 <= feature_probability <= 1.0:
        raise OptionError("feature_probability", f"must be in [0, 1], got {feature_probability!r}")
    model = ToyReLU(n_features, d_hidden, n_instances, seed=seed)
    p = torch.full((n_instances,), feature_probability)
    x = sparse_uniform(batch_size, p, n_features, torch.Generator().manual_seed(seed))
    model.input_sampler = _sampler(p, n_features)  # more batches like x (`hooked harvest`)
    return model, x


def _sampler(density: Tensor, n_features: int):
    def sample(batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        return sparse_uniform(batch_size, density, n_features, generator)

    return sample
