"""The toy ReLU model of superposition, hooked: x' = ReLU(Wᵀ W x + b).

``ToyReLU`` holds ``n_instances`` independent models in one set of stacked parameters, so a
sweep over sparsity or importance trains as one batched computation (SPECS E). The same tied
autoencoder with one instance and binary bag-of-words inputs is the BOWS model (SPECS C).

Hook points: ``hook_hidden`` (the code h = W x, [batch, instance, d_hidden]), ``hook_pre`` (the
pre-activation output Wᵀ h + b) and ``hook_out`` (after the ReLU), both [batch, instance,
n_features]. This module also has the synthetic sparse data and the importance-weighted training
loop of the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule
from hooked.registry import register_model
from hooked.typecheck import Float, typechecked


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
        self.config = dict(n_features=n_features, d_hidden=d_hidden, n_instances=n_instances, bias=bias, seed=seed)
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
                f"ToyReLU: x has shape {tuple(x.shape)}, expected [batch, {self.n_instances}, {self.n_features}]"
            )
        h = self.hook_hidden(torch.einsum("ihf,bif->bih", self.W, x))
        pre = self.hook_pre(torch.einsum("ihf,bih->bif", self.W, h) + self.b)
        out = self.hook_out(torch.relu(pre))
        return out.squeeze(1) if squeeze else out


@typechecked
def sparse_features(
    batch_size: int,
    feature_probability: Float[Tensor, "instances features"] | Float[Tensor, "instances"],
    n_features: int | None = None,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "batch instances features"]:
    """Synthetic features: each is 0 with probability 1 - p, else uniform on [0, 1].

    ``feature_probability`` is p per instance ([instances], with ``n_features``) or per
    instance and feature ([instances, features]).
    """
    p = feature_probability
    if p.dim() == 1:
        if n_features is None:
            raise ValueError("sparse_features: pass n_features when feature_probability is per instance")
        p = p[:, None].expand(-1, n_features)
    shape = (batch_size, *p.shape)
    device = p.device
    values = torch.rand(shape, generator=generator, device=device)
    active = torch.rand(shape, generator=generator, device=device) < p
    return values * active


def weighted_mse(out: Tensor, x: Tensor, importance: Tensor) -> Tensor:
    """Σ_instances mean_{batch, features} I_f (x - x')²: the paper's loss, summed over instances."""
    return (importance * (x - out) ** 2).mean(dim=(0, 2)).sum()


def train_toy_relu(
    model: ToyReLU,
    feature_probability: Tensor,
    importance: Tensor,
    *,
    steps: int = 10_000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    data: Callable[[int, torch.Generator], Tensor] | None = None,
    progress: bool | str = True,
) -> list[float]:
    """Train every instance of ``model`` at once with AdamW on the importance-weighted MSE.

    Args:
        feature_probability: p = 1 - S, [instances] or [instances, features].
        importance: I, broadcastable to [instances, features].
        data: optional ``fn(batch_size, generator) -> x`` replacing the sparse-feature sampler.
    Returns:
        the loss (summed over instances) every 1% of training.
    """
    from tqdm.auto import tqdm

    device = model.W.device
    generator = torch.Generator(device=device).manual_seed(seed)
    p = feature_probability.to(device)
    importance = importance.to(device)
    if data is None:
        def data(n: int, g: torch.Generator) -> Tensor:
            return sparse_features(n, p, model.n_features, g)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses: list[float] = []
    every = max(1, steps // 100)
    bar = tqdm(range(steps), desc=progress if isinstance(progress, str) else "toy relu", disable=not progress, leave=False)
    for step in bar:
        x = data(batch_size, generator)
        loss = weighted_mse(model(x), x, importance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps - 1:
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    return losses


@register_model("toy-relu")
def toy_relu_example(
    *, n_features: int = 5, d_hidden: int = 2, n_instances: int = 4, feature_probability: float = 0.1, batch_size: int = 256, seed: int = 0
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
    model = ToyReLU(n_features, d_hidden, n_instances, seed=seed)
    p = torch.full((n_instances,), feature_probability)
    x = sparse_features(batch_size, p, n_features, torch.Generator().manual_seed(seed))
    return model, x
