"""Hooked MLP autoencoders with a chosen activation function, for the spotlight resonance study.

``Autoencoder``: ``x -> Linear -> act -> Linear -> [hook_pre] -> act_bottleneck ->
[hook_bottleneck] -> Linear -> act -> Linear -> x'``. The activation is one of ``ACTIVATIONS``:
elementwise ones (ReLU, tanh, GELU, sigmoid), which privilege the neuron basis, and ones with no
preferred basis (``isotanh``: ``tanh(|x|) x / |x|``; ``linear``). With a ``rotation_seed`` the
bottleneck's activation acts in a rotated basis, ``h = Q^T f(Q z)`` for a fixed random orthogonal
``Q`` (the buffer ``rotation``), so its privileged basis is the rows of ``Q``.

Several autoencoders train as one model: pass a list of activations (and of rotation seeds) and
every parameter gets a leading instance axis; the instances see the same batches and their losses
add, so each trains exactly as it would alone, in one batched computation. A list gives hook
activations [batch, instance, d]; a single activation name gives plain [batch, d].
:meth:`Autoencoder.member` cuts one instance out as a single model.

Initialisation is isotropic on purpose: weights ~ N(0, 1/fan_in), biases 0. Gaussian weights are
invariant in distribution under rotations of the bottleneck coordinates, as is plain or momentum
SGD, so for the linear and isotropic models nothing in training singles out a basis of the
bottleneck; only an activation function can. (Adam's per-coordinate step sizes break that
symmetry; ``train_autoencoder(optimizer="adam")`` measures how much.)

Also here: :func:`load_digits` (scikit-learn's bundled 8 x 8 digits, offline) and the registered
model ``digits-ae``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from hooked.checkpoint import loadable
from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule
from hooked.rotations import random_orthonormal
from hooked.typecheck import Float, typechecked

ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid", "isotanh", "linear")
ELEMENTWISE = ("relu", "tanh", "gelu", "sigmoid")


def iso_tanh(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Isotropic tanh over the last axis: ``tanh(|x|) x / |x|`` (the identity near 0)."""
    norm = x.norm(dim=-1, keepdim=True)
    return x * torch.where(norm > eps, torch.tanh(norm) / norm.clamp_min(eps), torch.ones_like(norm))


_FUNCTIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": nn.functional.gelu,
    "sigmoid": torch.sigmoid,
    "isotanh": iso_tanh,
    "linear": lambda x: x,
}


@loadable
class Autoencoder(HookedModule):
    """MLP autoencoder(s) ``d_in -> d_hidden -> d_bottleneck -> d_hidden -> d_in``.

    Args:
        d_in: input size (64 for 8 x 8 digits).
        d_hidden: width of the hidden layers on each side.
        d_bottleneck: size of the bottleneck.
        activation: one of ``ACTIVATIONS`` used in every layer, or a list of them: one
            autoencoder per entry, trained side by side.
        rotation_seed: the bottleneck's activation acts in the basis of a random rotation from
            this seed (``None``: the standard basis); a list with one entry per instance.
        seed: seed of the initial weights.
    """

    def __init__(
        self,
        d_in: int = 64,
        d_hidden: int = 128,
        d_bottleneck: int = 16,
        activation: str | Sequence[str] = "relu",
        rotation_seed: int | None | Sequence[int | None] = None,
        seed: int = 0,
    ):
        super().__init__()
        for arg, v in (("d_in", d_in), ("d_hidden", d_hidden), ("d_bottleneck", d_bottleneck)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"Autoencoder: {arg} must be a positive int, got {v!r}")
        self.single = isinstance(activation, str)
        acts = [activation] if self.single else list(activation)
        if not acts:
            raise ValueError("Autoencoder: activation list is empty")
        for a in acts:
            if a not in ACTIVATIONS:
                raise ValueError(f"Autoencoder: activation must be one of {ACTIVATIONS}, got {a!r}")
        if isinstance(rotation_seed, (list, tuple)):
            rots = list(rotation_seed)
            if len(rots) != len(acts):
                raise ValueError(f"Autoencoder: {len(rots)} rotation seeds for {len(acts)} activations")
        else:
            rots = [rotation_seed] * len(acts)
        self.activations, self.rotation_seeds = acts, rots
        self.config = dict(
            d_in=d_in,
            d_hidden=d_hidden,
            d_bottleneck=d_bottleneck,
            activation=activation if self.single else acts,
            rotation_seed=rotation_seed
            if self.single or not isinstance(rotation_seed, (list, tuple))
            else rots,
            seed=seed,
        )
        m = len(acts)
        g = torch.Generator().manual_seed(seed)
        sizes = [(d_hidden, d_in), (d_bottleneck, d_hidden), (d_hidden, d_bottleneck), (d_in, d_hidden)]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(m, o, i, generator=g) / i**0.5) for o, i in sizes
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(m, o)) for o, _ in sizes)
        eye = torch.eye(d_bottleneck)
        self.register_buffer(
            "rotation",
            torch.stack(
                [eye if s is None else random_orthonormal(d_bottleneck, s, dtype=torch.float32) for s in rots]
            ),
        )
        self._groups = {
            a: torch.tensor([k for k, b in enumerate(acts) if b == a]) for a in dict.fromkeys(acts)
        }
        self._rotated = any(s is not None for s in rots)
        self.hook_enc = HookPoint()
        self.hook_pre = HookPoint()
        self.hook_bottleneck = HookPoint()
        self.hook_dec = HookPoint()

    @property
    def n_instances(self) -> int:
        return len(self.activations)

    def privileged_basis(self, instance: int = 0) -> Tensor:
        """Rows: the basis the bottleneck's activation of ``instance`` acts in."""
        return self.rotation[instance]

    def _act(self, x: Tensor) -> Tensor:
        """Each instance's activation on its slice of x [batch, instance, d]."""
        if len(self._groups) == 1:
            return _FUNCTIONS[self.activations[0]](x)
        out = torch.empty_like(x)
        for name, idx in self._groups.items():
            idx = idx.to(x.device)
            out[:, idx] = _FUNCTIONS[name](x[:, idx])
        return out

    def _hook(self, hp: HookPoint, x: Tensor) -> Tensor:
        return hp(x.squeeze(1)).unsqueeze(1) if self.single else hp(x)

    def _linear(self, k: int, x: Tensor) -> Tensor:
        return torch.einsum("moi,bmi->bmo", self.weights[k], x) + self.biases[k]

    @typechecked
    def forward(
        self, x: Float[Tensor, "batch d_in"]
    ) -> Float[Tensor, "batch d_in"] | Float[Tensor, "batch instances d_in"]:
        """Reconstructions of x ([batch, d_in]): [batch, d_in], or [batch, instance, d_in] for a list."""
        h = x[:, None, :].expand(-1, self.n_instances, -1)
        h = self._hook(self.hook_enc, self._act(self._linear(0, h)))
        z = self._hook(self.hook_pre, self._linear(1, h))
        if self._rotated:
            code = torch.einsum(
                "mji,bmj->bmi", self.rotation, self._act(torch.einsum("mij,bmj->bmi", self.rotation, z))
            )
        else:
            code = self._act(z)
        code = self._hook(self.hook_bottleneck, code)
        out = self._linear(3, self._hook(self.hook_dec, self._act(self._linear(2, code))))
        return out.squeeze(1) if self.single else out

    def member(self, k: int) -> Autoencoder:
        """Instance ``k`` as a single autoencoder (a copy)."""
        if not 0 <= k < self.n_instances:
            raise IndexError(f"instance {k} out of range 0..{self.n_instances - 1}")
        c = self.config
        one = Autoencoder(
            c["d_in"], c["d_hidden"], c["d_bottleneck"], self.activations[k], self.rotation_seeds[k]
        )
        with torch.no_grad():
            for mine, theirs in zip(
                list(self.weights) + list(self.biases), list(one.weights) + list(one.biases)
            ):
                theirs.copy_(mine[k : k + 1])
            one.rotation.copy_(self.rotation[k : k + 1])
        return one.to(self.rotation.device)


