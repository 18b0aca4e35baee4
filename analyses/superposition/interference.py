"""Constructive interference between co-active features (BOWS, ``docs/methods/bows.md``).

For the tied ReLU autoencoder x' = ReLU(Wᵀ W x + b) the pre-activation of feature v splits as

    pre_v = b_v + ||W_v||² x_v + Σ_{u ≠ v} (W_v · W_u) x_u
            bias   self           context (interference)

With a binary input and v active, the model recovers v when pre_v > 0. If the context term is
positive for active words (their co-active words point the same way), interference is
*constructive*; a word whose bias + self term alone is at or below zero is then recovered only
thanks to its context.

* :func:`pre_decomposition`: the three terms for a batch of inputs.
* :func:`interference_stats`: for active (sample, word) pairs the share with positive context,
  the mean context, the share recovered only thanks to context; for inactive ones the share of
  false positives (pre_v > 0).
* :func:`r2_per_feature` and :func:`r2_context_vs_alone`: per-feature R² of the reconstruction
  over real samples (in context) and over one-hot inputs (alone), as the paper compares them.

``interference`` (registered) reads W at a hook (e.g. ``hook_hidden``), b as the zero-input
activation of a pre-activation hook (``hook_pre``) and the reconstructions at an output hook
(``hook_out``), all through the hook protocol.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from analyses.superposition.weights import basis_inputs, feature_directions, hook_bias
from hooked.protocol import check_hook, read_activation
from hooked.typecheck import Float, typechecked


@typechecked
def pre_decomposition(
    W: Float[Tensor, "d n"], b: Float[Tensor, " n"], x: Float[Tensor, "samples n"]
) -> dict[str, Tensor]:
    """``bias`` [n], ``self`` [samples, n], ``context`` [samples, n] and ``pre`` = their sum."""
    sq = (W**2).sum(dim=0)
    self_term = sq * x
    context = (x @ W.T) @ W - self_term
    return {"bias": b, "self": self_term, "context": context, "pre": b + self_term + context}


@typechecked
def interference_stats(
    W: Float[Tensor, "d n"], b: Float[Tensor, " n"], x: Float[Tensor, "samples n"]
) -> dict[str, float | int]:
    """How interference acts on active and inactive features of binary inputs ``x``."""
    parts = pre_decomposition(W, b, x)
    active = x > 0
    ctx_on, pre_on = parts["context"][active], parts["pre"][active]
    alone = (parts["bias"] + (W**2).sum(dim=0)).expand_as(x)[active]
    pre_off = parts["pre"][~active]
    return {
        "active_pairs": int(active.sum()),
        "constructive_share": float((ctx_on > 0).float().mean()) if len(ctx_on) else float("nan"),
        "mean_context_active": float(ctx_on.mean()) if len(ctx_on) else float("nan"),
        "mean_context_inactive": float(parts["context"][~active].mean()),
        "recovered_share": float((pre_on > 0).float().mean()) if len(pre_on) else float("nan"),
        "alone_recovered_share": float((alone > 0).float().mean()) if len(alone) else float("nan"),
        "rescued_by_context_share": float(((alone <= 0) & (pre_on > 0)).float().mean())
        if len(pre_on)
        else float("nan"),
        "false_positive_share": float((pre_off > 0).float().mean()),
    }


@typechecked
def r2_per_feature(
    target: Float[Tensor, " samples *rest"], pred: Float[Tensor, " samples *rest"]
) -> Float[Tensor, "*rest"]:
    """1 - SS_res / SS_tot per feature over the samples axis (NaN where the target does not vary)."""
    t, p = target.double(), pred.double()
    ss_res = ((t - p) ** 2).sum(dim=0)
    ss_tot = ((t - t.mean(dim=0)) ** 2).sum(dim=0)
    r2 = 1 - ss_res / ss_tot.clamp_min(1e-300)
    return torch.where(ss_tot > 1e-12, r2, torch.full_like(r2, float("nan"))).float()


def r2_context_vs_alone(model: Any, out_hook: str, data: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature R² of the reconstruction at ``out_hook`` over ``data`` (in context) and over
    the one-hot inputs (alone): two tensors ``[*instance_axes, n]``."""
    check_hook(model, out_hook)
    onehot = basis_inputs(data)[:-1]
    in_context = _like(read_activation(model, data, out_hook), data, out_hook)
    alone = _like(read_activation(model, onehot, out_hook), onehot, out_hook)
    return r2_per_feature(data.float(), in_context.float()), r2_per_feature(onehot.float(), alone.float())


def _like(act: Tensor, target: Tensor, hook: str) -> Tensor:
    """The reconstruction at ``hook`` in the input's shape (e.g. a singleton instance axis dropped)."""
    if act.shape == target.shape:
        return act
    if act.numel() != target.numel():
        raise ValueError(
            f"the activation at {hook!r} has shape {tuple(act.shape)}; a reconstruction must match the input "
            f"{tuple(target.shape)}"
        )
    return act.reshape(target.shape)


# ---------------------------------------------------------------------- registered analysis
def interference_at(
    model: Any, hook: str, data: Any, *, pre_hook: str = "hook_pre", out_hook: str = "hook_out"
) -> dict[str, Any]:
    """Constructive interference: pre-activation decomposition on the data, R² in context vs alone.

    Args:
        pre_hook: hook whose zero-input activation is the output bias b (the pre-ReLU output).
        out_hook: hook holding the reconstruction, for the per-feature R².
    """
    from hooked.errors import OptionError, UnknownHookError
    from hooked.protocol import check_hook

    for option, name in (("pre_hook", pre_hook), ("out_hook", out_hook)):
        try:
            check_hook(model, name)
        except UnknownHookError as e:
            raise OptionError(option, f"names no hook point: {e}") from None
    W = feature_directions(model, hook, data)
    b = hook_bias(model, pre_hook, data)
    x = data[0] if isinstance(data, list | tuple) else data
    Ws, bs = W.reshape(-1, *W.shape[-2:]), b.reshape(-1, W.shape[-1])
    xs = x.reshape(x.shape[0], -1, x.shape[-1])
    r2_ctx_all, r2_alone_all = r2_context_vs_alone(model, out_hook, x)
    r2_ctx_all, r2_alone_all = r2_ctx_all.reshape(-1, x.shape[-1]), r2_alone_all.reshape(-1, x.shape[-1])
    results = []
    for i, (w, bias) in enumerate(zip(Ws, bs)):
        xi = (xs[:, i] > 0).float()
        r2_ctx, r2_alone = r2_ctx_all[i], r2_alone_all[i]
        both = ~(r2_ctx.isnan() | r2_alone.isnan())
        results.append(
            {
                **interference_stats(w, bias, xi),
                "r2_context_mean": float(r2_ctx[both].mean()) if both.any() else float("nan"),
                "r2_alone_mean": float(r2_alone[both].mean()) if both.any() else float("nan"),
                "share_better_in_context": float((r2_ctx[both] > r2_alone[both]).float().mean())
                if both.any()
                else float("nan"),
            }
        )
    return {"hook": hook, "instances": results}
