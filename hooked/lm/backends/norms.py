"""TransformerLens's ``hook_scale`` / ``hook_normalized`` on the norms of a wrapped transformers decoder.

Two hook points per norm module at path ``N`` (``ln1``, ``ln2`` and ``ln_final`` in
TransformerLens's names), with TransformerLens's definitions (computed in float32, as its bridge
does):

* ``N.hook_scale`` ``[batch, pos, 1]``: ``sqrt(mean(x'^2) + eps)``, where ``x'`` is the input
  centred over ``d_model`` for a LayerNorm and the input itself for an RMSNorm;
* ``N.hook_normalized`` ``[batch, pos, d_model]``: ``x' / scale``, before the norm's weight and bias.

Editable: an edited scale divides ``x'`` instead (then ``hook_normalized`` fires on that); an
edited normalized value goes through the norm's own weight and bias (``w * n + b`` for a
LayerNorm, ``w * n`` for an RMSNorm, ``(1 + w) * n`` for Gemma's RMSNorm), and that replaces the
module's output. Before the first such replacement the formula is checked once against the
module's own output (a norm it does not describe raises instead of answering differently).

How. A PyTorch forward hook on the norm module, installed only while one of its two points has a
hook. A hook that returns its activation unchanged leaves the module's output untouched, so
reading is bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hooked.hook_point import HookPoint
from hooked.lm.backends.heads import unchanged
from hooked.lm.backends.inside import inside_hook
from hooked.lm.names.layouts import Decoder


class NormHookPoint(HookPoint):
    """``N.hook_scale`` or ``N.hook_normalized`` of one norm module (see the module docstring)."""

    _norm: _Norm  # set with object.__setattr__ (a plain reference, not a child module)

    def __init__(self, norm: _Norm, kind: str):
        super().__init__()
        object.__setattr__(self, "_norm", norm)
        self.kind = kind

    def _refresh(self) -> None:
        super()._refresh()
        self._norm.update()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.kind} of {type(self._norm.module).__name__}".lstrip(", ")


class _Norm:
    """The torch hook of one norm module's two points."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.layer_norm = isinstance(module, nn.LayerNorm)
        self.offset = type(module).__name__.startswith("Gemma")  # Gemma's RMSNorm: (1 + w) * n
        self.scale = NormHookPoint(self, "scale")
        self.normalized = NormHookPoint(self, "normalized")
        self._handle: Any = None
        self._checked = False

    def update(self) -> None:
        live = self.scale._live or self.normalized._live
        if live and self._handle is None:
            self._handle = inside_hook(self.module, self._on_output, rank=0)
        elif not live and self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _eps(self) -> float:
        for attr in ("eps", "variance_epsilon"):
            eps = getattr(self.module, attr, None)
            if isinstance(eps, (int, float)):
                return float(eps)
        raise TypeError(f"hook_scale: {type(self.module).__name__} names no eps (eps / variance_epsilon)")

    def _on_output(self, module: nn.Module, args: tuple, output: Any) -> Tensor | None:
        if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            raise TypeError(
                f"hook_scale / hook_normalized: {type(module).__name__} is not a norm of a tensor"
            )
        x = args[0]
        xf = x.float() if x.dtype not in (torch.float32, torch.float64) else x
        if self.layer_norm:
            xf = xf - xf.mean(-1, keepdim=True)
        variance = xf.pow(2).mean(-1, keepdim=True) + self._eps()
        scale = variance.sqrt()
        normalized = xf * torch.rsqrt(variance)
        new_scale = self.scale(scale)
        scaled = not unchanged(new_scale, scale)
        if scaled:
            normalized = xf / new_scale
        new = self.normalized(normalized)
        if not scaled and unchanged(new, normalized):
            return None
        if not self._checked:
            with torch.no_grad():
                expected = self._affine(xf * torch.rsqrt(variance), output.dtype)
            tol = 1e-4 if output.dtype in (torch.float32, torch.float64) else 2e-2  # half precision
            if not torch.allclose(expected, output, rtol=tol, atol=tol / 10):
                raise NotImplementedError(
                    f"hook_scale / hook_normalized: {type(module).__name__} does not compute "
                    f"{self._formula()}, so an edit here cannot be put through it"
                )
            self._checked = True
        return self._affine(new, output.dtype)

    def _affine(self, normalized: Tensor, dtype: torch.dtype) -> Tensor:
        weight = getattr(self.module, "weight", None)
        out = normalized
        if weight is not None:
            out = out * ((1.0 + weight.float()) if self.offset else weight)
        bias = getattr(self.module, "bias", None)
        if self.layer_norm and bias is not None:
            out = out + bias
        return out.to(dtype)

    def _formula(self) -> str:
        if self.layer_norm:
            return "w * (x - mean) / sqrt(var + eps) + b"
        return "(1 + w) * x / rms(x)" if self.offset else "w * x / rms(x)"


def norm_points(dec: Decoder) -> dict[str, NormHookPoint]:
    """``N.hook_scale`` / ``N.hook_normalized`` for each layer's two norms and the final norm."""
    paths = [dec.path(layer, part) for layer in range(dec.n_layers) for part in ("ln1", "ln2")]
    paths.append(dec.layout.final_norm)
    points: dict[str, NormHookPoint] = {}
    for path in paths:
        norm = _Norm(dec.module(path))
        points[f"{path}.hook_scale"] = norm.scale
        points[f"{path}.hook_normalized"] = norm.normalized
    for name, hp in points.items():
        hp.name = name
    return points
