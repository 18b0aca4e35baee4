"""The base of trainable interventions: an ``nn.Module`` that edits the activation at one hook.

An :class:`Intervention` maps the activation of a *base* run (``[batch, d]`` at the hook, or at
one position of a ``[batch, pos, d]`` activation) to an edited one, optionally using the activation
a *source* run produced at the same hook: ``forward(base, source, **args) -> edited``. It knows
nothing about the model; it reaches it only through the hook name and the
:class:`hooked.Hookable` protocol (``run_with_hooks``), so the same object edits a GRU's memory, a
toy model's hidden layer or a transformer's residual stream.

What the task must supply is an :class:`InterventionBatch`: the base input, the source input (or
``source_index``: rows of the base run itself), the target, and per-row arguments of the edit
(which variables to swap, which token to replace...). Building these is task glue and lives
apart (``papers/onion/glue.py`` for the repeat task).

* :meth:`Intervention.run`: one edited forward.
* :meth:`Intervention.fit`: train the intervention's own parameters with the model frozen.
* :meth:`Intervention.evaluate`: *intervention accuracy*, the mean of a per-row metric (e.g.
  exact match of the edited run's output with the counterfactual target).
* the source activation is read with :func:`hooked.protocol.read_activation` (the forward stops there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from hooked.checks import finite_number, index_tensor, positive
from hooked.protocol import Batch, Hookable, check_hook, read_activation, run_with_hooks, to_device

Loss = Callable[[Any, Any], Tensor]  # (model output, target) -> scalar
Metric = Callable[[Any, Any], Tensor]  # (model output, target) -> one value per row


@dataclass
class InterventionBatch:
    """One batch of counterfactual examples for an intervention.

    Attributes:
        base: the model input whose activation is edited (tensor, tuple of args or dict of kwargs).
        target: what ``loss`` / ``metric`` compare the edited run's output with.
        source: the model input that supplies the source activation; ``None`` when the source rows
            come from the base run itself (``source_index``) or the intervention needs none.
        source_index: for each base row, the row of the source activation to use.
        args: per-row tensors passed to the intervention's ``forward`` as keywords.
    """

    base: Batch
    target: Any
    source: Batch | None = None
    source_index: Tensor | None = None
    args: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> InterventionBatch:
        return InterventionBatch(
            to_device(self.base, device),
            to_device(self.target, device),
            to_device(self.source, device),
            to_device(self.source_index, device),
            to_device(self.args, device),
        )


class Intervention(nn.Module):
    """Base class: subclasses implement ``forward(base, source, **args) -> edited``.

    ``base`` and ``source`` are ``[batch, d]`` (the hook's activation, or one position of it);
    ``source`` is ``None`` for interventions that need no source run (``uses_source = False``).
    """

    uses_source: bool = True

    def forward(self, base: Tensor, source: Tensor | None, **args: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def regularizer(self) -> Tensor | float:
        """Added to the training loss (0 unless a subclass says otherwise)."""
        return 0.0

    # ------------------------------------------------------------------ running
    def hook_fn(
        self,
        source: Tensor | None,
        *,
        source_index: Tensor | None = None,
        position: int | Tensor | None = None,
        pos_dim: int = 1,
        args: dict[str, Tensor] | None = None,
        source_position: int | Tensor | None = None,
    ) -> Callable[[Tensor, Any], Tensor]:
        """The hook function that applies this intervention (``position``: only that index along
        ``pos_dim``, e.g. one token of a residual stream; a ``[rows]`` tensor: one index per base
        row, e.g. each row's last real token of a padded batch, ``hooked.lm.last_positions``).

        ``source_position``: where to read the separate ``source`` activation (default: the
        same as ``position``; a ``[source rows]`` tensor for a source batch padded differently).
        """
        args = args or {}
        _check_position("position", position)
        _check_position("source_position", source_position)
        if isinstance(pos_dim, bool) or not isinstance(pos_dim, int):
            raise TypeError(f"pos_dim must be an int (the position axis), got {pos_dim!r}")
        if source_position is None:
            source_position = position

        def hook(act: Tensor, hook: Any) -> Tensor:
            where = f"the activation at {getattr(hook, 'name', None)!r}"
            base = act if position is None else _at(act, position, pos_dim, "position", where)
            src = source
            if src is not None and position is not None and src.dim() == act.dim():
                src = _at(src, source_position, pos_dim, "source_position", "the source activation")
            if self.uses_source and src is None:  # source rows from this very run
                src = base.detach()
            if src is not None and source_index is not None:
                index_tensor(
                    "source_index", source_index, src.shape[0], negative=True, axis="the source rows"
                )
                src = src[source_index.to(src.device)]
            if src is not None and src.shape[0] != base.shape[0]:
                raise ValueError(
                    f"{type(self).__name__}: the source has {src.shape[0]} rows but {where} has "
                    f"{base.shape[0]}; give one source row per base row (source_index picks them)"
                )
            # the intervention runs where its parameters are; the edit goes back to the activation's
            # device (a model split over devices runs hook points on several)
            device = next((p.device for p in self.parameters()), act.device)
            moved = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in args.items()}
            src = src.to(device) if src is not None else None
            edited = self(base.to(device), src, **moved).to(act.device, act.dtype)
            if position is None:
                return edited
            out = act.movedim(pos_dim, 1).clone()
            if isinstance(position, Tensor):
                out[torch.arange(out.shape[0], device=out.device), position.to(out.device)] = edited
            else:
                out[:, position] = edited
            return out.movedim(1, pos_dim)

        return hook

    def run(
        self,
        model: Hookable,
        hook: str,
        batch: InterventionBatch,
        *,
        position: int | Tensor | None = None,
        pos_dim: int = 1,
        source_position: int | Tensor | None = None,
    ) -> Any:
        """The model's output on ``batch.base`` with this intervention applied at ``hook``
        (``batch.base`` and ``batch.source`` may be padded batches, dicts of keyword arguments)."""
        source = None
        if self.uses_source and batch.source is not None:
            source = read_activation(model, batch.source, hook)
        fn = self.hook_fn(
            source,
            source_index=batch.source_index,
            position=position,
            pos_dim=pos_dim,
            args=batch.args,
            source_position=source_position,
        )
        return run_with_hooks(model, batch.base, [(hook, fn)])

    # ------------------------------------------------------------------ training and evaluation
    def fit(
        self,
        model: Hookable,
        hook: str,
        data: Callable[[torch.Generator], InterventionBatch],
        *,
        loss: Loss,
        steps: int = 1000,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        seed: int = 0,
        position: int | None = None,
        progress: bool | str = True,
    ) -> list[float]:
        """Train this intervention's parameters (AdamW) with the model frozen.

        Args:
            data: ``fn(generator) -> InterventionBatch``, called once per step.
            loss: ``fn(output, target) -> scalar``; the regulariser is added to it.
        Returns:
            the loss every 1% of the steps.
        """
        from tqdm.auto import tqdm

        from hooked.typecheck import disabled

        # every argument is checked before the model is touched
        check_hook(model, hook)
        positive(steps=steps)
        lr = finite_number("lr", lr, above=0)
        weight_decay = finite_number("weight_decay", weight_decay, at_least=0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        if not callable(data):
            raise TypeError(
                f"data must be a function fn(generator) -> InterventionBatch, got {type(data).__name__}"
            )
        if not callable(loss):
            raise TypeError(
                f"loss must be a function fn(output, target) -> scalar, got {type(loss).__name__}"
            )
        _check_position("position", position)
        if not isinstance(progress, (bool, str)):
            raise TypeError(f"progress must be True, False or a label, got {progress!r}")
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__}.fit: this intervention has no trainable parameters")
        device = params[0].device
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        losses: list[float] = []
        every = max(1, steps // 100)
        was_training = self.training
        frozen = _freeze(model)
        bar = tqdm(
            range(steps),
            desc=progress if isinstance(progress, str) else type(self).__name__,
            disable=not progress,
            leave=False,
        )
        finished = False
        try:
            self.train()
            with disabled():  # shape checks cost more than a small training step
                for step in bar:
                    batch = data(g)
                    if not isinstance(batch, InterventionBatch):
                        raise TypeError(
                            f"{type(self).__name__}.fit: data(generator) must return an InterventionBatch, "
                            f"got {type(batch).__name__}"
                        )
                    batch = batch.to(device)
                    out = self.run(model, hook, batch, position=position)
                    value = _checked_loss(
                        loss(out, batch.target) + self.regularizer(), step, type(self).__name__
                    )
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    opt.step()
                    if step % every == 0 or step == steps - 1:
                        losses.append(value.item())
                        bar.set_postfix(loss=f"{losses[-1]:.3g}")
            finished = True
        finally:
            bar.close()
            _unfreeze(frozen)
            self.train(False if finished else was_training)
        return losses

    @torch.no_grad()
    def evaluate(
        self,
        model: Hookable,
        hook: str,
        batches: Iterable[InterventionBatch],
        *,
        metric: Metric,
        position: int | None = None,
    ) -> float:
        """Intervention accuracy: the mean over all rows of ``metric(edited output, target)``
        (``metric`` gives one value per row of the base batch). The intervention runs in eval
        mode and is put back in the mode it was in."""
        if not callable(metric):
            raise TypeError(
                f"metric must be a function fn(output, target) -> [rows], got {type(metric).__name__}"
            )
        was_training = self.training
        self.eval()
        try:
            device = next(iter(self.parameters()), torch.empty(0)).device
            total, n = 0.0, 0
            for batch in batches:
                batch = batch.to(device)
                values = metric(self.run(model, hook, batch, position=position), batch.target)
                rows = _rows(batch.base)
                if not isinstance(values, Tensor) or (rows is not None and values.numel() != rows):
                    got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
                    raise ValueError(
                        f"{type(self).__name__}.evaluate: metric must return one value per row of the "
                        f"base batch ({rows}), got {got}; a batch mean would weigh every batch alike"
                    )
                total += float(values.float().sum())
                n += values.numel()
        finally:
            self.train(was_training)
        if n == 0:
            raise ValueError(f"{type(self).__name__}.evaluate: the batches hold no rows; nothing to evaluate")
        return total / n


def _check_position(name: str, position: Any) -> None:
    """``position``: None, an int, or an integer tensor (one index per row); checked for its type
    here, for its range against each activation it indexes (:func:`_at`)."""
    if position is None or isinstance(position, Tensor):
        if isinstance(position, Tensor) and (
            position.dtype == torch.bool or position.is_floating_point() or position.dim() > 1
        ):
            raise TypeError(
                f"{name} must be an int or a [rows] tensor of ints, got a {position.dtype} "
                f"tensor of shape {tuple(position.shape)}"
            )
        return
    if isinstance(position, bool) or not isinstance(position, int):
        raise TypeError(f"{name} must be an int or a [rows] tensor of ints, got {position!r}")


def _at(act: Tensor, position: int | Tensor, pos_dim: int, name: str, where: str) -> Tensor:
    """``act`` at one index along ``pos_dim`` (an int), or at one index per row (a [rows] tensor);
    an index outside the axis is an error (as Python's, negative ones count from the end)."""
    if not -act.dim() <= pos_dim < act.dim() or pos_dim in (0, -act.dim()):
        raise IndexError(
            f"pos_dim={pos_dim} is not a position axis of {where} "
            f"(shape {tuple(act.shape)}; axis 0 is the rows)"
        )
    size = act.shape[pos_dim]
    axis = f"the {size} positions of {where} (axis {pos_dim})"
    if isinstance(position, Tensor):
        index_tensor(name, position, size, negative=True, axis=axis)
        if position.dim() == 1 and position.shape[0] != act.shape[0]:
            raise ValueError(
                f"{name} has {position.shape[0]} entries (one per row) but {where} has {act.shape[0]} rows"
            )
        moved = act.movedim(pos_dim, 1)
        return moved[torch.arange(moved.shape[0], device=moved.device), position.to(moved.device)]
    if not -size <= position < size:
        raise IndexError(f"{name}={position} is outside {axis}")
    return act.select(pos_dim, position)


def _rows(batch: Any) -> int | None:
    """Rows of a batch: the leading size of its first tensor (tensor, tuple / list or dict)."""
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        if isinstance(item, Tensor) and item.dim():
            return item.shape[0]
    return None


def _checked_loss(value: Any, step: int, owner: str) -> Tensor:
    """The training loss of one step, if it can be trained on: a scalar tensor with a gradient,
    finite (a NaN loss would turn every parameter into NaN at the next optimiser step)."""
    if not isinstance(value, Tensor) or value.numel() != 1:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{owner}.fit: loss must return a scalar tensor, got {got}")
    if not value.requires_grad:
        raise ValueError(
            f"{owner}.fit: the loss does not depend on the intervention's parameters (no gradient); "
            "compute it from the output fit passes to loss(output, target)"
        )
    if not bool(torch.isfinite(value.detach())):
        raise FloatingPointError(
            f"{owner}.fit: the loss at step {step} is {value.item()}; the intervention keeps its "
            "parameters from before that step (lower lr, or look for NaN in the data)"
        )
    return value.reshape(())


def _freeze(model: Any) -> list[tuple[Any, bool]]:
    """Stop gradients into the model's parameters and put it (every submodule) in eval mode;
    returns each submodule's training flag and each parameter's ``requires_grad``, to restore."""
    state: list[tuple[Any, bool]] = []
    if isinstance(model, nn.Module):
        state.extend((m, m.training) for m in model.modules())
        state.extend((p, p.requires_grad) for p in model.parameters())
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return state


def _unfreeze(state: list[tuple[Any, bool]]) -> None:
    """Put back what :func:`_freeze` changed, exactly (modules with their own mode included)."""
    for obj, flag in state:
        if isinstance(obj, nn.Module):
            obj.training = flag
        else:
            obj.requires_grad_(flag)
