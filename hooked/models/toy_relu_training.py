"""Training many toy ReLU models at once (one batched model; no Python loop over models).

:func:`train_instances` trains every instance of a model whose parameters all carry a leading
instance axis (:class:`~hooked.models.ToyReLU`: ``W [I, d, n]``, ``b [I, n]``) on inputs
``[batch, I, n]``. What may differ per instance: the data (the batch function decides), the
feature importance, the weight decay (decoupled, AdamW-style, applied per instance so that
weight decay on and off train side by side) and the hidden size (instances with a smaller hidden
size have their extra rows of W set to zero: such rows get exactly zero gradient, since
h_r = W_r · x = 0 and ∂L/∂h_r = W_r · ∂L/∂x' = 0, and so stay zero).

Nothing here is one paper's: the schedule, the weight decay and the data are the caller's. The
TMS and BOWS reproductions (``papers/tms``, ``papers/bows``) both train through it; the data
sampler and the loss are in :mod:`hooked.models.toy_relu`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hooked.models.toy_relu import weighted_mse

BatchFn = Callable[[int, torch.Generator], Tensor]


def set_hidden_sizes(model: nn.Module, sizes: Sequence[int]) -> None:
    """Give instance i hidden size ``sizes[i]`` by zeroing rows ``sizes[i]:`` of its W (they stay zero)."""
    W = model.get_parameter("W")
    if len(sizes) != W.shape[0] or max(sizes) > W.shape[1] or min(sizes) < 1:
        raise ValueError(f"set_hidden_sizes: need {W.shape[0]} sizes in 1..{W.shape[1]}, got {list(sizes)}")
    rows = torch.arange(W.shape[1])[None, :] < torch.tensor(sizes)[:, None]
    with torch.no_grad():
        # Xavier-normal per instance for its own size, as if it had been built alone.
        std = torch.sqrt(2.0 / (W.shape[2] + torch.tensor(sizes, dtype=W.dtype)))
        W.mul_(std[:, None, None] / math.sqrt(2.0 / (W.shape[2] + W.shape[1])))
        W.mul_(rows[:, :, None].to(W.dtype))


@dataclass
class TrainLog:
    """Per-instance losses: ``losses[k, i]`` is the mean loss of instance i over the k-th logging
    interval ending at ``steps[k]``; ``final[i]`` is the mean over the last 5% of training."""

    steps: list[int]
    losses: Tensor
    final: Tensor

    def to_json(self) -> dict:
        return {"steps": self.steps, "losses": self.losses, "final": self.final}


def train_instances(
    model: nn.Module,
    batches: BatchFn,
    *,
    steps: int,
    importance: Tensor | float = 1.0,
    lr: float = 1e-3,
    weight_decay: float | Tensor = 0.0,
    schedule: Literal["constant", "cosine"] = "constant",
    grad_clip: float | None = None,
    seed: int = 0,
    log_points: int = 100,
    progress: bool | str = True,
) -> TrainLog:
    """Train every instance of ``model`` at once with AdamW on the importance-weighted MSE.

    Args:
        model: parameters with a leading instance axis; ``model(x)`` maps [batch, I, n] to [batch, I, n].
        batches: ``fn(step, generator) -> x`` of shape [batch, I, n] (the target is x itself).
        importance: I_f, broadcastable to [I, n].
        weight_decay: decoupled weight decay, one value or one per instance ([I]).
        schedule: constant learning rate, or cosine decay to 0 over ``steps``.
        grad_clip: clip each instance's gradient norm (over all its parameters) to this.
    """
    from tqdm.auto import tqdm

    from hooked import typecheck

    params = [p for p in model.parameters() if p.requires_grad]
    n_inst = params[0].shape[0]
    if any(p.dim() == 0 or p.shape[0] != n_inst for p in params):
        raise ValueError(f"train_instances: every parameter needs a leading instance axis of size {n_inst}")
    device = params[0].device
    wd = torch.as_tensor(weight_decay, dtype=params[0].dtype, device=device).expand(n_inst).clone()
    importance = torch.as_tensor(importance, dtype=params[0].dtype, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, **_fused())  # decay: per instance, below
    every = max(1, steps // max(1, log_points))
    tail_from = steps - max(1, steps // 20)
    logged_steps: list[int] = []
    logged: list[Tensor] = []
    running = torch.zeros(n_inst, device=device)
    tail = torch.zeros(n_inst, device=device)
    count = 0
    desc = progress if isinstance(progress, str) else "training"
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    with typecheck.disabled():
        for step in bar:
            lr_t = lr if schedule == "constant" else 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            for group in opt.param_groups:
                group["lr"] = lr_t
            x = batches(step, generator)
            out = model(x)
            per_instance = weighted_mse(out, x, importance)
            opt.zero_grad(set_to_none=True)
            per_instance.sum().backward()
            with torch.no_grad():
                if grad_clip is not None:
                    grads = [p.grad for p in params if p.grad is not None]
                    sq = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)
                    factor = (grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
                    for g in grads:
                        g.mul_(factor.view(-1, *[1] * (g.dim() - 1)))
                if bool((wd != 0).any()):
                    keep = 1 - lr_t * wd
                    for p in params:
                        p.mul_(keep.view(-1, *[1] * (p.dim() - 1)))
            opt.step()
            with torch.no_grad():
                running += per_instance.detach()
                count += 1
                if step >= tail_from:
                    tail += per_instance.detach()
            if (step + 1) % every == 0 or step == steps - 1:
                logged.append(running / count)
                logged_steps.append(step + 1)
                running = torch.zeros(n_inst, device=device)
                count = 0
                if progress:
                    bar.set_postfix(loss=f"{float(logged[-1].sum()):.4g}")
    losses = torch.stack(logged).cpu() if logged else torch.zeros(0, n_inst)
    return TrainLog(logged_steps, losses, (tail / (steps - tail_from)).cpu())


def epoch_batches(dataset: Callable[[Tensor], Tensor], n_samples: int, batch_size: int) -> BatchFn:
    """A batch function that walks ``n_samples`` in a fresh random order each epoch.

    ``dataset(indices) -> x`` builds the batch for sample indices (e.g. densifies bag-of-words
    rows); batches never straddle two epochs (the last, partial batch of an epoch is dropped).
    """
    if n_samples < batch_size:
        raise ValueError(f"epoch_batches: {n_samples} samples is fewer than one batch of {batch_size}")
    per_epoch = n_samples // batch_size
    state: dict[str, Any] = {"epoch": -1}

    def batch(step: int, generator: torch.Generator) -> Tensor:
        epoch, k = divmod(step, per_epoch)
        if state["epoch"] != epoch:
            state["order"] = torch.randperm(n_samples, generator=generator, device=generator.device)
            state["epoch"] = epoch
        order = state["order"]
        return dataset(order[k * batch_size : (k + 1) * batch_size])

    batch.steps_per_epoch = per_epoch  # type: ignore[attr-defined]
    return batch


def _fused() -> dict:
    """``fused=True`` where this torch has the fused CPU AdamW (about 3x faster on tiny models)."""
    try:
        torch.optim.AdamW([nn.Parameter(torch.zeros(1))], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return {}
    return {"fused": True}
