"""The digits, their train / test split and the autoencoders trained side by side (``repro spotlight``).

:func:`train_models` trains one batched :class:`~papers.spotlight.autoencoder.Autoencoder` (a member
per activation function, plus the members whose bottleneck activation acts in the rotated basis
``Q``), saves each member as a checkpoint under ``models/NAME/`` of the run folder and returns a
:class:`Trained` with what the analysis and the report need.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hooked import checkpoint
from papers.spotlight.autoencoder import Autoencoder, load_digits, train_autoencoder


@dataclass
class Trained:
    """The batched model (member k: ``model.member(k)``, activation ``[batch, k, d]``) and its training."""

    model: Autoencoder
    names: list[str]  # "relu", ..., "rotated-relu", ...
    activations: list[str]  # the activation function of each member
    rotated: list[bool]  # whether the member's bottleneck activation acts in the rotated basis Q
    x: Tensor  # [digits, 64] every digit (train and test), in the order the analysis streams them
    y: Tensor  # [digits] their labels
    train_idx: Tensor
    test_idx: Tensor
    losses: Tensor  # [epochs, members] mean training loss per epoch
    test_mse: Tensor  # [members]
    baseline: float  # test MSE of predicting the mean training image
    seconds: float


def split(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Test and train indices: a fifth of ``n`` samples for testing, drawn with ``seed``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = n // 5
    return order[:n_test], order[n_test:]


def train_models(
    run_dir: Any,
    activations: list[str],
    rotated: list[str],
    *,
    d_bottleneck: int,
    d_hidden: int,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    rotation_seed: int,
    seed: int,
    progress: bool,
) -> Trained:
    """Train the standard-basis models and the rotated ones side by side; save each as a checkpoint."""
    torch.manual_seed(seed)
    x, y = load_digits()
    test_idx, train_idx = split(x.shape[0], seed)
    names = list(activations) + [f"rotated-{a}" for a in rotated]
    acts = list(activations) + list(rotated)
    rots = [None] * len(activations) + [rotation_seed] * len(rotated)
    model = Autoencoder(64, d_hidden, d_bottleneck, acts, rots, seed=seed)
    print(
        f"training {len(names)} autoencoders side by side ({optimizer}, {epochs} epochs, lr {lr}): "
        f"{', '.join(names)}"
    )
    t0 = time.perf_counter()
    losses = train_autoencoder(
        model,
        x[train_idx],
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        progress=progress and "training",
    )
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        test_mse = ((model(x[test_idx]) - x[test_idx][:, None]) ** 2).mean(dim=(0, 2))
        baseline = float(((x[test_idx] - x[train_idx].mean(0)) ** 2).mean())
    for k, name in enumerate(names):
        checkpoint.save(
            model.member(k),
            run_dir / "models" / name,
            meta={"test_mse": float(test_mse[k]), "epochs": epochs, "optimizer": optimizer, "lr": lr},
        )
    return Trained(
        model,
        names,
        acts,
        [r is not None for r in rots],
        x,
        y,
        train_idx,
        test_idx,
        losses,
        test_mse,
        baseline,
        seconds,
    )
