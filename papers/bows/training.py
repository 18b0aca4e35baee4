"""Training for BOWS: every (structure, weight decay, latent size) is one instance of one batched
:class:`~hooked.models.ToyReLU`, trained with AdamW and a cosine learning rate."""

from __future__ import annotations

from typing import Any


def train_bows(
    model: Any,
    data_fn: Any,
    *,
    steps: int,
    lr: float,
    weight_decay: Any,
    grad_clip: float | None,
    seed: int,
    progress: Any,
) -> Any:
    """:func:`~hooked.models.toy_relu_training.train_instances` with the BOWS schedule (cosine)."""
    from hooked.models.toy_relu_training import train_instances

    return train_instances(
        model,
        data_fn,
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        schedule="cosine",
        grad_clip=grad_clip,
        seed=seed,
        progress=progress,
    )
