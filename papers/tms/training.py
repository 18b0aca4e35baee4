"""Training for the TMS sweeps: every density (and restart, and grid cell) is one instance of
one batched :class:`~hooked.models.ToyReLU`, trained by
:func:`hooked.models.toy_relu_training.train_instances`."""

from __future__ import annotations


def train_sweep(n, m, density, importance, steps, batch_size, lr, weight_decay, seed, desc, progress):
    """One ToyReLU instance per density, trained at once; returns (model, log, eval loss per instance)."""
    import torch

    from hooked.models import ToyReLU
    from hooked.models.toy_relu import sparse_uniform, weighted_mse
    from hooked.models.toy_relu_training import train_instances

    torch.manual_seed(seed)
    model = ToyReLU(n, m, len(density), seed=seed)
    log = train_instances(
        model,
        lambda step, g: sparse_uniform(batch_size, density, n, g),
        steps=steps,
        importance=importance,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        progress=desc if progress else False,
    )
    with torch.no_grad():
        x = sparse_uniform(8192, density, n, torch.Generator().manual_seed(seed + 10_000))
        eval_loss = weighted_mse(model(x), x, importance)
    return model, log, eval_loss
