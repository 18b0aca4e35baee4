"""The bridge's per-forward hot path: TransformerLens's classes, without the work that changes nothing.

A forward of TransformerLens 4.3's bridge calls about a thousand ``HookPoint`` modules and a few
hundred components, each through ``nn.Module.__call__`` (and, for components, accelerate's
``align_module_device``), and a normalisation component computes the values of ``hook_scale`` and
``hook_normalized`` even when nothing reads them, before it calls the transformers norm whose
output it returns. :func:`quiet_hook_points` (applied by :func:`hooked.lm.backends.bridge.hooked_bridge`)
gives each hook point the class :class:`QuietHookPoint` and each component a same-named subclass
of its own class whose call

- goes straight to ``forward`` while nothing is registered on the component or globally
  (no module hook, no compiled call, no JIT trace: ``nn.Module.__call__`` would do just that),
  and skips ``align_module_device`` unless the wrapped module carries accelerate's ``_hf_hook``;
  a component whose only hooks are forward pre-hooks (a block's capture hooks on its norms) runs
  them as ``nn.Module.__call__`` would, then ``forward``;
- on a block and a rotary attention (TransformerLens's ``BlockBridge`` /
  ``PositionEmbeddingsAttentionBridge.forward``), runs the lean copies of
  :mod:`hooked.lm.backends.bridge_lean` (the same tensor operations and hook points, in the same
  order; any other path TransformerLens's ``forward``);
- on a gated MLP without processed weights, calls the transformers MLP's ``forward`` straight
  away while nothing is registered on it;
- on a normalisation component (TransformerLens's own ``forward`` on the path that returns the
  transformers norm's output), leaves out the ``hook_scale`` / ``hook_normalized`` values while
  nobody can see them (computed under ``no_grad`` and discarded by TransformerLens);
- on a linear projection around a plain ``nn.Linear``, calls ``F.linear`` as the linear's own
  ``forward`` would, without the two ``nn.Module.__call__`` in between;
- stores the flags a block or gated MLP reads on each call (``_stop_at_layer_idx``, ...) where
  they are absent, as the value their absence gives (each read of an absent one raised two
  exceptions);
- on a block, reads the wrapped layer's ``forward`` signature once per function instead of on
  every call (``inspect.signature``, to filter the keyword arguments the same way).

A quiet hook point returns its input (what ``HookPoint.forward`` does) without a frame of its
own. Anything else takes TransformerLens's own code. The results are bit-identical to the bridge with
TransformerLens's classes: forwards, caches, steering hooks, gradients, generation, several model
families (``tests/lm/test_bridge_hot_path.py``). A pickled or deep-copied component is rebuilt as
TransformerLens's own class.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.modules.module as _torch_module
from transformer_lens.hook_points import HookPoint as TLHookPoint
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformer_lens.model_bridge.generalized_components.block import BlockBridge
from transformer_lens.model_bridge.generalized_components.gated_mlp import GatedMLPBridge
from transformer_lens.model_bridge.generalized_components.linear import LinearBridge
from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge
from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
    PositionEmbeddingsAttentionBridge,
)

from hooked.lm.backends.bridge_lean import attention_forward, block_forward


class QuietHookPoint(TLHookPoint):
    """TransformerLens's ``HookPoint``, called without the detour through ``nn.Module.__call__``
    while nothing is registered on it.

    With no module hook of its own, no global module hook and no compiled call,
    ``nn.Module.__call__`` would call ``forward`` straight away, and ``forward`` returns its input:
    this call returns it without the Python frames and hook-dict reads in between. Anything else
    goes through ``nn.Module.__call__`` as before (TransformerLens's ``add_hook`` registers a
    PyTorch forward hook, so a hooked point takes that path). Under a JIT trace a quiet point
    also returns its input at once: ``nn.Module.__call__`` would only open a named scope around
    ``forward``, which records no operation (the components still take the traced call).
    """

    def __call__(self, x: Any, /, *args: Any, **kwargs: Any) -> Any:
        d = self.__dict__
        if (
            d["_forward_hooks"]
            or d["_forward_pre_hooks"]
            or d["_backward_hooks"]
            or d["_backward_pre_hooks"]
            or "_compiled_call_impl" in d
            or any(_GLOBAL_HOOKS)
        ):
            return super().__call__(x, *args, **kwargs)
        if args or kwargs or "forward" in d:
            return self.forward(x, *args, **kwargs)
        return x  # TransformerLens's HookPoint.forward(x) returns x


def quiet_hook_points(model: Any) -> int:
    """Give every TransformerLens ``HookPoint`` of ``model`` (exactly that class) the class
    :class:`QuietHookPoint`, and every component whose call is ``GeneralizedComponent``'s its
    quiet subclass (see the module docstring); returns how many it changed (idempotent)."""
    changed = 0
    for module in model.modules():
        cls = type(module)
        if cls is TLHookPoint:
            module.__class__ = QuietHookPoint
            changed += 1
        elif (
            isinstance(module, GeneralizedComponent)
            and cls.__call__ is GeneralizedComponent.__call__
            and "_hooked_quiet_of" not in cls.__dict__
        ):
            module.__class__ = _quiet_class(cls)
            _set_absent_flags(module)
            changed += 1
    return changed


@contextmanager
def transformer_lens_classes(model: Any) -> Iterator[Any]:
    """For a ``with`` block, every hook point and component of ``model`` with TransformerLens's
    own class (the quiet ones back afterwards, also on error): TransformerLens's bridge as it
    runs without hooked, for comparisons (``benchmarks/peers.py``). Yields ``model``."""
    switched = []
    for module in model.modules():
        cls = type(module)
        base = TLHookPoint if cls is QuietHookPoint else cls.__dict__.get("_hooked_quiet_of")
        if base is not None:
            switched.append((module, cls))
            module.__class__ = base
    try:
        yield model
    finally:
        for module, cls in switched:
            module.__class__ = cls


# flags TransformerLens reads on every call and sets only when used: while absent, each read
# falls through ``GeneralizedComponent.__getattr__`` to the wrapped module and back, two
# exceptions later, giving what these values give (``getattr(self, name, None)``, ``hasattr``)
_ABSENT_FLAGS = (
    (BlockBridge, (("_stop_at_layer_idx", None), ("_start_at_layer_idx", None))),
    (GatedMLPBridge, (("_use_processed_weights", False),)),
)


def _set_absent_flags(module: Any) -> None:
    """Store each of :data:`_ABSENT_FLAGS` that ``module`` reads and has nowhere (not on itself,
    its class or its wrapped module) as the value its absence gives, as TransformerLens itself
    stores it once used (``_stop_at_layer_idx = None`` after a ``stop_at_layer`` run)."""
    original = module.__dict__["_modules"].get("_original_component")
    for kind, flags in _ABSENT_FLAGS:
        if not isinstance(module, kind):
            continue
        for name, value in flags:
            if name in module.__dict__ or hasattr(type(module), name):
                continue
            if original is not None and hasattr(original, name):
                continue
            object.__setattr__(module, name, value)


# PyTorch's global module hooks, the dictionaries ``nn.Module.__call__`` reads (made once when
# torch.nn.modules.module is imported, then only changed in place, never rebound), and its test
# for a JIT trace under way
_GLOBAL_HOOKS = (
    _torch_module._global_forward_hooks,
    _torch_module._global_forward_pre_hooks,
    _torch_module._global_backward_hooks,
    _torch_module._global_backward_pre_hooks,
)
_tracing = torch._C._get_tracing_state


def _world_busy() -> bool:
    """A global module hook, or a JIT trace under way: ``nn.Module.__call__`` would act on every
    module."""
    return any(_GLOBAL_HOOKS) or _tracing() is not None


def _registered(d: dict[str, Any]) -> bool:
    """Whether the module whose ``__dict__`` is ``d`` has a hook of its own or a compiled call."""
    return bool(
        d["_forward_hooks"]
        or d["_forward_pre_hooks"]
        or d["_backward_hooks"]
        or d["_backward_pre_hooks"]
        or d.get("_compiled_call_impl") is not None
    )


def _busy(d: dict[str, Any]) -> bool:
    """Whether ``nn.Module.__call__`` would do more than call ``forward`` on the module whose
    ``__dict__`` is ``d``: a hook on it or a global one, a compiled call, a JIT trace."""
    return _registered(d) or _world_busy()


def _busy_either(d: dict[str, Any], e: dict[str, Any]) -> bool:
    """:func:`_busy` of either of two modules (by their ``__dict__``), the global state read once."""
    return _registered(d) or _registered(e) or _world_busy()


def _only_pre_hooks(d: dict[str, Any]) -> bool:
    """Whether the module whose ``__dict__`` is ``d`` has forward pre-hooks and nothing else that
    ``nn.Module.__call__`` would act on (no forward or backward hook, no global hook, no compiled
    call, no JIT trace): a block's capture hooks on its norms, for one."""
    return bool(
        d["_forward_pre_hooks"]
        and not (
            d["_forward_hooks"]
            or d["_backward_hooks"]
            or d["_backward_pre_hooks"]
            or d.get("_compiled_call_impl") is not None
            or _world_busy()
        )
    )


