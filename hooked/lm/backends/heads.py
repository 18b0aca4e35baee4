"""Per-head hook points on the attention modules of a wrapped transformers decoder.

Hook points per attention module at path ``P`` (``model.layers.3.self_attn``,
``transformer.h.3.attn``, ``gpt_neox.layers.3.attention``), with TransformerLens's shapes:

* ``P.hook_z`` ``[batch, pos, head, d_head]``: each head's output before the output projection
  (the projection's input, split into heads). Editable: a replacement is merged back into
  ``[batch, pos, head * d_head]`` and projected, so zeroing ``z[:, :, h]`` ablates head ``h``.
* ``P.hook_pattern`` ``[batch, head, query, key]``: the attention probabilities (after the
  softmax and the causal / padding mask; rows sum to 1). Editable: a replacement is multiplied
  with the values in place of the model's own probabilities (query heads share their key-value
  head as the model does), so setting a row to a one-hot attention knocks attention out.
* ``P.hook_attn_scores`` ``[batch, head, query, key]``: the scores before the softmax (scaled,
  soft-capped where the model caps them, masked entries set to the dtype's lowest value, as
  TransformerLens's bridge has them). Editable: the probabilities are the softmax of the
  replacement (then ``hook_pattern`` fires on them).
* ``P.hook_rot_q`` / ``P.hook_rot_k`` ``[batch, pos, head or kv_head, d_head]`` (models with rotary
  positions): queries and keys after rotation, as the attention function receives them.
  Editable: the attention runs on the replacement.

How. ``hook_z`` is a forward pre-hook on the output projection that reshapes its input to heads
and back. The others live inside the attention function, and the probabilities are never formed
by the fused kernels (sdpa). While any of them has a hook attached, the model runs the attention
implementation ``"hooked_<impl>"`` (registered with transformers' ``AttentionInterface``, with
``<impl>``'s own mask function): every layer runs ``<impl>`` as before; a layer with a hooked
point fires its rotated queries and keys first, then runs ``<impl>`` on them, and when scores or
pattern are hooked forms the scores as the eager attention functions of transformers do (mask
converted to eager's additive form) and their softmax, then its hook points. Reading therefore
leaves the outputs bit-identical; an edited score or pattern replaces that layer's attention
output by ``pattern @ values``. The switch is made when the first such hook is attached and undone
when the last is removed. Implementations other than ``sdpa`` and ``eager`` (flash attention on a
GPU) are switched to ``"hooked_eager"`` instead (every layer eager while hooked; logits then differ
from the fused kernel's by float rounding). Dropout on the probabilities is not applied to an
edited pattern (the models are in eval mode after loading).

Nothing is attached while no hook is: an unhooked wrapped model runs the transformers code as is.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from hooked.hook_point import HookPoint
from hooked.lm.names.layouts import Decoder
from hooked.wrapping import ModuleHookPoint

# attention module -> its attention-function hook points by kind ("pattern", "attn_scores", "rot_q",
# "rot_k"), for the modules one of whose points is hooked right now
_ATTENTION_POINTS: weakref.WeakKeyDictionary[nn.Module, dict[str, AttentionHookPoint]] = (
    weakref.WeakKeyDictionary()
)
ATTENTION_KINDS = ("pattern", "attn_scores", "rot_q", "rot_k")


def unchanged(new: Tensor, old: Tensor) -> bool:
    """Whether a hook's replacement ``new`` leaves ``old`` as it was: the same tensor, or equal values
    outside any gradient (``act.clone()``), so the model's own output is kept bit for bit."""
    return new is old or (not new.requires_grad and torch.equal(new, old))


