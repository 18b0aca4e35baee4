"""Attribution patching: a first-order estimate of every activation patch from two passes.

Activation patching (:mod:`interventions.patching`) runs one patched forward per (hook,
position); attribution patching (Nanda 2023; Syed et al. 2023, "AtP") estimates all of them at
once from one forward and one backward on the *base* input and one forward on the *source*:

    metric(base with act_h[p] := source's)  -  metric(base)
        ~=  (act_h^source[p] - act_h^base[p]) . d metric / d act_h[p]   (gradient on the base run)

:func:`attribution_patching` returns that estimate for every hook in ``hooks`` and every position
(and every head, for per-head activations such as ``hook_z`` ``[batch, pos, head, d_head]``), on
the same grid and with the same conventions as :func:`interventions.patching.patching_sweep`
(the metric is one value per batch row, averaged over the rows), so that
``patching_sweep(...) ~= metric(base).mean() + attribution_patching(...)``. It is exact for a
model that is linear from the hook to the metric; elsewhere it is a linear approximation, good
for small activation differences and known to miss saturating effects (e.g. at the last layers'
residual stream, or where attention patterns flip).

Generic: it uses only ``run_with_cache`` (with ``incl_bwd=True, metric=``) and hook names, so it
runs on any :class:`hooked.Hookable` whose ``run_with_cache`` takes a metric (``HookedModule``,
``hooked.wrap``, ``hooked.lm``'s bridge). Parameter gradients are left as they were.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from hooked import checks
from hooked.protocol import Batch, Hookable, cache_batch, exclusive, hook_key, split_batch

Metric = Callable[[Any], Tensor]  # forward output -> one value per batch row


def attribution_patching(
    model: Hookable,
    base: Batch,
    source: Batch,
    hooks: Sequence[str],
    metric: Metric,
    positions: Sequence[int] | None = None,
    *,
    pos_dim: int = 1,
    per_head: bool = False,
) -> Tensor:
    """The estimated change of ``metric`` (averaged over the batch rows) when each hook's
    activation, at each position, is patched from ``source`` into ``base``.

    Args:
        model: a hooked model whose ``run_with_cache`` takes ``incl_bwd=True, metric=fn``.
        base: the run that is patched (e.g. the corrupted prompt); a batch as for ``patching_sweep``.
        source: the run the activations come from (e.g. the clean prompt); same shapes as ``base``
            (or one row, taken by every base row).
        hooks: hook names (e.g. every layer's residual stream, or every layer's ``hook_z``), each
            once (a name given twice, or two names of one hook point, is refused).
        metric: forward output -> one value per batch row (``[rows]``; a scalar is refused: a mean
            over rows would scale every estimate by ``1 / rows``).
        positions: indices along ``pos_dim`` to estimate one at a time (per-step hook points: steps),
            each an int or a ``[rows]`` integer tensor (one index per base row), checked as
            :func:`interventions.patching.patching_sweep` checks them; ``None`` estimates patching
            each hook's whole activation at once.
        pos_dim: the position axis of the activations.
        per_head: the axis after ``pos_dim`` is a head axis (``hook_z``: ``[batch, pos, head,
            d_head]``): estimate each head separately. An activation without a head axis and a
            feature axis after it (a residual stream) is refused.
    Returns:
        ``[len(hooks), len(positions)]`` (``[len(hooks)]`` when ``positions`` is None), with a last
        head axis when ``per_head``.
    """
    caller = "attribution_patching"
    hooks = checks.hook_list(model, hooks, caller)
    checks.function(metric, "metric", caller)
    n_rows = checks.batch_rows(base, caller, "base batch")
    positions = checks.positions(positions, caller, rows=n_rows)
    checks.flag(per_head, "per_head", caller)
    points = model.hook_dict  # read once: a bridge builds it afresh on each read
    keys = [hook_key(model, h, points) for h in hooks]  # each point by its own name (a cache stores those)
    with exclusive(model):
        base_acts, grads = _forward_backward(model, base, keys, metric, n_rows)
        with torch.no_grad():
            _, source_cache = cache_batch(model, source, keys)
    rows = []
    for h, key in zip(hooks, keys):
        src, act, grad = source_cache[key], base_acts[key], grads[key]
        checks.source_rows(src.shape[0] if src.dim() else 0, n_rows, caller, f"'s activation at {h!r}")
        if src.shape[1:] != act.shape[1:]:
            raise ValueError(
                f"{caller}: the source's activation at {h!r} has shape {tuple(src.shape)}, the base's "
                f"{tuple(act.shape)}; patching needs the same shapes (same token counts)"
            )
        where = f"the activation at {h!r} ({tuple(act.shape)})"
        axis = checks.axis(pos_dim, act.dim(), caller, "pos_dim", where)
        effect = (src.float() - act.float()) * grad.float()  # [batch, ..., pos, ..., features]
        effect = effect.movedim(axis, 1)
        if per_head:
            if effect.dim() < 4:
                raise ValueError(
                    f"{caller}(per_head=True): {where} has no head axis: per-head activations are "
                    f"[batch, pos, head, d_head] (hook_z, hook_q, ...), with the heads on the axis after "
                    f"pos_dim={pos_dim}; pass per_head=False for {h!r}"
                )
            effect = effect.flatten(3).sum(-1)  # [batch, pos, head]
        else:
            effect = effect.flatten(2).sum(-1) if effect.dim() > 2 else effect  # [batch, pos]
        if positions is None:
            rows.append(effect.sum(1).mean(0))
            continue
        length = effect.shape[1]
        picked = []
        for p in positions:
            checks.position_in_range(p, length, caller, f"{where} (axis {axis})")
            if isinstance(p, Tensor):
                at = p.to(effect.device)
                picked.append(effect[torch.arange(effect.shape[0], device=effect.device), at].mean(0))
            else:
                picked.append(effect[:, p].mean(0))
        rows.append(torch.stack(picked))
    return torch.stack(rows)


def _forward_backward(
    model: Hookable, batch: Batch, hooks: list[str], metric: Metric, n_rows: int
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Activations at ``hooks`` and the gradient of ``metric`` summed over rows, from one forward
    and one backward.

    Fast path: parameters frozen for the pass and the first activation reached made a leaf that
    requires grad, so the backward computes activation gradients only (no weight gradients);
    taken when every hook's activation depends on that first one (a residual stream, every
    layer's heads). Otherwise one pass with the parameters as they are. Parameters' ``requires_grad``
    and ``.grad`` are restored either way.
    """
    args, kwargs = split_batch(batch)
    # float inputs (a toy model's features) get gradients too, so a hook on the input has one
    args = tuple(_with_grad(a) for a in args)
    kwargs = {k: _with_grad(v) for k, v in kwargs.items()}
    params = list(nn.Module.parameters(model)) if isinstance(model, nn.Module) else []
    if params and callable(getattr(model, "hooks", None)):
        found = _pass(model, args, kwargs, hooks, metric, n_rows, params, activations_only=True)
        if found is not None:
            return found
    found = _pass(model, args, kwargs, hooks, metric, n_rows, params, activations_only=False)
    if found is None:
        raise ValueError(
            "attribution_patching: no gradient reached some hooks: the metric does not depend on "
            "their activations, or nothing before them requires grad (frozen parameters?)"
        )
    return found