def _call_with_pre_hooks(module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """What ``nn.Module.__call__`` does for a module whose only hooks are forward pre-hooks
    (:func:`_only_pre_hooks`): each hook in order of registration, on the arguments (and keywords,
    for one registered ``with_kwargs``) the previous one left, replacing them when it returns
    something; then ``forward``."""
    d = module.__dict__
    with_kwargs = d["_forward_pre_hooks_with_kwargs"]
    for hook_id, hook in tuple(d["_forward_pre_hooks"].items()):
        if hook_id in with_kwargs:
            result = hook(module, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(
                        f"forward pre-hook must return None or a tuple of (new_args, new_kwargs), "
                        f"but got {result}."
                    )
                args, kwargs = result
        else:
            result = hook(module, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
    return module.forward(*args, **kwargs)


# what bridge_lean.block_forward does in place of these methods: a subclass of BlockBridge that
# overrides any of them keeps TransformerLens's forward
_BLOCK_METHODS = (
    "forward",
    "_maybe_wire_capture_hooks",
    "_wire_ln1_module",
    "_clear_attention_capture",
    "_maybe_inject_start_residual",
    "_check_stop_at_layer",
    "_hook_input_hidden_states",
)

_QUIET: dict[type, type] = {}  # TransformerLens component class -> its quiet subclass


def _quiet_class(cls: type) -> type:
    """``cls`` with the quiet call (and the norm's or block's quiet method where ``cls`` uses
    TransformerLens's own). Same name and module as ``cls``; a pickled or deep-copied component
    is rebuilt as ``cls`` itself."""
    quiet = _QUIET.get(cls)
    if quiet is None:
        namespace: dict[str, Any] = {
            "__call__": _component_call,
            "__reduce_ex__": _reduce_as_base,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "_hooked_quiet_of": cls,
        }
        if issubclass(cls, NormalizationBridge) and (
            cls.forward is NormalizationBridge.forward  # type: ignore[attr-defined]
            and cls._hf_autograd_forward_with_hooks is NormalizationBridge._hf_autograd_forward_with_hooks  # type: ignore[attr-defined]
        ):
            namespace["forward"] = _norm_forward
        if issubclass(cls, GatedMLPBridge) and cls.forward is GatedMLPBridge.forward:  # type: ignore[attr-defined]
            namespace["forward"] = _gated_mlp_forward
        if issubclass(cls, LinearBridge) and cls.forward is LinearBridge.forward:  # type: ignore[attr-defined]
            namespace["__call__"] = _linear_call
        if issubclass(cls, BlockBridge) and (
            cls._filter_kwargs_for_forward is BlockBridge._filter_kwargs_for_forward  # type: ignore[attr-defined]
        ):
            namespace["_filter_kwargs_for_forward"] = _block_filter_kwargs
        if issubclass(cls, BlockBridge) and all(
            getattr(cls, name) is getattr(BlockBridge, name) for name in _BLOCK_METHODS
        ):
            namespace["forward"] = block_forward
        if (
            issubclass(cls, PositionEmbeddingsAttentionBridge)
            and cls.forward is PositionEmbeddingsAttentionBridge.forward  # type: ignore[attr-defined]
        ):
            namespace["forward"] = attention_forward
        quiet = _QUIET[cls] = type(cls.__name__, (cls,), namespace)
    return quiet


def _component_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    d = self.__dict__
    original = d["_modules"].get("_original_component")
    if original is not None and "_hf_hook" in original.__dict__:  # accelerate may have offloaded it
        return type(self)._hooked_quiet_of.__call__(self, *args, **kwargs)
    if _busy(d):  # what GeneralizedComponent.__call__ calls inside align_module_device (a no-op here)
        if _only_pre_hooks(d):
            return _call_with_pre_hooks(self, args, kwargs)
        return torch.nn.Module.__call__(self, *args, **kwargs)
    return self.forward(*args, **kwargs)  # what nn.Module.__call__ would do: nothing is registered


def _linear_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    """A ``LinearBridge`` around a plain ``nn.Linear`` while nothing is registered on either:
    ``LinearBridge.forward`` with the linear's own ``forward`` (``F.linear`` of its weight and
    bias) called in place of ``nn.Module.__call__``, which would call just that. Anything else
    (other arguments, a subclass of ``nn.Linear``, a hook, an offload hook, a suppressed
    ``hook_in``) takes :func:`_component_call`."""
    d = self.__dict__
    modules = d["_modules"]
    original = modules.get("_original_component")
    if len(args) != 1 or kwargs or type(original) is not _LINEAR:
        return _component_call(self, *args, **kwargs)
    e = original.__dict__
    if (
        _busy_either(d, e)
        or "_hf_hook" in e
        or "forward" in e
        or self._suppress_next_hook_in
        or "weight" not in e["_parameters"]
        or "bias" not in e["_parameters"]
    ):
        return _component_call(self, *args, **kwargs)
    params = e["_parameters"]
    x = modules["hook_in"](args[0])
    output = modules["hook_out"](_F_LINEAR(x, params["weight"], params["bias"]))
    if d.get("_fired_hook_out") is not True:
        object.__setattr__(self, "_fired_hook_out", True)  # as LinearBridge.forward
    return output


_LINEAR = torch.nn.Linear
_F_LINEAR = torch.nn.functional.linear


def _plain_call(module: Any, *args: Any) -> Any:
    """``module(*args)`` for an ``nn.Module`` whose call is ``nn.Module``'s: ``forward`` straight
    away while nothing is registered on it (what ``nn.Module.__call__`` would do)."""
    if type(module).__call__ is _MODULE_CALL and not _busy(module.__dict__):
        return module.forward(*args)
    return module(*args)


_MODULE_CALL = torch.nn.Module.__call__


def _gated_mlp_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``GatedMLPBridge.forward`` on the path without processed weights (the wrapped transformers
    MLP called between ``hook_in`` and ``hook_out``), the MLP's ``forward`` called straight away
    while nothing is registered on it; processed weights, keywords or a missing MLP take
    TransformerLens's ``forward``."""
    d = self.__dict__
    original = d["_modules"].get("_original_component")
    if d.get("_use_processed_weights", True) is not False or original is None or kwargs or not args:
        return GatedMLPBridge.forward(self, *args, **kwargs)
    modules = d["_modules"]
    hidden_states = modules["hook_in"](args[0])
    output = _plain_call(original, hidden_states, *args[1:])
    return modules["hook_out"](output)


def _norm_forward(self: Any, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``NormalizationBridge.forward`` without the ``hook_scale`` / ``hook_normalized`` values
    while nobody can see them. On that path TransformerLens computes them under ``no_grad``, shows
    them to the two hook points and returns the transformers norm's own output (the values are
    discarded); anything else (a hook or a PyTorch hook on either point, a global module hook,
    the from-scratch norm, an ``Identity`` slot) runs TransformerLens's ``forward``."""
    modules = self.__dict__["_modules"]
    original = modules.get("_original_component")
    config = self.config
    if (
        original is None
        or config is None
        or isinstance(original, torch.nn.Identity)
        or not (self.use_native_layernorm_autograd or getattr(config, "layer_norm_folding", False))
    ):
        return NormalizationBridge.forward(self, hidden_states, **kwargs)
    hidden_states = modules["hook_in"](hidden_states)
    scale, normalized = modules.get("hook_scale"), modules.get("hook_normalized")
    if (
        scale is None
        or normalized is None
        or scale.fwd_hooks
        or scale.bwd_hooks
        or normalized.fwd_hooks
        or normalized.bwd_hooks
        or _busy_either(scale.__dict__, normalized.__dict__)
    ):
        result = self._hf_autograd_forward_with_hooks(hidden_states)
    else:
        result = _plain_call(original, hidden_states)
        if result.dtype != hidden_states.dtype:
            result = result.to(hidden_states.dtype)
    return modules["hook_out"](result)


# the wrapped layer's forward function -> (its parameter names as bound, as a set, takes **kwargs)
_SIGNATURES: weakref.WeakKeyDictionary[Any, tuple[list[str], frozenset[str], bool]] = (
    weakref.WeakKeyDictionary()
)


def _block_filter_kwargs(self: Any, kwargs: dict[str, Any], num_positional_args: int = 0) -> dict[str, Any]:
    """``BlockBridge._filter_kwargs_for_forward`` with the signature read once per function: the
    keywords the wrapped layer's ``forward`` accepts, less those already given positionally
    (everything when it takes ``**kwargs``). A ``forward`` that is not a bound method gets
    TransformerLens's own reading, on each call."""
    original = self._modules.get("_original_component")
    if original is None:
        return kwargs
    forward = original.forward
    if not inspect.ismethod(forward):
        return BlockBridge._filter_kwargs_for_forward(self, kwargs, num_positional_args)
    known = _SIGNATURES.get(forward.__func__)  # the same function bound to any layer: one signature
    if known is None:
        try:
            params = inspect.signature(forward).parameters
        except (ValueError, TypeError):
            return kwargs  # as TransformerLens: pass everything through
        names = list(params)
        var_keyword = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
        known = _SIGNATURES[forward.__func__] = (names, frozenset(names), var_keyword)
    names, valid, var_keyword = known
    if var_keyword:
        return kwargs
    positional = set(names[:num_positional_args])
    return {k: v for k, v in kwargs.items() if k in valid and k not in positional}


def _reduce_as_base(self: Any, protocol: Any) -> Any:
    """Pickled and copied as TransformerLens's own class (the state as ``object`` would give it)."""
    rv = object.__reduce_ex__(self, max(2, protocol))
    return (_new_component, (type(self)._hooked_quiet_of,), *rv[2:])


def _new_component(cls: Any) -> Any:
    return cls.__new__(cls)
