"""Splicing dictionaries into a hooked model: features become hook points of the model.

>>> with hooked.sae.spliced(model, {"blocks.3.hook_resid_post": sae}) as m:
...     logits, cache = m.run_with_cache(tokens)
...     cache["blocks.3.hook_resid_post.hook_sae_acts_post"]        # [batch, pos, width]

At each hook the activation is replaced by the dictionary's output: its reconstruction, plus the
error ``activation - reconstruction`` with ``error_term=True`` (the default), so that the rest of
the model sees its clean input (the logits equal the clean model's to float tolerance) while the
features can be read and edited; without the error term the model runs on the reconstruction.
A transcoder spliced at ``{hook_in: transcoder}`` reads ``hook_in`` and replaces the activation
at its ``hook_out`` (or give the key as ``(hook_in, hook_out)``).

**Names.** The dictionary's hook points appear as ``<key>.<point>``, ``key`` being the hook name
the dictionary was spliced at and ``point`` one of SAELens's names: ``hook_sae_input``,
``hook_sae_acts_pre``, ``hook_sae_acts_post`` (the features), ``hook_sae_recons``,
``hook_sae_error``, ``hook_sae_output``. These are the keys SAELens's ``HookedSAETransformer``
uses. They keep the hook's position axis (``[batch, pos, width]``) and, at a hook point that runs
once per step (an RNN's state), the step axis (stacked as the model's own hook point is).

**What takes them.** ``spliced(...)`` yields a :class:`Spliced` view of the model: a hooked model
(``hook_dict``, ``run_with_hooks``, ``run_with_cache``, ``hooks``) whose hook names are the
model's and the features', and which otherwise behaves as the model (calling it runs the model,
attributes such as ``tokenizer`` are the model's). Ordinary hooks at feature names ablate, steer
(:func:`steer` adds ``alpha`` to a feature, which moves the output by ``alpha * W_dec[i]``) and
patch; ``interventions.patching_sweep(m, ...)`` and ``hooked.lm.generate(m, ...)`` take the view
like any hooked model. It works the same on a :class:`~hooked.HookedModule`, on
:func:`hooked.wrap` and on TransformerLens's bridge: the splice itself is an ordinary forward hook
(:func:`splice_hooks` gives them, for a user's own ``fwd_hooks``), and the features' hook points
are the dictionary's own. Inside the ``with`` block the model itself runs spliced too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from hooked.cache import ActivationCache, pos_axis, pos_index, slice_positions
from hooked.hook_fns import read_only
from hooked.hook_point import HookHandle, HookPoint
from hooked.names import NamesSpec
from hooked.protocol import check_hook, check_hookable, hook_names, hook_point
from hooked.sae.dictionary import SAE

POINTS = (
    "hook_sae_input",
    "hook_sae_acts_pre",
    "hook_sae_acts_post",
    "hook_sae_recons",
    "hook_sae_error",
    "hook_sae_output",
)

Key = str | tuple[str, str]
HookSpec = tuple[Any, Callable]


def feature_name(hook: str, point: str = "hook_sae_acts_post") -> str:
    """The name of a spliced dictionary's hook point: ``<hook>.<point>`` (features by default)."""
    if point not in POINTS:
        raise ValueError(f"point must be one of {', '.join(POINTS)}, got {point!r}")
    return f"{hook}.{point}"


