"""Per-head query, key and value inputs on the attention modules of a wrapped transformers decoder.

Three hook points per attention module at path ``P`` (TransformerLens's ``hook_q_input`` /
``hook_k_input`` / ``hook_v_input``, which its bridge has too):

* ``P.hook_q_input`` ``[batch, pos, head, d_model]``: the residual stream each query head reads,
  one copy per head, before the attention's norm;
* ``P.hook_k_input`` / ``P.hook_v_input`` ``[batch, pos, kv_head, d_model]``: the same for each
  key-value head (as many as the model has: grouped-query attention shares one key and one value
  input between the query heads of a group, so that is what there is to read or edit).

Editing head ``h``'s copy changes only head ``h``'s query (key, value): the copy is normed with the
layer's own norm module and projected with that head's rows of the projection, and the result
replaces those columns of the projection's output. This is what a circuit's edge into one head's
query (key, value) needs (:mod:`hooked.lm.circuits`).

How. While any of a layer's three points has a hook attached, the norm before attention carries a
forward hook that keeps its input (the residual stream) and output, and each projection that
computes queries, keys or values carries a forward hook. A projection hook fires the point with
the residual stream expanded to one (view) copy per head; a hook that returns it unchanged leaves
the projection's output untouched (reading is free and bit-identical), a replacement (or a
backward hook, which must see the per-head path) recomputes those heads from their own copies.
An edited copy moves what the projection read by the change of that head's normed copy
(``norm(copy) - norm(residual)``), so an edit of the norm's output by another hook is kept; the
projection's input must have the norm output's shape (checked at every call). A replacement equal
to the copies (and not part of a gradient) leaves the output untouched, bit for bit.

Projections understood: separate ``q_proj`` / ``k_proj`` / ``v_proj`` linears (Llama, SmolLM2,
Mistral, Qwen2/3, Gemma, Gemma 2, ...), GPT-2's fused ``c_attn`` (queries, keys, values, each
head-major) and GPT-NeoX's fused ``query_key_value`` (per head: its query, key and value).
Other attention modules get no per-head input points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from hooked.hook_point import HookPoint
from hooked.lm.backends.heads import unchanged
from hooked.lm.backends.inside import inside_hook
from hooked.lm.names.layouts import Decoder

KINDS = ("q", "k", "v")


@dataclass(frozen=True)
class Part:
    """One kind (q, k or v) computed by one projection: which output columns each unit fills."""

    kind: str
    proj: nn.Module
    columns: Tensor  # [units, d_head]: the projection's output columns of each unit, in order
    units: int


class HeadInputHookPoint(HookPoint):
    """``P.hook_{q,k,v}_input``: the residual stream each head (key-value head) of one kind reads."""

    _split: _SplitInputs  # set with object.__setattr__ (a plain reference, not a child module)

    def __init__(self, split: _SplitInputs, kind: str):
        super().__init__()
        object.__setattr__(self, "_split", split)  # a plain reference, not a child module
        self.kind = kind

    def _refresh(self) -> None:
        super()._refresh()
        self._split.update()

    @property
    def units(self) -> int:
        """How many heads (key-value heads, for ``k`` and ``v``) this point has a copy for."""
        return self._split.parts[self.kind].units

    def extra_repr(self) -> str:
        units = self.units
        return f"{super().extra_repr()}, {self.kind} input of {units} heads".lstrip(", ")


class _SplitInputs:
    """The torch hooks of one attention layer's per-head inputs, installed while a point is live."""

    def __init__(self, norm: nn.Module, parts: dict[str, Part]):
        self.norm = norm
        self.parts = parts
        self.points = {kind: HeadInputHookPoint(self, kind) for kind in parts}
        self._handles: list[Any] = []
        self._stash: tuple[Tensor, Tensor] | None = None  # (the norm's input, its output)

    def update(self) -> None:
        live = any(p._live for p in self.points.values())
        if live and not self._handles:
            self._handles.append(inside_hook(self.norm, self._on_norm, rank=1))
            for proj in {id(p.proj): p.proj for p in self.parts.values()}.values():
                self._handles.append(inside_hook(proj, self._on_projection, rank=0))
        elif not live and self._handles:
            for h in self._handles:
                h.remove()
            self._handles = []
            self._stash = None

    def _on_norm(self, module: nn.Module, args: tuple, output: Any) -> None:
        if args and isinstance(args[0], Tensor) and isinstance(output, Tensor):
            self._stash = (args[0], output)
        else:
            self._stash = None

    def _on_projection(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        stash = self._stash
        if stash is None or not args or not isinstance(args[0], Tensor) or args[0].shape != stash[1].shape:
            raise RuntimeError(
                f"per-head inputs: the input of {type(module).__name__} is not the output of the norm "
                f"{type(self.norm).__name__} that runs before it, so its heads' inputs cannot be split; "
                "this model's attention is not one hooked.lm.backends.head_inputs understands"
            )
        resid = stash[0]
        out = None
        for kind, part in self.parts.items():
            point = self.points[kind]
            if part.proj is not module or not point._live:
                continue
            copies = resid.unsqueeze(-2).expand(*resid.shape[:-1], part.units, resid.shape[-1])
            new = point(copies)
            if unchanged(new, copies):
                continue  # unchanged (a copy of the same values too): the projection's output as it is
            if out is None:
                out = output.clone()
            # the change of each head's normed copy, added to what the projection read (which keeps an
            # edit of the norm's output made by another hook)
            shift = self.norm.forward(new) - self.norm.forward(stash[0]).unsqueeze(-2)
            moved = (args[0].unsqueeze(-2) + shift).to(args[0].dtype)
            out[..., part.columns.flatten()] = _project_normed(module, part, moved).to(out.dtype)
        return out


def _project_normed(proj: nn.Module, part: Part, normed: Tensor) -> Tensor:
    """Each unit's own normed copy projected onto that unit's columns: ``[..., units * d_head]``."""
    weight = weight_rows(proj)[part.columns.to(normed.device)]  # [units, d_head, d_model]
    out = torch.einsum("...ud,ued->...ue", normed.to(weight.dtype), weight)
    bias = getattr(proj, "bias", None)
    if bias is not None:
        out = out + bias[part.columns.to(bias.device)]
    return out.flatten(-2)


def weight_rows(proj: nn.Module) -> Tensor:
    """The projection's weight as ``[out_features, in_features]`` (a Linear's; GPT-2's Conv1D transposed)."""
    if isinstance(proj, nn.Linear):
        return proj.weight
    if type(proj).__name__ == "Conv1D":
        return cast(Tensor, proj.weight).t()
    raise TypeError(f"per-head inputs: {type(proj).__name__} is neither a Linear nor GPT-2's Conv1D")


def _out_features(proj: Any) -> int | None:
    if isinstance(proj, nn.Linear):
        return proj.out_features
    if type(proj).__name__ == "Conv1D":
        return int(proj.weight.shape[1])
    return None


def qkv_parts(dec: Decoder, layer: int) -> dict[str, Part] | None:
    """The q, k and v parts of ``layer``'s attention, or ``None`` for projections not understood."""
    attn = dec.part(layer, "attn")
    h = dec.n_heads
    mods = attn._modules
    q, k, v = (mods.get(f"{kind}_proj") for kind in KINDS)
    if isinstance(q, nn.Linear) and isinstance(k, nn.Linear) and isinstance(v, nn.Linear):
        if q.out_features % h:
            return None
        d_head = q.out_features // h
        if k.out_features % d_head or k.out_features != v.out_features:
            return None
        g = k.out_features // d_head
        cols = {"q": _blocks(h, d_head), "k": _blocks(g, d_head), "v": _blocks(g, d_head)}
        projs = {"q": q, "k": k, "v": v}
        return {kind: Part(kind, projs[kind], cols[kind], len(cols[kind])) for kind in KINDS}
    fused = mods.get("c_attn")  # GPT-2: [queries | keys | values], each head-major
    if fused is not None and dec.layout.name == "gpt2":
        width = _out_features(fused)
        if width is None or width % (3 * h):
            return None
        d_head = width // (3 * h)
        return {
            kind: Part(kind, fused, i * h * d_head + _blocks(h, d_head), h) for i, kind in enumerate(KINDS)
        }
    fused = mods.get("query_key_value")  # GPT-NeoX: per head [query | key | value]
    if isinstance(fused, nn.Linear) and dec.layout.name == "gpt_neox":
        if fused.out_features % (3 * h):
            return None
        d_head = fused.out_features // (3 * h)
        per_head = torch.arange(h)[:, None] * 3 * d_head + torch.arange(d_head)[None, :]
        return {kind: Part(kind, fused, per_head + i * d_head, h) for i, kind in enumerate(KINDS)}
    return None


def _blocks(units: int, d_head: int) -> Tensor:
    return torch.arange(units * d_head).reshape(units, d_head)


def head_input_points(dec: Decoder) -> dict[str, HeadInputHookPoint]:
    """``{P.hook_q_input, P.hook_k_input, P.hook_v_input}`` for each layer whose attention has
    projections this module understands (see the module docstring); others get none."""
    points: dict[str, HeadInputHookPoint] = {}
    for layer in range(dec.n_layers):
        parts = qkv_parts(dec, layer)
        if parts is None:
            continue
        split = _SplitInputs(dec.part(layer, "ln1"), parts)
        path = dec.path(layer, "attn")
        for kind, point in split.points.items():
            point.name = f"{path}.hook_{kind}_input"
            points[point.name] = point
    return points