def _pass(
    model: Any,
    args: tuple,
    kwargs: dict,
    hooks: list[str],
    metric: Metric,
    n_rows: int,
    params: list[nn.Parameter],
    activations_only: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor]] | None:
    flags, saved = [p.requires_grad for p in params], [p.grad for p in params]
    leaf = _FirstLeaf()
    try:
        if activations_only:
            for p in params:
                p.requires_grad_(False)
        fwd = [(h, leaf) for h in hooks] if activations_only else []
        hooked = model.hooks(fwd_hooks=fwd) if fwd else nullcontext()
        with torch.enable_grad(), hooked, warnings.catch_warnings():
            # TransformerLens's backward hooks at the leaf: torch notes they see output gradients (wanted)
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            _, cache = model.run_with_cache(
                *args,
                names_filter=hooks,
                incl_bwd=True,
                metric=lambda out: (
                    checks.metric_values(metric(out), n_rows, "attribution_patching").float().sum()
                ),
                **kwargs,
            )
    except RuntimeError as e:
        if "does not require grad" not in str(e):
            raise
        if activations_only:
            return None
        raise ValueError(
            "attribution_patching: the metric does not depend on anything that requires grad "
            "(frozen parameters?); it needs gradients through the model"
        ) from e
    finally:
        for p, flag, g in zip(params, flags, saved):
            p.requires_grad_(flag)
            p.grad = g
    if any(h + "_grad" not in cache for h in hooks):
        return None
    return {h: cache[h] for h in hooks}, {h: cache[h + "_grad"] for h in hooks}


class _FirstLeaf:
    """A forward hook that turns the first float activation it sees into a leaf requiring grad."""

    def __init__(self) -> None:
        self.done = False

    def __call__(self, act: Any, hook: Any) -> Any:
        if self.done or not isinstance(act, Tensor) or not act.is_floating_point():
            return None
        self.done = True
        return act.detach().requires_grad_()


def _with_grad(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.detach().requires_grad_()
    return value