class _Splice:
    """One dictionary and where it reads and writes."""

    def __init__(self, model: Any, key: Any, sae: Any):
        if not isinstance(sae, SAE):
            raise TypeError(
                f"the dictionary for {key!r} must be a hooked.sae.SAE or Transcoder, got {type(sae).__name__}"
            )
        if isinstance(key, tuple):
            if len(key) != 2 or not all(isinstance(k, str) for k in key) or not sae.is_transcoder:
                raise TypeError(
                    f"a key (hook_in, hook_out) is for a transcoder: two hook names; got {key!r} for a "
                    f"{type(sae).__name__}"
                )
            name, out = key
        elif isinstance(key, str):
            name = key
            out = sae.hook_out if sae.is_transcoder else key
            if out is None:
                raise ValueError(
                    f"the transcoder spliced at {key!r} has no hook_out: set transcoder.hook_out, "
                    f"or give the key as ({key!r}, HOOK_OUT)"
                )
        else:
            raise TypeError(f"dictionaries are keyed by hook name, got {type(key).__name__}: {key!r}")
        self.name = name  # the hook read, and the prefix of the feature names
        self.out = out  # the hook written
        self.sae = sae
        check_hook(model, name)
        check_hook(model, out)
        self.point = hook_point(model, out)

    def check(self, act: Any, width: int, where: str) -> Tensor:
        sae = self.sae
        if not isinstance(act, Tensor):
            raise TypeError(
                f"the dictionary spliced at {where!r} needs a tensor there, got {type(act).__name__}"
            )
        if act.shape[-1:] != (width,) and not (sae.reshape_activations == "hook_z" and act.dim() >= 2):
            raise ValueError(
                f"the dictionary spliced at {where!r} reads width {width}, but the activation there has "
                "shape "
                f"{tuple(act.shape)}"
            )
        if act.dtype != sae.dtype or act.device != sae.device:
            raise TypeError(
                f"the dictionary spliced at {where!r} has {sae.dtype} weights on {sae.device}, but the "
                "activation "
                f"there is {act.dtype} on {act.device}; convert it with sae.to(dtype=..., device=...)"
            )
        return act

    def hooks(self, error_term: bool) -> list[tuple[str, Callable]]:
        sae, name, out = self.sae, self.name, self.out
        if not sae.is_transcoder:

            def splice(act: Tensor, hook: Any) -> Tensor:
                return sae(self.check(act, sae.d_in, name), error_term=error_term)

            splice.__qualname__ = f"splice[{name!r}]"
            return [(name, splice)]
        held: list[Tensor] = []

        def read(act: Tensor, hook: Any) -> None:
            held[:] = [self.check(act, sae.d_in, name)]

        def write(act: Tensor, hook: Any) -> Tensor:
            if not held:
                raise RuntimeError(
                    f"the transcoder spliced from {name!r} to {out!r}: {out!r} ran before {name!r} in this "
                    "forward"
                )
            x = held.pop()
            return sae(x, self.check(act, sae.d_out, out), error_term=error_term)

        read.__qualname__ = f"transcoder_read[{name!r}]"
        write.__qualname__ = f"transcoder_write[{out!r}]"
        return [(name, read_only(read)), (out, write)]


