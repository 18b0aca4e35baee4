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
        if source_position is None:
            source_position = position

        def hook(act: Tensor, hook: Any) -> Tensor:
            base = act if position is None else _at(act, position, pos_dim)
            src = source
            if src is not None and position is not None and src.dim() == act.dim():
                src = _at(src, source_position, pos_dim)
            if self.uses_source and src is None:  # source rows from this very run
                src = base.detach()
            if src is not None and source_index is not None:
                src = src[source_index]
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

        check_hook(model, hook)
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__}.fit: this intervention has no trainable parameters")
        device = params[0].device
        frozen = _freeze(model)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        losses: list[float] = []
        every = max(1, steps // 100)
        self.train()
        bar = tqdm(
            range(steps),
            desc=progress if isinstance(progress, str) else type(self).__name__,
            disable=not progress,
            leave=False,
        )
        try:
            with disabled():  # shape checks cost more than a small training step
                for step in bar:
                    batch = data(g).to(device)
                    out = self.run(model, hook, batch, position=position)
                    value = loss(out, batch.target) + self.regularizer()
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    opt.step()
                    if step % every == 0 or step == steps - 1:
                        losses.append(value.item())
                        bar.set_postfix(loss=f"{losses[-1]:.3g}")
        finally:
            _unfreeze(model, frozen)
            self.eval()
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
        """Intervention accuracy: the mean over all rows of ``metric(edited output, target)``."""
        self.eval()
        device = next(iter(self.parameters()), torch.empty(0)).device
        total, n = 0.0, 0
        for batch in batches:
            batch = batch.to(device)
            values = metric(self.run(model, hook, batch, position=position), batch.target).float()
            total += float(values.sum())
            n += values.numel()
        return total / max(n, 1)


def _at(act: Tensor, position: int | Tensor, pos_dim: int) -> Tensor:
    """``act`` at one index along ``pos_dim`` (an int), or at one index per row (a [rows] tensor)."""
    if isinstance(position, Tensor):
        moved = act.movedim(pos_dim, 1)
        return moved[torch.arange(moved.shape[0], device=moved.device), position.to(moved.device)]
    return act.select(pos_dim, position)


def _freeze(model: Any) -> list[tuple[Tensor, bool, bool]]:
    """Stop gradients into the model's parameters and put it in eval mode; returns what to restore."""
    state = []
    if isinstance(model, nn.Module):
        state.append((model, model.training, False))  # type: ignore[arg-type]
        model.eval()
        for p in model.parameters():
            state.append((p, p.requires_grad, True))
            p.requires_grad_(False)
    return state


def _unfreeze(model: Any, state: list) -> None:
    for obj, flag, is_param in state:
        if is_param:
            obj.requires_grad_(flag)
        else:
            obj.train(flag)
