"""The ``bridge`` backend: TransformerLens 4's ``TransformerBridge`` as one subclass, applied once.

:func:`hooked_bridge` turns a booted bridge into a :class:`HookedBridge`, in place (same object,
same weights: its class is switched once, and each attention component gets the key-value cache
fix); ``lm.load(backend="bridge")`` does it. Other bridges in the same process are untouched.
Everything not listed here is TransformerLens's.

This module is written against TransformerLens 4.3 (``transformer-lens>=4.3,<4.4`` in
``pyproject.toml``: the versions the tests run on), and :func:`hooked_bridge` refuses another
version with a message naming these changes (:func:`check_transformer_lens`). Some changes fix
TransformerLens behaviour and can go when upstream fixes it; each says what to check:

1. **The key-value cache** (:func:`fix_kv_cache`). transformers 5.24 hands the cache to each
   attention layer as ``cache=``; TransformerLens 4.3's ``AttentionBridge._update_kv_cache``
   (``transformer_lens/model_bridge/generalized_components/attention.py``) reads only
   ``past_key_values`` / ``layer_past``, so it never stores keys and values and every cached
   decoding step attends to itself alone: ``bridge.generate("The weather today is")`` gives
   ``"a-----------"``, and so does the transformers model's own ``generate`` once the bridge has
   booted (booting swaps the bridge's attention into it). Delete when ``_update_kv_cache`` reads
   ``cache`` (test: ``tests/lm/test_generate.py``, cached generation equals uncached).
2. **Names are the names asked for.** A hook attached as ``blocks.0.hook_resid_pre`` sees
   ``hook.name == "blocks.0.hook_resid_pre"`` (TransformerLens 4.3 shows the canonical
   ``blocks.0.hook_in``, so the everyday ``cache[hook.name] = act`` files it under a name nobody
   asked for); ``run_with_cache`` keys the cache by the names asked for (TransformerLens adds the
   canonical spelling of an alias too); with ``names_filter=None`` every hook point once under its
   canonical name. Either way ``cache[alias]`` and ``cache[canonical]`` both find it, and
   ``cache["resid_pre", 3]`` works. Delete when TransformerLens's hooks see the alias they were
   attached by (``tests/lm/test_hooked_bridge.py``).
3. **Gated hooks are switched on when asked for.** ``blocks.L.attn.hook_result`` (per-head
   outputs), ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input``, ``hook_attn_in`` and
   ``hook_mlp_in`` fire only with a config flag on; TransformerLens 4.3 skips such a name with a
   warning, or raises. A hook or a cache that names one (or a filter that matches one) switches its
   flag on for that call and back off afterwards (a hook attached with ``add_hook`` or
   ``hooks(reset_hooks_end=False)`` keeps it on until ``reset_hooks()``). ``names_filter=None``
   does not switch flags on (it caches what runs anyway). Flags that exclude each other
   (``use_attn_in``, ``use_split_qkv_input``): for names given as strings that raises; a filter's
   matches (``lambda n: n.startswith("blocks.0.")``) get every flag that can be switched on, and
   the rest are left off with a warning naming them, as TransformerLens skips them.
   ``hook_result`` costs a ``[batch, pos, head, d_model]`` tensor per layer while on. This reads
   TransformerLens's private ``_gated_hook_reason``, ``_check_hook_fireable`` and ``_hook_registry``
   (``transformer_lens/model_bridge/bridge_core.py``), hence the pinned range.
4. **A hook's replacement must match the activation** (shape, dtype, device), or a
   :class:`hooked.HookReturnError` names the hook, as on every :class:`hooked.HookedModule`
   (TransformerLens 4.3 checks nothing: a float32 steering vector added to a bfloat16 model failed
   deep inside transformers with ``expected m1 and m2 to have the same dtype``). Replacements are
   never cast: cast in the hook (``return act + vector.to(act.dtype)``). The handles still name the
   user's own function (``LensHandle.user_hook``, what ``list_hooks`` shows), not the check.

hooked's own additions, which stay whatever TransformerLens does:

5. **Token batches by keyword.** ``forward``, ``run_with_hooks`` and ``run_with_cache`` take
   ``input_ids=`` as well as TransformerLens's positional ``input``, so the dict batch of
   :func:`hooked.lm.tokenize` (``{"input_ids", "attention_mask"}``, passed as keywords by
   :func:`hooked.protocol.split_batch`) runs on the bridge as on ``wrap`` and ``hf``; a padded
   batch without its mask warns (:func:`hooked.lm.text.tokens.warn_if_padded_without_mask`).
6. **Gradients of any metric.** ``run_with_cache(..., incl_bwd=True, metric=fn)`` runs backward on
   ``fn(output)`` (a scalar), with the gradient hooks attached, and caches ``<name>_grad``
   (TransformerLens requires the forward itself to return a scalar, ``return_type="loss"``).
7. **What changes nothing is left out of each forward** (:mod:`hooked.lm.backends.bridge_hot_path`).
   TransformerLens's components call about a thousand ``HookPoint`` modules per forward of
   SmolLM2 and a few hundred components, each through ``nn.Module.__call__`` (components also
   through accelerate's ``align_module_device``); its norms compute the ``hook_scale`` /
   ``hook_normalized`` values nobody reads, and its blocks read ``inspect.signature`` on every
   call. :func:`hooked_bridge` gives each hook point and component a subclass of its own class
   that skips these while nothing is registered (and is TransformerLens's code otherwise), and
   runs lean copies of TransformerLens's block and rotary-attention ``forward`` (same tensor
   operations, same hook points, same order; :mod:`hooked.lm.backends.bridge_lean`): results are
   bit-identical, ``tests/lm/test_bridge_hot_path.py``.
8. Unknown hook names raise :class:`hooked.UnknownHookError` with the closest names, and
   ``run_with_cache`` returns a :class:`hooked.ActivationCache` (the class every backend returns);
   its helpers (``accumulated_resid``, ``decompose_resid``, ...) are :mod:`hooked.lm.toolkit.resid`'s
   functions, which run on both backends.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from hooked.cache import ActivationCache, OwnForward, pos_axis, pos_index, slice_positions
from hooked.errors import HookedError, HookReturnError
from hooked.lm.backends.backend import cache_methods
from hooked.lm.backends.bridge_hot_path import quiet_hook_points
from hooked.lm.backends.seen_as import seen_as as _seen_as
from hooked.lm.text.tokens import warn_if_padded_without_mask
from hooked.names import NamesSpec, resolve_names

HookSpec = tuple[str | Callable[[str], bool], Callable]

# the TransformerLens versions this module is written and tested against: [4.3, 4.4)
TRANSFORMER_LENS_RANGE = ((4, 3), (4, 4))
UNPINNED = "HOOKED_UNPINNED_TRANSFORMER_LENS"  # set to 1 to try another version (a warning instead)


class TransformerLensVersionError(HookedError, ImportError):
    """The installed TransformerLens is not one this backend is written against."""


def check_transformer_lens(installed: str | None = None) -> str:
    """The installed TransformerLens version, if it is in :data:`TRANSFORMER_LENS_RANGE`; else a
    :class:`TransformerLensVersionError` naming what this module changes (a warning instead when
    ``$HOOKED_UNPINNED_TRANSFORMER_LENS`` is set, for trying a new release)."""
    if installed is None:
        try:
            installed = version("transformer-lens")
        except PackageNotFoundError:
            installed = str(getattr(__import__("transformer_lens"), "__version__", "0"))
    assert installed is not None
    (lo, hi) = TRANSFORMER_LENS_RANGE
    try:
        major_minor = tuple(int(p) for p in installed.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    if lo <= major_minor < hi:
        return installed
    message = (
        f"hooked's bridge backend is written against TransformerLens {lo[0]}.{lo[1]} "
        f"(transformer-lens>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}), and transformer-lens {installed} is "
        "installed. On that version it fixes the key-value cache passed as cache= (cached generation "
        "attended to nothing before), shows hooks the names they were attached by, switches gated "
        "hooks (hook_result, ...) on when asked for through TransformerLens's private "
        "_gated_hook_reason / _check_hook_fireable / _hook_registry, checks hook replacements, and "
        "takes input_ids= batches (hooked.lm.backends.bridge lists each). Install "
        f"'transformer-lens>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}', load with backend='wrap' (no "
        f"TransformerLens needed), or set {UNPINNED}=1 to try this version anyway"
    )
    if os.environ.get(UNPINNED, "").lower() in ("1", "true", "yes", "on"):
        warnings.warn(message, stacklevel=3)
        return installed
    raise TransformerLensVersionError(message)


def hooked_bridge(bridge: TransformerBridge) -> HookedBridge:
    """Make a booted ``TransformerBridge`` a :class:`HookedBridge`, in place (idempotent); returns it.

    Its class is switched once (only ``TransformerBridge`` itself can be switched: a subclass of
    it has methods of its own that this one would hide) and each attention component reads the
    key-value cache passed as ``cache=`` (:func:`fix_kv_cache`). Raises
    :class:`TransformerLensVersionError` outside the pinned TransformerLens range.
    """
    if not isinstance(bridge, TransformerBridge):
        raise TypeError(
            f"hooked_bridge needs a TransformerLens TransformerBridge, got {type(bridge).__name__}"
        )
    if type(bridge) is not HookedBridge:
        cls = type(bridge)
        if cls is not TransformerBridge:
            raise TypeError(
                f"hooked_bridge: {cls.__name__} is a subclass of TransformerBridge "
                f"({', '.join(c.__name__ for c in cls.__mro__[1:4])}, ...); only TransformerBridge itself "
                "can be given hooked's hook methods"
            )
        check_transformer_lens()
        bridge.__class__ = HookedBridge
    fix_kv_cache(bridge)
    quiet_hook_points(bridge)
    assert isinstance(bridge, HookedBridge)  # the class swapped above
    return bridge


class HookedBridge(TransformerBridge):
    """A ``TransformerBridge`` with hooked's hook-facing behaviour and the fixes the pinned
    TransformerLens needs (see :mod:`hooked.lm.backends.bridge`); made by :func:`hooked_bridge`."""

    # ------------------------------------------------------------------ token batches (5)
    def forward(self, input: Any = None, *args: Any, input_ids: Any = None, **kwargs: Any) -> Any:
        if isinstance(input, Mapping) and "input_ids" in input:  # a tokenized batch, as hooked.wrap takes it
            given = [k for k in input if k in kwargs or k == "input_ids" and input_ids is not None]
            if given:
                raise TypeError(f"the batch and the keywords both give {given}; pass each once")
            kwargs = {**{k: v for k, v in input.items() if k != "input_ids"}, **kwargs}
            input = input["input_ids"]
        input = _one_input(input, input_ids)
        warn_if_padded_without_mask(self, input, kwargs.get("attention_mask"), stacklevel=3)
        return super().forward(input, *args, **kwargs)

    # ------------------------------------------------------------------ names (2)
    def _resolve(self, spec: NamesSpec, hook_dict: dict[str, Any], dedupe: bool) -> list[str]:
        """The names ``spec`` selects; a filter's matches of one hook point count once if ``dedupe``."""
        if isinstance(spec, str) and spec in hook_dict:
            return [spec]  # one exact name: no list of all the bridge's names
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

    # ------------------------------------------------------------------ gated hooks (3)
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
        self, names: Sequence[str], hook_dict: dict[str, Any], keep: bool = False, asked: Any = ()
    ) -> Iterator[set[str]]:
        """Switch on the flags ``names`` need; yields the names left gated off. A flag that cannot
        be switched on (``use_attn_in`` and ``use_split_qkv_input`` exclude each other) raises if a
        name in ``asked`` (the names given as strings) needs it; names only a filter matched are
        left off with a warning, as TransformerLens skips a filter's gated-off matches."""
        opened, skipped = [], set()
        try:
            for reason in self._gates(names, hook_dict):
                try:
                    self._set_gate(reason, True)
                except ValueError as e:
                    needing = [n for n in names if self._gated_hook_reason(hook_dict[n].name or n) == reason]
                    if any(n in asked for n in needing):
                        raise
                    warnings.warn(
                        f"a filter matched {len(needing)} hook(s) gated by {reason}, which cannot be "
                        f"switched on beside the others it matched ({e}); not hooked: {needing}",
                        stacklevel=4,
                    )
                    skipped.update(needing)
                    continue
                opened.append(reason)
            yield skipped
        finally:
            if keep:
                self.__dict__.setdefault("_hooked_kept_gates", set()).update(opened)
            else:
                for reason in reversed(opened):
                    self._set_gate(reason, False)

    # ------------------------------------------------------------------ TransformerLens's hook API
    def add_hook(
        self, name: Any, hook_fn: Any, dir: Literal["fwd", "bwd"] = "fwd", is_permanent: bool = False
    ) -> None:
        """``TransformerBridge.add_hook``: the replacement checked, the name seen as attached and
        gates switched on."""
        hook_dict = self.hook_dict
        named = self._named([(name, _checked(hook_fn, name, dir))], hook_dict)
        with self._gates_open([n for n, _ in named], hook_dict, True, _asked([(name, 0)])) as off:
            for n, fn in named:
                if n not in off:
                    super().add_hook(n, fn, dir=dir, is_permanent=is_permanent)
        _show_user_hooks(
            [hook_dict[name]] if isinstance(name, str) and name in hook_dict else hook_dict.values()
        )

    def reset_hooks(
        self, clear_contexts: bool = True, direction: Literal["fwd", "bwd", "both"] = "both", **kwargs: Any
    ) -> None:
        """``TransformerBridge.reset_hooks``; flags switched on by ``add_hook`` go off with the last hook
        (reads TransformerLens's private ``_hook_registry`` and ``_gated_hook_reason``: fix 3)."""
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
        """``TransformerBridge.hooks``: replacements checked, names seen as attached, gates
        switched on."""
        hook_dict = self.hook_dict
        fwd = self._named(_checked_specs(fwd_hooks, "fwd"), hook_dict)
        bwd = self._named(_checked_specs(bwd_hooks, "bwd"), hook_dict)
        asked = _asked([*fwd_hooks, *bwd_hooks])
        with self._gates_open([n for n, _ in fwd + bwd], hook_dict, not reset_hooks_end, asked) as off:
            fwd, bwd = [h for h in fwd if h[0] not in off], [h for h in bwd if h[0] not in off]
            with super().hooks(fwd, bwd, reset_hooks_end, clear_contexts):
                _show_user_hooks({id(hp): hp for hp in (hook_dict[n] for n, _ in fwd + bwd)}.values())
                yield self

    def run_with_hooks(
        self,
        input: Any = None,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        *,
        input_ids: Any = None,
        **kwargs: Any,
    ) -> Any:
        """``TransformerBridge.run_with_hooks``: token ids as ``input`` or ``input_ids``,
        replacements checked, names seen as attached, gates switched on."""
        input = _one_input(input, input_ids)
        hook_dict = self.hook_dict
        fwd = self._named(_checked_specs(fwd_hooks, "fwd"), hook_dict)
        bwd = self._named(_checked_specs(bwd_hooks, "bwd"), hook_dict)
        asked = _asked([*fwd_hooks, *bwd_hooks])
        with self._gates_open([n for n, _ in fwd + bwd], hook_dict, not reset_hooks_end, asked) as off:
            fwd, bwd = [h for h in fwd if h[0] not in off], [h for h in bwd if h[0] not in off]
            return super().run_with_hooks(
                input,
                fwd_hooks=[*fwd],  # new lists of the type TransformerLens declares (lists are invariant)
                bwd_hooks=[*bwd],
                reset_hooks_end=reset_hooks_end,
                clear_contexts=clear_contexts,
                **kwargs,
            )

    def run_with_cache(
        self,
        input: Any = None,
        *args: Any,
        input_ids: Any = None,
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
            input, input_ids: the token ids (or text), positionally or by keyword.
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
        input = _one_input(input, input_ids)
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
        own = OwnForward(self)  # not a forward that a hook starts inside this one, nor another thread's

        def recorder(key: str, backward: bool = False) -> Callable:
            def record(act: Any, hook: Any) -> None:
                if not backward and not own.mine():
                    return
                if isinstance(act, tuple):
                    act = act[0] if act and isinstance(act[0], Tensor) else None
                if not isinstance(act, Tensor):
                    return
                t = act.detach()
                t = t.clone() if clone else t
                calls.setdefault(key, []).append(t if device is None else t.to(device))

            return record

        fwd = [(n, recorder(n)) for n in names]
        bwd = [(n, recorder(n + "_grad", backward=True)) for n in names] if incl_bwd else []
        with self._gates_open(names, hook_dict, asked=_asked([(names_filter, 0)])) as off:
            fwd, bwd = [h for h in fwd if h[0] not in off], [h for h in bwd if h[0] not in off]
            with TransformerBridge.hooks(self, fwd, bwd, reset_hooks_end, clear_contexts):
                with own:
                    out = self(input, *args, **kwargs)
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
        methods = cache_methods(self)  # TransformerLens's cache methods (hooked.lm.toolkit)
        if methods is not None:
            cache = cache.with_methods(methods)
        return out, (cache if return_cache_object else dict(cache.items()))


# ---------------------------------------------------------------------- fixes and checks
def fix_kv_cache(model: Any) -> int:
    """Make every attention component of a bridge store its keys and values in a cache passed as
    ``cache=`` (transformers >= 5.24; fix 1 of the module docstring: TransformerLens 4.3's
    ``AttentionBridge._update_kv_cache`` reads only ``past_key_values`` / ``layer_past``).
    Idempotent; returns how many components it fixed now. Also applied by
    :class:`hooked.lm.backends.forward.LMForward` to a bridge booted outside ``lm.load``."""
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


# fix 4 of the module docstring: replacements checked like every HookedModule's (TransformerLens 4.3
# checks none); delete _checked, _checked_specs and _show_user_hooks when it checks them itself
def _show_user_hooks(hook_points: Iterable[Any]) -> None:
    """Point each handle's ``user_hook`` back at the user's function where it names a check."""
    for hp in hook_points:
        for handle in (*getattr(hp, "fwd_hooks", ()), *getattr(hp, "bwd_hooks", ())):
            user = getattr(handle.user_hook, "_hooked_user_fn", None)
            if user is not None:
                handle.user_hook = user


def _asked(specs: Iterable[Any]) -> set[str]:
    """The hook names given as strings (alone or in a list) in ``(names, fn)`` specs: a gated flag
    they need must switch on or raise; a filter's matches may be left off (``_gates_open``)."""
    out: set[str] = set()
    for spec in specs:
        names = spec[0] if isinstance(spec, (tuple, list)) and spec else None
        if isinstance(names, str):
            out.add(names)
        elif isinstance(names, (list, tuple)):
            out.update(n for n in names if isinstance(n, str))
    return out


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