class Spliced:
    """A hooked model with dictionaries spliced in (see :func:`spliced`): the model's hook names
    and ``<hook>.<point>`` for each dictionary's hook points."""

    def __init__(self, model: Any, saes: Mapping[Key, SAE], error_term: bool = True):
        check_hookable(model)
        if not isinstance(saes, Mapping) or not saes:
            raise ValueError("saes must be a non-empty mapping {hook name: dictionary}")
        splices = [_Splice(model, key, sae) for key, sae in saes.items()]
        seen: dict[int, str] = {}
        for s in splices:
            if id(s.sae) in seen:
                raise ValueError(
                    f"the same dictionary object is spliced at {seen[id(s.sae)]!r} and {s.name!r}; its hook "
                    "points "
                    "can have one name only: splice a copy (copy.deepcopy(sae))"
                )
            seen[id(s.sae)] = s.name
        names = [s.name for s in splices]
        if len(set(names)) != len(names):
            raise ValueError(f"two dictionaries read the same hook: {names}")
        self.__dict__.update(
            model=model,
            __wrapped__=model,  # what hooked.lm asks of the model it runs (its backend)
            splices=splices,
            error_term=bool(error_term),
            _points={f"{s.name}.{n}": hp for s in splices for n, hp in s.sae.hook_dict.items()},
        )

    # ------------------------------------------------------------------ the hooked-model protocol
    @property
    def saes(self) -> dict[str, SAE]:
        """Hook name -> the dictionary spliced there."""
        return {s.name: s.sae for s in self.splices}

    @property
    def hook_dict(self) -> dict[str, Any]:
        return {**self.model.hook_dict, **self._points}

    @property
    def hook_name_aliases(self) -> dict[str, str]:
        aliases = getattr(self.model, "hook_name_aliases", None)
        return dict(aliases) if isinstance(aliases, Mapping) else {}

    def splice_hooks(self) -> list[tuple[str, Callable]]:
        """The forward hooks that splice the dictionaries in (for the model's ``fwd_hooks``)."""
        return [h for s in self.splices for h in s.hooks(self.error_term)]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["model"], name)

    def __repr__(self) -> str:
        inner = ", ".join(f"{s.name!r}: {s.sae.kind} x{s.sae.width}" for s in self.splices)
        return f"Spliced({type(self.model).__name__}, {{{inner}}}, error_term={self.error_term})"

    @contextmanager
    def hooks(
        self,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[Spliced]:
        """Attach hooks (model names and feature names) for a ``with`` block."""
        model_fwd, sae_fwd = self._split(fwd_hooks)
        model_bwd, sae_bwd = self._split(bwd_hooks)
        with self._feature_hooks(sae_fwd, sae_bwd, keep=not reset_hooks_end):
            with self.model.hooks(model_fwd, model_bwd, reset_hooks_end, clear_contexts):
                yield self

    def run_with_hooks(
        self,
        *args: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **kwargs: Any,
    ) -> Any:
        """The model's ``run_with_hooks``, with hooks at feature names too."""
        model_fwd, sae_fwd = self._split(fwd_hooks)
        model_bwd, sae_bwd = self._split(bwd_hooks)
        with self._feature_hooks(sae_fwd, sae_bwd, keep=not reset_hooks_end):
            return self.model.run_with_hooks(
                *args,
                fwd_hooks=model_fwd,
                bwd_hooks=model_bwd,
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
        remove_batch_dim: bool = False,
        pos_slice: Any = None,
        **kwargs: Any,
    ) -> tuple[Any, ActivationCache]:
        """The model's ``run_with_cache``, recording feature names too (in one forward).

        Every option is the model's (``names_filter``, ``device``, ``incl_bwd`` with ``metric=``,
        ``pos_slice``, ...); ``names_filter=None`` records the model's default set and every
        dictionary hook point.
        """
        names = hook_names(self, names_filter)
        mine = [n for n in names if n in self._points]
        theirs = None if names_filter is None else [n for n in names if n not in self._points]
        calls: dict[str, list[tuple[int, Tensor]]] = {}
        fwd = [(n, _recorder(calls, n, device)) for n in mine]
        bwd = [(n, _recorder(calls, n + "_grad", device)) for n in mine] if incl_bwd else []
        with self._feature_hooks(fwd, bwd, keep=False):
            out, cache = self.model.run_with_cache(
                *args, names_filter=theirs, device=device, incl_bwd=incl_bwd, pos_slice=pos_slice, **kwargs
            )
        merged = self._merge(cache, calls, pos_slice)
        return out, (merged.remove_batch_dim() if remove_batch_dim else merged)

    # ------------------------------------------------------------------ internals
    def _split(self, specs: Sequence[HookSpec]) -> tuple[list[HookSpec], list[tuple[str, Callable]]]:
        """Hook specs as (the model's, the features' by name)."""
        model_specs: list[HookSpec] = []
        feature_specs: list[tuple[str, Callable]] = []
        for spec in specs:
            try:
                names, fn = spec
            except (TypeError, ValueError):
                raise TypeError(f"each hook must be a (name_or_filter, fn) pair, got {spec!r}") from None
            if isinstance(names, str):
                (feature_specs if names in self._points else model_specs).append((names, fn))
            elif callable(names):
                feature_specs.extend((n, fn) for n in self._points if names(n))
                model_specs.append((names, fn))
            else:
                listed = list(names)
                feature_specs.extend((n, fn) for n in listed if n in self._points)
                rest = [n for n in listed if n not in self._points]
                if rest:
                    model_specs.append((rest, fn))
        return model_specs, feature_specs

    @contextmanager
    def _feature_hooks(
        self, fwd: Sequence[tuple[str, Callable]], bwd: Sequence[tuple[str, Callable]], keep: bool
    ) -> Iterator[None]:
        for name, fn in (*fwd, *bwd):
            if not callable(fn):
                raise TypeError(f"hook for {name!r} must be callable as fn(activation, hook), got {fn!r}")
        handles: list[HookHandle] = []
        try:
            for d, specs in (("fwd", fwd), ("bwd", bwd)):
                handles.extend(self._points[n].add_hook(fn, dir=d) for n, fn in specs)
            yield
        finally:
            if not keep:
                HookHandle.merge(handles).remove()

    def _merge(
        self, cache: ActivationCache, calls: dict[str, list[tuple[int, Tensor]]], pos_slice: Any
    ) -> ActivationCache:
        """The model's cache with the dictionaries' activations after their hook's."""
        data: dict[str, Tensor] = {}
        time_dims: dict[str, int] = {}
        ragged: dict[str, list[Tensor]] = {}

        def keep(name: str, c: ActivationCache) -> None:
            dim = c.time_dim(name)
            if c.is_stacked(name) and dim is None:
                ragged[name] = c.steps(name)
                return
            data[name] = c[name]
            if dim is not None:
                time_dims[name] = dim

        for name in cache:
            keep(name, cache)
        points = self._points
        recurrent = {n for n in calls if getattr(points[n.removesuffix("_grad")], "recurrent", False)}
        dims = {n: points[n.removesuffix("_grad")].time_dim for n in calls}
        ordered = {n: [t for _, t in sorted(c, key=lambda c: c[0])] for n, c in calls.items()}
        mine = ActivationCache.from_calls(ordered, dims, recurrent)
        index = pos_index(pos_slice)
        for name in mine:
            keep(name, mine)
            if index is not None and name in data and data[name].dim() >= 2:
                axis = time_dims.get(name, pos_axis(name, None))
                data[name] = slice_positions(data[name], index, axis, name)
        order = list(cache)
        for name in mine:
            prefix = next((s.name for s in self.splices if name.startswith(s.name + ".")), None)
            after = [i for i, n in enumerate(order) if n == prefix or n.startswith(f"{prefix}.")]
            order.insert(after[-1] + 1 if after else len(order), name)
        return ActivationCache(data, time_dims, ragged, cache.aliases, order=order)


def _recorder(calls: dict[str, list[tuple[int, Tensor]]], key: str, device: Any) -> Callable:
    def record(act: Tensor, hook: HookPoint) -> None:
        t = act.detach()
        calls.setdefault(key, []).append((hook.step, t if device is None else t.to(device)))

    record.__qualname__ = f"cache[{key!r}]"
    return read_only(record)


@contextmanager
def spliced(model: Any, saes: Mapping[Key, SAE], *, error_term: bool = True) -> Iterator[Spliced]:
    """Splice dictionaries into ``model`` for a ``with`` block; yields the :class:`Spliced` view.

    Args:
        model: a hooked model (``HookedModule``, ``hooked.wrap``, TransformerLens's bridge).
        saes: ``{hook name: SAE}`` (a transcoder: ``{hook_in: transcoder}`` writing its
            ``hook_out``, or ``{(hook_in, hook_out): transcoder}``).
        error_term: add ``activation - reconstruction`` (from un-edited features), so that the
            model's output is unchanged unless a feature is edited.
    """
    view = Spliced(model, saes, error_term)
    if not callable(getattr(model, "hooks", None)):
        raise TypeError(f"{type(model).__name__} has no hooks() context manager to splice with")
    restore = []
    try:
        for s in view.splices:  # a per-step hook point: the features are per step too
            recurrent = bool(getattr(s.point, "recurrent", False))
            for hp in s.sae.hook_dict.values():
                restore.append((hp, hp.recurrent, hp.time_dim))
                hp.recurrent = recurrent
                hp.time_dim = getattr(s.point, "time_dim", 1) if recurrent else hp.time_dim
        with model.hooks(fwd_hooks=view.splice_hooks()):
            yield view
    finally:
        for hp, recurrent, time_dim in restore:
            hp.recurrent, hp.time_dim = recurrent, time_dim


def splice_hooks(
    model: Any, saes: Mapping[Key, SAE], *, error_term: bool = True
) -> list[tuple[str, Callable]]:
    """The forward hooks that splice ``saes`` into ``model`` (pass them as ``fwd_hooks``); the
    features' hook points are then each dictionary's own (``sae.hook_sae_acts_post``)."""
    return Spliced(model, saes, error_term).splice_hooks()


def run_with_cache(
    model: Any, *args: Any, saes: Mapping[Key, SAE], error_term: bool = True, **kwargs: Any
) -> tuple[Any, ActivationCache]:
    """``model.run_with_cache(*args, **kwargs)`` with ``saes`` spliced in (features cached as
    ``<hook>.hook_sae_acts_post`` and the other dictionary hook points)."""
    with spliced(model, saes, error_term=error_term) as m:
        return m.run_with_cache(*args, **kwargs)


def run_with_hooks(
    model: Any, *args: Any, saes: Mapping[Key, SAE], error_term: bool = True, **kwargs: Any
) -> Any:
    """``model.run_with_hooks(*args, **kwargs)`` with ``saes`` spliced in; ``fwd_hooks`` may name
    the dictionaries' hook points."""
    with spliced(model, saes, error_term=error_term) as m:
        return m.run_with_hooks(*args, **kwargs)


# ---------------------------------------------------------------------- feature edits
def _feature_index(features: Any) -> Any:
    if isinstance(features, Tensor):
        return features.long()
    if isinstance(features, int) and not isinstance(features, bool):
        return [features]
    items = [] if isinstance(features, bool) else list(features)  # a bool gets the message below
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise TypeError(f"features must be an int, a list of ints or a tensor of indices, got {features!r}")
    return items


def steer(features: int | Sequence[int] | Tensor, alpha: float | Tensor) -> Callable:
    """A hook for ``<hook>.hook_sae_acts_post`` that adds ``alpha`` to the given features (which
    moves the dictionary's output by ``alpha * W_dec[i]`` each)."""
    index = _feature_index(features)

    def add(acts: Tensor, hook: Any) -> Tensor:
        out = acts.clone()
        out[..., index] += alpha
        return out

    add.__qualname__ = f"steer({features!r}, {alpha!r})"
    return add


def ablate(features: int | Sequence[int] | Tensor | None = None) -> Callable:
    """A hook for ``<hook>.hook_sae_acts_post`` that sets the given features (all by default) to 0."""
    index = slice(None) if features is None else _feature_index(features)

    def zero(acts: Tensor, hook: Any) -> Tensor:
        out = acts.clone()
        out[..., index] = 0
        return out

    zero.__qualname__ = f"ablate({features!r})"
    return zero
