"""What :func:`hooked.lm.load` changes on TransformerLens 4.3's ``TransformerBridge``, so that it
gives right answers with the installed packages and takes the same batches as the other backends.

1. **The key-value cache.** transformers 5.24 hands the cache to each attention layer as
   ``cache=``; the bridge's attention (``AttentionBridge._update_kv_cache``) looks only for
   ``past_key_values`` / ``layer_past``, so it never stores the keys and values and every cached
   decoding step attends to itself alone: ``bridge.generate("The weather today is")`` gives
   ``"a-----------"``, and so does the transformers model's own ``generate`` once the bridge has
   booted (booting swaps the bridge's attention into it). :func:`fix_kv_cache` makes each attention
   component read ``cache=`` too; cached generation is then equal to uncached (tests).
2. **Token batches by keyword.** ``forward``, ``run_with_hooks`` and ``run_with_cache`` take
   ``input_ids=`` as well as TransformerLens's positional ``input``, so the dict batch of
   :func:`hooked.lm.tokenize` (``{"input_ids", "attention_mask"}``, passed as keywords by
   :func:`hooked.protocol.split_batch`) runs on the bridge as on ``wrap`` and ``hf``.
3. **A padded batch without its mask warns** (:func:`hooked.lm.text.tokens.warn_if_padded_without_mask`).
4. **A hook's replacement must match the activation** (shape, dtype, device), or a
   :class:`hooked.HookReturnError` names the hook, as on every :class:`hooked.HookedModule`
   (TransformerLens checks nothing: a float32 steering vector added to a bfloat16 model failed deep
   inside transformers with ``expected m1 and m2 to have the same dtype``). Replacements are never
   cast: cast in the hook (``return act + vector.to(act.dtype)``). The handles still name the
   user's own function (``LensHandle.user_hook``, what ``list_hooks`` shows), not the check.

The changes are made on the instance (its class is switched to a subclass that adds 2-4; each
attention component gets the cache fix), so other bridges in the same process are untouched.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from torch import Tensor

from hooked.errors import HookReturnError
from hooked.lm.text.tokens import warn_if_padded_without_mask


def fix_bridge(model: Any) -> Any:
    """Apply every fix above to a booted ``TransformerBridge`` (idempotent); returns it."""
    fix_kv_cache(model)
    base = type(model)
    if not issubclass(base, _BridgeInputs):
        object.__setattr__(model, "__class__", _subclass(base))
    return model


def fix_kv_cache(model: Any) -> int:
    """Make every attention component of a bridge store its keys and values in a cache passed as
    ``cache=`` (transformers >= 5.24); returns how many components were fixed."""
    fixed = 0
    for module in model.modules():
        update = getattr(module, "_update_kv_cache", None)
        if update is None or getattr(update, "_hooked_reads_cache_kwarg", False):
            continue
        object.__setattr__(module, "_update_kv_cache", _reading_cache_kwarg(update))
        fixed += 1
    return fixed


def _reading_cache_kwarg(update: Callable) -> Callable:
    @functools.wraps(update)
    def fixed(k: Tensor, v: Tensor, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is None and kwargs.get("layer_past") is None:
            cache = kwargs.get("cache")
            if cache is not None:
                kwargs["past_key_values"] = cache
        return update(k, v, **kwargs)

    fixed._hooked_reads_cache_kwarg = True  # type: ignore[attr-defined]
    return fixed


@functools.cache
def _subclass(base: type) -> type:
    return type(base.__name__, (_BridgeInputs, base), {"__module__": base.__module__})


class _BridgeInputs:
    """Mixed in before ``TransformerBridge``: keyword token batches, the padding warning, checked
    hook replacements."""

    def forward(self, input: Any = None, *args: Any, input_ids: Any = None, **kwargs: Any) -> Any:
        input = _one_input(input, input_ids)
        warn_if_padded_without_mask(self, input, kwargs.get("attention_mask"), stacklevel=3)
        return super().forward(input, *args, **kwargs)  # type: ignore[misc]

    def run_with_hooks(
        self,
        input: Any = None,
        fwd_hooks: Sequence = (),
        bwd_hooks: Sequence = (),
        *args: Any,
        input_ids: Any = None,
        **kwargs: Any,
    ) -> Any:
        return super().run_with_hooks(  # type: ignore[misc]
            _one_input(input, input_ids),
            _checked_specs(fwd_hooks, "fwd"),
            _checked_specs(bwd_hooks, "bwd"),
            *args,
            **kwargs,
        )

    def run_with_cache(self, input: Any = None, *args: Any, input_ids: Any = None, **kwargs: Any) -> Any:
        return super().run_with_cache(_one_input(input, input_ids), *args, **kwargs)  # type: ignore[misc]

    @contextlib.contextmanager
    def hooks(
        self, fwd_hooks: Sequence = (), bwd_hooks: Sequence = (), *args: Any, **kwargs: Any
    ) -> Iterator[Any]:
        with super().hooks(  # type: ignore[misc]
            _checked_specs(fwd_hooks, "fwd"), _checked_specs(bwd_hooks, "bwd"), *args, **kwargs
        ) as model:
            _show_user_hooks(self.hook_dict.values())  # type: ignore[attr-defined]
            yield model

    def add_hook(self, name: Any, hook_fn: Any, dir: str = "fwd", *args: Any, **kwargs: Any) -> Any:
        out = super().add_hook(name, _checked(hook_fn, name, dir), dir, *args, **kwargs)  # type: ignore[misc]
        hook_dict = self.hook_dict  # type: ignore[attr-defined]
        _show_user_hooks(
            [hook_dict[name]] if isinstance(name, str) and name in hook_dict else hook_dict.values()
        )
        return out


def _show_user_hooks(hook_points: Iterable[Any]) -> None:
    """Point each handle's ``user_hook`` back at the user's function where it names a check."""
    for hp in hook_points:
        for handle in (*getattr(hp, "fwd_hooks", ()), *getattr(hp, "bwd_hooks", ())):
            user = getattr(handle.user_hook, "_hooked_user_fn", None)
            if user is not None:
                handle.user_hook = user


def _one_input(input: Any, input_ids: Any) -> Any:
    if input_ids is None:
        if input is None:
            raise TypeError("the bridge needs its input: token ids (input_ids=...) or text")
        return input
    if input is not None:
        raise TypeError("pass the token ids once: as input or as input_ids, not both")
    return input_ids


def _checked_specs(specs: Sequence, dir: str) -> list:
    out = []
    for spec in specs or ():
        try:
            name, fn = spec
        except (TypeError, ValueError):
            out.append(spec)  # TransformerLens's own error for a malformed pair
            continue
        out.append((name, _checked(fn, name, dir)))
    return out


def _checked(fn: Any, name: Any, dir: str) -> Any:
    """``fn`` whose returned replacement must have the activation's shape, dtype and device."""
    if not callable(fn) or getattr(fn, "_hooked_checked", False):
        return fn
    what = "activation" if dir == "fwd" else "gradient"

    def checked(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        out = fn(tensor, *args, **kwargs)
        new = out[0] if dir == "bwd" and isinstance(out, tuple) and len(out) == 1 else out
        if new is None or not isinstance(tensor, Tensor):
            return out
        if not isinstance(new, Tensor) or (new.shape, new.dtype, new.device) != (
            tensor.shape,
            tensor.dtype,
            tensor.device,
        ):
            hook = kwargs.get("hook", args[0] if args else None)
            label = name if isinstance(name, str) else getattr(hook, "name", None)
            got = (
                f"a tensor of shape {tuple(new.shape)}, {new.dtype}, on {new.device}"
                if isinstance(new, Tensor)
                else f"a {type(new).__name__}"
            )
            raise HookReturnError(
                f"hook function {_describe(fn)} at hook point {label!r} returned {got}, but the {what} "
                f"it replaces has shape {tuple(tensor.shape)}, {tensor.dtype}, on {tensor.device}; "
                f"a hook must return None or a tensor like its input (e.g. cast with .to(act.dtype))"
            )
        return out

    checked._hooked_checked = True  # type: ignore[attr-defined]
    checked._hooked_user_fn = fn  # type: ignore[attr-defined]
    checked.__qualname__ = _describe(fn)
    return checked


def _describe(fn: Any) -> str:
    inner = getattr(fn, "func", None) or fn
    return getattr(inner, "__qualname__", None) or type(inner).__name__