def load_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8 x 8 digits (1797 images, offline): pixels / 16 in [0, 1], labels."""
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target, dtype=torch.long)


def train_autoencoder(
    model: Autoencoder,
    x: Tensor,
    *,
    epochs: int = 200,
    batch_size: int = 64,
    lr: float = 0.1,
    momentum: float = 0.9,
    optimizer: Literal["sgd", "adam"] = "sgd",
    seed: int = 0,
    progress: bool | str = True,
) -> Tensor:
    """Minimise every instance's reconstruction MSE; returns the loss per epoch and instance.

    ``optimizer="sgd"`` (momentum SGD, rotation-equivariant) or ``"adam"`` (``lr`` is then Adam's
    learning rate; 1e-3 is usual). Returns [epochs, instances] mean training losses.
    """
    from tqdm.auto import tqdm

    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    g = torch.Generator().manual_seed(seed)
    losses = torch.zeros(epochs, model.n_instances)
    bar = tqdm(
        range(epochs),
        desc=progress if isinstance(progress, str) else "autoencoders",
        disable=not progress,
        leave=False,
    )
    model.train()
    for epoch in bar:
        order = torch.randperm(x.shape[0], generator=g)
        total = torch.zeros(model.n_instances)
        for idx in order.split(batch_size):
            batch = x[idx]
            out = model(batch)
            if model.single:
                out = out[:, None]
            per_instance = ((out - batch[:, None]) ** 2).mean(dim=(0, 2))
            opt.zero_grad(set_to_none=True)
            per_instance.sum().backward()
            opt.step()
            total += per_instance.detach().cpu() * idx.numel()
        losses[epoch] = total / x.shape[0]
        bar.set_postfix(loss=f"{losses[epoch].mean():.4g}")
    model.eval()
    return losses


def digits_autoencoder(
    *,
    activation: str = "relu",
    d_hidden: int = 128,
    d_bottleneck: int = 16,
    rotation_seed: int | None = None,
    seed: int = 0,
) -> tuple[Autoencoder, Tensor]:
    """MLP autoencoder on 8x8 digits (untrained unless --checkpoint; `hooked repro spotlight` trains them).

    Args:
        activation: relu, tanh, gelu, sigmoid, isotanh or linear.
        d_hidden: hidden layer width.
        d_bottleneck: bottleneck size.
        rotation_seed: the bottleneck activation acts in a random rotated basis from this seed.
        seed: seed of the initial weights.
    """
    from hooked.checks import positive

    positive(d_hidden=d_hidden, d_bottleneck=d_bottleneck)
    x, _ = load_digits()
    return Autoencoder(64, d_hidden, d_bottleneck, activation, rotation_seed, seed), x