class HeadHookPoint(ModuleHookPoint):
    """``P.hook_z``: the input of an attention module's output projection, as ``[..., head, d_head]``."""

    def __init__(self, o_proj: nn.Module, n_heads: int):
        super().__init__(o_proj, "in")
        self.n_heads = n_heads

    def _on_input(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if not args or not isinstance(args[0], Tensor):
            raise TypeError(
                f"{self._label()}: expected the output projection {type(module).__name__} to be called "
                "with the heads' outputs as its first positional argument"
            )
        flat = args[0]
        if flat.shape[-1] % self.n_heads:
            raise ValueError(
                f"{self._label()}: the output projection's input has {flat.shape[-1]} features, "
                f"which does not split into {self.n_heads} heads"
            )
        z = flat.unflatten(-1, (self.n_heads, flat.shape[-1] // self.n_heads))
        new = self(z)
        if new is z:
            return None
        return (new.flatten(-2), *args[1:]), kwargs

    def extra_repr(self) -> str:
        return f"name={self.name!r}, {self.n_heads} heads, input of {type(self._target).__name__}"


class AttentionHookPoint(HookPoint):
    """A hook point fired inside the attention function of one attention module: ``P.hook_pattern``
    (probabilities ``[batch, head, query, key]``), ``P.hook_attn_scores`` (scores before the softmax,
    same shape), ``P.hook_rot_q`` / ``P.hook_rot_k`` (queries / keys after rotary positions,
    ``[batch, pos, head or kv_head, d_head]``).

    Fired from inside the ``"hooked_<impl>"`` attention implementation, which the model runs while
    any of its attention-function hook points has a hook attached (see the module docstring).
    """

    _attn: nn.Module  # set with object.__setattr__ (not child modules), as are _switch and _points
    _switch: EagerSwitch
    _points: dict[str, AttentionHookPoint]  # this module's attention-function points, by kind

    def __init__(
        self, attn: nn.Module, switch: EagerSwitch, kind: str, points: dict[str, AttentionHookPoint]
    ):
        super().__init__()
        object.__setattr__(self, "_attn", attn)  # plain references, not child modules
        object.__setattr__(self, "_switch", switch)
        object.__setattr__(self, "_points", points)
        self.kind = kind
        self._holding = False
        points[kind] = self

    def _refresh(self) -> None:
        super()._refresh()
        if self._live and not self._holding:
            try:
                self._switch.acquire()
            except BaseException:
                self._fwd.clear()  # the hooks just attached (there were none): all or nothing
                self._bwd.clear()
                super()._refresh()
                raise
            _ATTENTION_POINTS[self._attn] = self._points
            self._holding = True
        elif not self._live and self._holding:
            self._holding = False
            if not any(p._holding for p in self._points.values()):
                _ATTENTION_POINTS.pop(self._attn, None)
            self._switch.release()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.kind} of {type(self._attn).__name__}".lstrip(", ")


class EagerSwitch:
    """Runs a transformers model with ``"hooked_<impl>"`` attention while anyone holds the switch
    (one switch per model: :meth:`of`)."""

    _switches: weakref.WeakKeyDictionary[nn.Module, EagerSwitch] = weakref.WeakKeyDictionary()

    def __init__(self, hf_model: nn.Module):
        # Any: a transformers PreTrainedModel (its config and set_attn_implementation)
        self._model: weakref.ref[Any] = weakref.ref(hf_model)
        self._holders = 0
        self._before: str | None = None

    @classmethod
    def of(cls, hf_model: nn.Module) -> EagerSwitch:
        """The switch of ``hf_model`` (shared by every wrapper of the same model)."""
        if hf_model not in cls._switches:
            cls._switches[hf_model] = cls(hf_model)
        return cls._switches[hf_model]

    def acquire(self) -> None:
        if self._holders == 0:
            model = self._model()
            assert model is not None  # the hook points that hold this switch hold the model
            before = model.config._attn_implementation
            base = before if before in ("sdpa", "eager") else "eager"
            model.set_attn_implementation(_register(base))
            self._before = before
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            model = self._model()
            if model is not None and self._before is not None:
                model.set_attn_implementation(self._before)
            self._before = None


def head_hook_points(dec: Decoder, switch: EagerSwitch | None = None) -> dict[str, HookPoint]:
    """For the attention module ``P`` of every layer of ``dec``: ``P.hook_z``, ``P.hook_pattern``,
    ``P.hook_attn_scores``, and for rotary models (no learned positions) ``P.hook_rot_q`` /
    ``P.hook_rot_k``."""
    switch = switch or EagerSwitch.of(dec.root)
    rotary = dec.layout.pos_embed is None
    points: dict[str, HookPoint] = {}
    for layer in range(dec.n_layers):
        path = dec.path(layer, "attn")
        attn = dec.part(layer, "attn")
        points[f"{path}.hook_z"] = HeadHookPoint(dec.part(layer, "o_proj"), dec.n_heads)
        by_kind: dict[str, AttentionHookPoint] = {}
        for kind in ATTENTION_KINDS:  # listed pattern first (the order hook_dict had before the others)
            if rotary or not kind.startswith("rot_"):
                points[f"{path}.hook_{kind}"] = AttentionHookPoint(attn, switch, kind, by_kind)
    for name, hp in points.items():
        hp.name = name
    return points


# ---------------------------------------------------------------------- the attention implementations
def _eager_of(module: nn.Module) -> Any:
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        raise NotImplementedError(
            f"hook_pattern: {type(module).__name__} has no eager_attention_forward in "
            f"{type(module).__module__}, so its attention probabilities cannot be hooked"
        )
    return eager


def _attention(base: str) -> Any:
    """The ``"hooked_<base>"`` attention function: ``base`` attention, with the layer's rotated
    queries and keys, scores and pattern hooked where they are."""

    def attention(
        module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor | None]:
        if base == "eager":
            run = _eager_of(module)
        else:
            from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

            run = ALL_ATTENTION_FUNCTIONS[base]
        points = _ATTENTION_POINTS.get(module)
        if points is None:
            return run(module, query, key, value, attention_mask, **kwargs)
        query, key = _rotated(points, query, key)
        out, weights = run(module, query, key, value, attention_mask, **kwargs)
        scores_point, pattern_point = points.get("attn_scores"), points.get("pattern")
        scores_live = scores_point is not None and scores_point._live
        pattern_live = pattern_point is not None and pattern_point._live
        if not (scores_live or pattern_live):
            return out, weights
        changed = False
        if scores_live or weights is None:  # a fused kernel forms no probabilities: form them here
            scores = _scores(query, key, attention_mask, kwargs)
            if scores_live:
                assert scores_point is not None
                new = scores_point(scores)
                changed = not unchanged(new, scores)
                scores = new if changed else scores
            if changed or weights is None:
                weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        if pattern_live:
            assert pattern_point is not None
            new = pattern_point(weights)
            if not unchanged(new, weights):
                changed, weights = True, new
        if not changed:
            return out, weights
        groups = weights.shape[1] // value.shape[1]  # query heads per key-value head
        values = value.repeat_interleave(groups, dim=1) if groups > 1 else value
        out = torch.matmul(weights.to(values.dtype), values).transpose(1, 2).contiguous()
        return out, weights

    attention.__qualname__ = f"hooked_{base}_attention"
    return attention


def _rotated(points: dict[str, AttentionHookPoint], query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """``hook_rot_q`` / ``hook_rot_k`` on the queries and keys the attention function was given
    (``[batch, head, pos, d_head]``, shown as ``[batch, pos, head, d_head]``); with cached keys,
    ``hook_rot_k`` sees this forward's new positions (the last ones), as TransformerLens's bridge."""
    rot_q, rot_k = points.get("rot_q"), points.get("rot_k")
    if rot_q is not None and rot_q._live:
        seen = query.transpose(1, 2)
        new = rot_q(seen)
        if not unchanged(new, seen):
            query = new.transpose(1, 2)
    if rot_k is not None and rot_k._live:
        n = query.shape[-2]
        cached = key.shape[-2] > n
        seen = (key[:, :, -n:] if cached else key).transpose(1, 2)
        new = rot_k(seen)
        if not unchanged(new, seen):
            if cached:
                raise NotImplementedError(
                    f"{rot_k.name}: an edit of rotated keys with a key-value cache (generation) would "
                    "not reach the keys already cached; edit hook_k (before rotation, cached as edited)"
                )
            key = new.transpose(1, 2)
    return query, key


def _scores(query: Tensor, key: Tensor, mask: Tensor | None, kwargs: dict) -> Tensor:
    """Attention scores before the softmax as the eager attention functions of transformers form
    them (scaled, soft-capped where the model caps them, masked with the dtype's lowest value):
    TransformerLens's bridge's ``hook_attn_scores``."""
    groups = query.shape[1] // key.shape[1]
    keys = key.repeat_interleave(groups, dim=1) if groups > 1 else key
    scaling = kwargs.get("scaling")
    scores = torch.matmul(query, keys.transpose(2, 3)) * (
        query.shape[-1] ** -0.5 if scaling is None else scaling
    )
    softcap = kwargs.get("softcap")
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    additive = _additive_mask(mask, query, key)
    if additive is not None:
        scores = scores + additive[..., : key.shape[-2]]
    return scores


def _additive_mask(mask: Tensor | None, query: Tensor, key: Tensor) -> Tensor | None:
    """An sdpa mask (boolean, True = attend; or None = causal) as eager's additive float mask."""
    if mask is None:
        q, k = query.shape[-2], key.shape[-2]
        if q == 1:
            return None
        mask = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)[None, None]
    if mask.dtype != torch.bool:
        return mask
    zero = torch.tensor(0.0, device=mask.device, dtype=query.dtype)
    return torch.where(mask, zero, torch.finfo(query.dtype).min)


_REGISTERED: set[str] = set()


def _register(base: str) -> str:
    """Register ``"hooked_<base>"`` with transformers (attention and mask functions); returns the name."""
    name = f"hooked_{base}"
    if name not in _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

        AttentionInterface.register(name, _attention(base))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
        _REGISTERED.add(name)
    return name
