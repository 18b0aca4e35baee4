"""Reading a feature matrix and an output bias through hook points, for any hooked model.

The analyses need W (one column per input feature, in the hidden space of some hook) and
sometimes the bias b of a later hook. Neither is read from a parameter name: both come from
what the model *does*, through the :class:`hooked.Hookable` protocol only:

* ``W[..., :, i] = act(e_i) - act(0)`` at the hook, where ``e_i`` is the i-th basis input
  (scaled by ``scale``) laid out like the example batch. For a hook that is linear in the input
  (ToyReLU's ``hook_hidden = W x``) this is exactly the weight matrix, per instance; for a
  non-linear hook it is each feature's effective direction at that scale.
* ``bias = act(0)`` at a hook: for ToyReLU's ``hook_pre = Wᵀ W x + b`` it is b.

The example batch fixes the input layout: a tensor ``[batch, *instance_axes, n_features]``; the
features are its last axis and every other non-batch axis (ToyReLU's instances) is kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hooked.checks import require_finite
from hooked.protocol import Hookable, check_hook, read_activation


def _example(data: object) -> Tensor:
    if isinstance(data, list | tuple) and data and isinstance(data[0], Tensor):
        data = data[0]
    if not isinstance(data, Tensor) or data.dim() < 2:
        raise TypeError(
            "superposition analyses need the example batch as a tensor [batch, ..., n_features] "
            f"(the model's input); got {type(data).__name__}"
            + (f" of shape {tuple(data.shape)}" if isinstance(data, Tensor) else "")
        )
    if not data.is_floating_point():
        raise TypeError(
            f"superposition analyses read each feature's direction from the response to basis inputs, "
            f"so the model's input must be a float feature vector [batch, ..., n_features]; this model "
            f"takes {data.dtype} inputs of shape {tuple(data.shape)} (token ids?): use spotlight or "
            f"ridge-probe on it instead"
        )
    return data


def basis_inputs(data: Tensor, scale: float = 1.0) -> Tensor:
    """``n_features + 1`` inputs laid out like ``data``: ``scale * e_i`` for each feature, then zero."""
    if not (math.isfinite(scale) and scale != 0):
        from hooked.errors import OptionError

        raise OptionError(
            "scale", f"must be a finite non-zero number (the basis inputs' size), got {scale!r}"
        )
    example = _example(data)
    n = example.shape[-1]
    eye = torch.eye(n, dtype=example.dtype, device=example.device) * scale
    eye = torch.cat([eye, eye.new_zeros(1, n)])  # the last row: the zero input
    mid = example.shape[1:-1]
    return eye.view(n + 1, *([1] * len(mid)), n).expand(n + 1, *mid, n).contiguous()


def feature_directions(model: Hookable, hook: str, data: object, *, scale: float = 1.0) -> Tensor:
    """The features' directions at ``hook``: ``[*instance_axes, *hook_axes, n_features]``.

    Column i is the hook's activation on the i-th basis input minus its activation on zero.
    """
    check_hook(model, hook)
    inputs = basis_inputs(_example(data), scale)
    act = read_activation(model, inputs, hook)
    if act.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"feature_directions: the activation at {hook!r} has shape {tuple(act.shape)}; expected "
            f"its first axis to be the batch ({inputs.shape[0]} basis inputs)"
        )
    require_finite(act, f"the activations at {hook!r} on the basis inputs")
    directions = (act[:-1] - act[-1:]) / scale
    return require_finite(directions.movedim(0, -1).float(), f"the feature directions at {hook!r}")


def hook_bias(model: Hookable, hook: str, data: object) -> Tensor:
    """The activation at ``hook`` on the zero input: ``[*instance_axes, *hook_axes]``."""
    check_hook(model, hook)
    zero = basis_inputs(_example(data))[-1:]
    return require_finite(
        read_activation(model, zero, hook)[0].float(), f"the activation at {hook!r} on zero"
    )
