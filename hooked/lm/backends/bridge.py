"""TransformerLens's ``TransformerBridge`` with hooked's hook-facing behaviour (the ``bridge`` backend).

:func:`hooked_bridge` turns a booted bridge into a :class:`HookedBridge` (same object, same
weights; only the hook methods change). Everything else is TransformerLens's.

* **Names are the names asked for.** A hook function attached as ``blocks.0.hook_resid_pre``
  sees ``hook.name == "blocks.0.hook_resid_pre"`` (TransformerLens shows the canonical
  ``blocks.0.hook_in``), so the everyday ``cache[hook.name] = act`` works; every other attribute
  of ``hook`` is the hook point's own. ``run_with_cache`` keys the cache by the names asked for
  (TransformerLens adds the canonical spelling of an alias too); with ``names_filter=None`` every
  hook point once under its canonical name. Either way ``cache[alias]`` and ``cache[canonical]``
  both find it, and TransformerLens's shorthand ``cache["resid_pre", 3]`` works.
* **Gated hooks are switched on when asked for.** ``blocks.L.attn.hook_result`` (per-head
  outputs), ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input``, ``hook_attn_in`` and
  ``hook_mlp_in`` fire only with a config flag on. A hook or a cache that names one (or a filter
  that matches one) switches its flag on for that call and back off afterwards (a hook attached
  with ``add_hook`` or ``hooks(reset_hooks_end=False)`` keeps it on until ``reset_hooks()``).
  TransformerLens would skip such a name with a warning, or raise. ``names_filter=None`` does not
  switch flags on (it caches what runs anyway). ``hook_result`` costs a ``[batch, pos, head,
  d_model]`` tensor per layer while on.
* **Gradients of any metric.** ``run_with_cache(..., incl_bwd=True, metric=fn)`` runs backward on
  ``fn(output)`` (a scalar), with the gradient hooks attached, and caches ``<name>_grad``.
  TransformerLens requires the forward itself to return a scalar (``return_type="loss"``).
* Unknown hook names raise :class:`hooked.UnknownHookError` with the closest names.

``run_with_cache`` returns a :class:`hooked.ActivationCache` (the same class as every other
backend), not TransformerLens's; its helpers (``accumulated_resid``, ``decompose_resid``,
``logit_attrs``, ``stack_head_results``, ``apply_ln_to_stack``) are :mod:`hooked.lm.toolkit.resid`'s
functions, which run on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from hooked.cache import ActivationCache, pos_axis, pos_index, slice_positions
from hooked.lm.backends.seen_as import seen_as as _seen_as
from hooked.names import NamesSpec, resolve_names

HookSpec = tuple[str | Callable[[str], bool], Callable]


class HookedBridge(TransformerBridge):
    """A ``TransformerBridge`` whose hooks see the names asked for, with gated hooks switched on
    when asked for and ``run_with_cache(metric=)``; see :mod:`hooked.lm.backends.bridge`."""

    # ------------------------------------------------------------------ names
    def _resolve(self, spec: NamesSpec, hook_dict: dict[str, Any], dedupe: bool) -> list[str]:
        """The names ``spec`` selects; a filter's matches of one hook point count once if ``dedupe``."""
        if callable(spec) and not isinstance(spec, str):
            names, seen = [], set()
            for name, hp in hook_dict.items():
                if spec(name) and not (dedupe and id(hp) in seen):
                    seen.add(id(hp))
                    names.append(name)
            return names
        return resolve_names(hook_dict, spec, type(self).__name__)

    def _named(self, specs: Sequence[HookSpec], hook_dict: dict[str, Any]) -> list[tuple[str, Callable]]:
        out = []
        for spec in specs:
            try:
                names, fn = spec
            except (TypeError, ValueError):
                raise TypeError(f"each hook must be a (name_or_filter, fn) pair, got {spec!r}") from None
            if not callable(fn):
                raise TypeError(f"hook for {names!r} must be callable as fn(activation, hook), got {fn!r}")
            out.extend((n, _seen_as(fn, n)) for n in self._resolve(names, hook_dict, dedupe=True))
        return out

    # ------------------------------------------------------------------ gated hooks
    def _gates(self, names: Sequence[str], hook_dict: dict[str, Any]) -> list[str]:
        """The flags (``use_attn_result``, ...) that are off and that ``names`` need on."""
        needed = []
        for name in names:
            reason = self._gated_hook_reason(hook_dict[name].name or name)
            if reason is not None and not getattr(self.cfg, reason, False) and reason not in needed:
                needed.append(reason)
        return needed

    def _set_gate(self, reason: str, on: bool) -> None:
        try:
            getattr(self, f"set_{reason}")(on)
        except (NotImplementedError, ValueError) as e:
            raise ValueError(f"cannot switch on {reason} for the hooks asked for: {e}") from e

    @contextmanager
    def _gates_open(
        self, names: Sequence[str], hook_dict: dict[str, Any], keep: bool = False
    ) -> Iterator[None]:
        opened = []
        try:
            for reason in self._gates(names, hook_dict):
                self._set_gate(reason, True)
                opened.append(reason)
            yield
        finally:
            if keep:
                self.__dict__.setdefault("_hooked_kept_gates", set()).update(opened)
            else:
                for reason in reversed(opened):
                    self._set_gate(reason, False)

    # ------------------------------------------------------------------ TransformerLens's hook API
    def add_hook(self, name: Any, hook_fn: Any, dir: str = "fwd", is_permanent: bool = False) -> None:
        """``TransformerBridge.add_hook``, with the name seen as attached and gates switched on."""
        hook_dict = self.hook_dict
        named = self._named([(name, hook_fn)], hook_dict)
        with self._gates_open([n for n, _ in named], hook_dict, keep=True):
            for n, fn in named:
                super().add_hook(n, fn, dir=dir, is_permanent=is_permanent)

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both", **kwargs: Any) -> None:
        """``TransformerBridge.reset_hooks``; flags switched on by ``add_hook`` go off with the last hook."""
        super().reset_hooks(clear_contexts=clear_contexts, direction=direction, **kwargs)
        kept = self.__dict__.get("_hooked_kept_gates", set())
        for reason in list(kept):
            busy = any(
                hp.has_hooks()
                for name, hp in self._hook_registry.items()
                if self._gated_hook_reason(name) == reason
            )
            if not busy:
                self._set_gate(reason, False)
                kept.discard(reason)

    @contextmanager
    def hooks(
        self,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[HookedBridge]:
        """``TransformerBridge.hooks``, with the names seen as attached and gates switched on."""
        hook_dict = self.hook_dict
        fwd, bwd = self._named(fwd_hooks, hook_dict), self._named(bwd_hooks, hook_dict)
        with self._gates_open([n for n, _ in fwd + bwd], hook_dict, keep=not reset_hooks_end):
            with super().hooks(fwd, bwd, reset_hooks_end, clear_contexts):
                yield self

    def run_with_hooks(
        self,
        input: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **kwargs: Any,
    ) -> Any:
        """``TransformerBridge.run_with_hooks``, with the names seen as attached and gates switched on."""
        hook_dict = self.hook_dict
        fwd, bwd = self._named(fwd_hooks, hook_dict), self._named(bwd_hooks, hook_dict)
        with self._gates_open([n for n, _ in fwd + bwd], hook_dict, keep=not reset_hooks_end):
            return super().run_with_hooks(
                input,
                fwd_hooks=fwd,
                bwd_hooks=bwd,
                reset_hooks_end=reset_hooks_end,
                clear_contexts=clear_contexts,
                **kwargs,
            )

    def run_with_cache(
        self,
        *args: Any,
        names_filter: NamesSpec = None,
        device: torch.device | str | None = None,
        incl_bwd: bool = False,
        metric: Callable[[Any], Tensor] | None = None,
        remove_batch_dim: bool = False,
        clone: bool = False,
        pos_slice: Any = None,
        return_cache_object: bool = True,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Run the forward and record activations; returns ``(output, cache)``.

        Args:
            names_filter: a hook name (alias or canonical), a list, a filter ``fn(name) -> bool``,
                or ``None`` (every hook point once, canonical names; gated-off ones excluded).
            device: move recorded activations there as they are recorded.
            incl_bwd: also record gradients as ``<name>_grad``: backward on ``metric(output)``,
                or on the output itself when no metric is given (then pass ``return_type="loss"``).
            metric: with ``incl_bwd``, a function of the output returning the scalar to differentiate.
            remove_batch_dim: drop a leading batch axis of size 1.
            clone: copy activations instead of detaching views.
            pos_slice: keep these positions of every activation (TransformerLens's rule: an int
                keeps a size-1 axis; the query axis of patterns, dim 1 of the others).
            return_cache_object: False gives a plain dict.
            reset_hooks_end, clear_contexts: as for ``hooks()`` (the recording hooks stay attached
                with ``reset_hooks_end=False``, as in TransformerLens).
            **kwargs: passed to the forward (``attention_mask``, ``return_type``, ``stop_at_layer``, ...).
        """
        if incl_bwd and not torch.is_grad_enabled():
            raise ValueError("run_with_cache(incl_bwd=True) needs gradients enabled (not under no_grad)")
        if metric is not None and not (incl_bwd and callable(metric)):
            raise ValueError("run_with_cache(metric=fn) needs incl_bwd=True and a function of the output")
        if incl_bwd and kwargs.get("stop_at_layer") is not None:
            raise ValueError("run_with_cache(incl_bwd=True) cannot be combined with stop_at_layer")
        hook_dict = self.hook_dict
        if names_filter is None:
            names = [n for n, hp in hook_dict.items() if hp.name == n and self._gated_hook_reason(n) is None]
        else:
            names = list(dict.fromkeys(self._resolve(names_filter, hook_dict, dedupe=False)))
        start = kwargs.get("start_at_layer")
        if start is not None:  # the blocks below start run on a discarded input: not cached
            start = start % len(self.blocks)
            names = [n for n in names if not _before_layer(hook_dict[n].name or n, start)]
        for n in names:
            self._check_hook_fireable(n, hook_dict[n].name or n)
        if "output_attentions" not in kwargs and self.adapter.supports_hf_output_attentions:
            kwargs["output_attentions"] = True  # as TransformerLens's run_with_cache: patterns fire

        calls: dict[str, list[Tensor]] = {}

        def recorder(key: str) -> Callable:
            def record(act: Any, hook: Any) -> None:
                if isinstance(act, tuple):
                    act = act[0] if act and isinstance(act[0], Tensor) else None
                if not isinstance(act, Tensor):
                    return
                t = act.detach()
                t = t.clone() if clone else t
                calls.setdefault(key, []).append(t if device is None else t.to(device))

            return record

        fwd = [(n, recorder(n)) for n in names]
        bwd = [(n, recorder(n + "_grad")) for n in names] if incl_bwd else []
        with self._gates_open(names, hook_dict):
            with TransformerBridge.hooks(self, fwd, bwd, reset_hooks_end, clear_contexts):
                out = self(*args, **kwargs)
                if hasattr(out, "logits"):
                    out = out.logits
                if incl_bwd:
                    target = out if metric is None else metric(out)
                    if not isinstance(target, Tensor) or target.numel() != 1:
                        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
                        raise ValueError(
                            "run_with_cache(incl_bwd=True) calls backward() on "
                            f"{'metric(output)' if metric else 'the output'}, which must be a scalar "
                            f"tensor (pass metric=fn, or return_type='loss'); got {shape}"
                        )
                    if not target.requires_grad:
                        raise ValueError("run_with_cache(incl_bwd=True): the output does not require grad")
                    target.backward()

        aliases = {}
        for name, hp in hook_dict.items():
            if hp.name and hp.name != name:
                aliases[name] = hp.name
                aliases.setdefault(hp.name, name)
        cache = ActivationCache.from_calls(calls, {}, set()).with_aliases(aliases)
        if pos_slice is not None:
            cache = _slice_positions(cache, pos_slice, hook_dict)
        if remove_batch_dim:
            cache = cache.remove_batch_dim()
        return out, (cache if return_cache_object else dict(cache.items()))


def _before_layer(name: str, start: int) -> bool:
    if name in ("hook_embed", "hook_pos_embed", "hook_tokens") or name.startswith(("embed.", "pos_embed.")):
        return True
    parts = name.split(".")
    return parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < start


def _slice_positions(cache: ActivationCache, pos_slice: Any, hook_dict: dict[str, Any]) -> ActivationCache:
    """The cache cut at ``pos_slice`` (:func:`hooked.cache.pos_index`'s rule, as every backend)."""
    index = pos_index(pos_slice)
    if index is None:
        return cache
    data = {}
    for name in cache:
        t = cache[name]
        base = name.removesuffix("_grad")
        dim = pos_axis(base, getattr(hook_dict.get(base), "pos_dim", None))
        data[name] = slice_positions(t, index, dim, name) if t.dim() >= 2 else t
    return ActivationCache(data, aliases=cache._aliases)


def hooked_bridge(bridge: TransformerBridge) -> HookedBridge:
    """Give a booted ``TransformerBridge`` hooked's hook methods (in place; returns it).

    A bridge that :func:`hooked.lm.backends.bridge_fixes.fix_bridge` has fixed keeps its fixes (its class
    becomes the fixed subclass of :class:`HookedBridge`); ``lm.load(backend="bridge")`` applies both.
    """
    from hooked.lm.backends.bridge_fixes import _subclass

    if not isinstance(bridge, TransformerBridge):
        raise TypeError(
            f"hooked_bridge needs a TransformerLens TransformerBridge, got {type(bridge).__name__}"
        )
    if isinstance(bridge, HookedBridge):
        return bridge
    cls = type(bridge)
    if cls is TransformerBridge:
        bridge.__class__ = HookedBridge
    elif cls is _subclass(TransformerBridge):
        bridge.__class__ = _subclass(HookedBridge)
    else:
        raise TypeError(
            f"hooked_bridge: {cls.__name__} is a subclass of TransformerBridge "
            f"({', '.join(c.__name__ for c in cls.__mro__[1:4])}, ...); only TransformerBridge itself "
            "can be given hooked's hook methods"
        )
    return bridge
