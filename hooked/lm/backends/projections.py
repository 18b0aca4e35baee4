"""Per-head hook points on the projections of a wrapped transformers decoder's attention.

Four hook points per attention module at path ``P`` (TransformerLens's names and shapes):

* ``P.hook_q`` ``[batch, pos, head, d_head]``, ``P.hook_k`` / ``P.hook_v`` ``[batch, pos,
  kv_head, d_head]``: the query, key and value projections' outputs split into heads (before
  rotary positions; grouped-query models keep their key-value heads, as TransformerLens's bridge
  shapes them). Editable: a replacement is written back into those columns of the projection's
  output, so it reaches the attention (and, in generation, the key-value cache) as the model's own
  values would.
* ``P.hook_result`` ``[batch, pos, head, d_model]``: each head's output after the output
  projection, ``z[..., h, :] @ W_O[h]``; their sum over heads plus the projection's bias is what
  attention adds to the residual stream. Editable: a replacement's sum over heads (plus the bias)
  replaces the projection's output.

How. Each point installs a PyTorch forward hook on its projection while a hook is attached to it
(nothing at all otherwise). A hook that returns its activation unchanged leaves the projection's
output object untouched, so reading is bit-identical; ``hook_result`` computes the per-head
products only while it has a hook. Projections understood are those of
:func:`hooked.lm.backends.head_inputs.qkv_parts` (separate ``q_proj`` / ``k_proj`` / ``v_proj``,
GPT-2's ``c_attn``, GPT-NeoX's ``query_key_value``); the output projection is a ``Linear`` or
GPT-2's ``Conv1D``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hooked.hook_point import HookPoint
from hooked.lm.backends.head_inputs import KINDS, Part, qkv_parts, weight_rows
from hooked.lm.backends.heads import unchanged
from hooked.lm.backends.inside import inside_hook
from hooked.lm.names.layouts import Decoder


class ProjectionHookPoint(HookPoint):
    """A hook point fed by a PyTorch forward hook on one projection, installed only while it is live."""

    _owner: Any  # set with object.__setattr__ (a plain reference): what installs the torch hook

    def __init__(self, owner: Any, what: str):
        super().__init__()
        object.__setattr__(self, "_owner", owner)
        self.what = what

    def _refresh(self) -> None:
        super()._refresh()
        self._owner.update()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.what}".lstrip(", ")


class _QKV:
    """The torch hooks of one attention layer's ``hook_q`` / ``hook_k`` / ``hook_v``."""

    def __init__(self, parts: dict[str, Part]):
        self.parts = parts
        self.points = {
            kind: ProjectionHookPoint(self, f"{kind} of {parts[kind].units} heads") for kind in parts
        }
        self._handles: list[Any] = []

    def update(self) -> None:
        live = any(p._live for p in self.points.values())
        if live and not self._handles:
            for proj in {id(p.proj): p.proj for p in self.parts.values()}.values():
                self._handles.append(inside_hook(proj, self._on_projection, rank=1))
        elif not live and self._handles:
            for h in self._handles:
                h.remove()
            self._handles = []

    def _on_projection(self, module: nn.Module, args: tuple, output: Any) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise TypeError(f"hook_q/k/v: {type(module).__name__} returned a {type(output).__name__}")
        out = output
        for kind in KINDS:
            part = self.parts[kind]
            point = self.points[kind]
            if part.proj is not module or not point._live:
                continue
            cols = part.columns
            d_head = cols.shape[1]
            contiguous = cols.numel() == out.shape[-1]  # the whole output, head-major: a view
            heads = (
                out.unflatten(-1, (part.units, d_head))
                if contiguous
                else out[..., cols.to(out.device).flatten()].unflatten(-1, (part.units, d_head))
            )
            new = point(heads)
            if unchanged(new, heads):
                continue
            if contiguous:
                out = new.flatten(-2)
            else:
                if out is output:
                    out = output.clone()
                out[..., cols.to(out.device).flatten()] = new.flatten(-2)
        return None if out is output else out


class _Result:
    """The torch hook of one attention layer's ``hook_result`` (on its output projection)."""

    def __init__(self, o_proj: nn.Module, n_heads: int):
        self.o_proj = o_proj
        self.n_heads = n_heads
        self.point = ProjectionHookPoint(self, f"per-head output of {type(o_proj).__name__}")
        self._handle: Any = None

    def update(self) -> None:
        if self.point._live and self._handle is None:
            self._handle = inside_hook(self.o_proj, self._on_output, rank=0)
        elif not self.point._live and self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_output(self, module: nn.Module, args: tuple, output: Any) -> Tensor | None:
        if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            raise TypeError(
                f"hook_result: expected the output projection {type(module).__name__} to map the heads' "
                "outputs (its first positional argument) to a tensor"
            )
        z = args[0].unflatten(-1, (self.n_heads, -1))  # [..., head, d_head]
        w = weight_rows(module).t().unflatten(0, (self.n_heads, -1))  # [head, d_head, d_model]
        result = torch.einsum("...hd,hdm->...hm", z.to(w.dtype), w)
        new = self.point(result)
        if unchanged(new, result):
            return None
        out = new.sum(dim=-2)
        bias = getattr(module, "bias", None)
        return (out if bias is None else out + bias).to(output.dtype)


def projection_points(dec: Decoder) -> dict[str, HookPoint]:
    """``P.hook_q`` / ``hook_k`` / ``hook_v`` (where :func:`qkv_parts` understands the layer's
    projections) and ``P.hook_result`` for the attention module ``P`` of every layer."""
    points: dict[str, HookPoint] = {}
    for layer in range(dec.n_layers):
        path = dec.path(layer, "attn")
        parts = qkv_parts(dec, layer)
        if parts is not None:
            qkv = _QKV(parts)
            for kind in KINDS:
                points[f"{path}.hook_{kind}"] = qkv.points[kind]
        o_proj = dec.part(layer, "o_proj")
        if isinstance(o_proj, nn.Linear) or type(o_proj).__name__ == "Conv1D":
            points[f"{path}.hook_result"] = _Result(o_proj, dec.n_heads).point
    for name, hp in points.items():
        hp.name = name
    return points
