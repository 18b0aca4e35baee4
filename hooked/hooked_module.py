"""HookedModule: the base class that turns any ``nn.Module`` with HookPoints into a hooked model.

Subclass it and place :class:`~hooked.HookPoint` modules where activations should be visible;
nothing else is needed (no registration, no ``setup()``). Hook points are named by their dotted
module path (``blocks.0.hook_resid_pre``, ``rnn.hook_h``) and found afresh on each call, so a
model whose structure changes after construction stays correct. A model from :func:`hooked.wrap`
placed inside a HookedModule contributes its hook points under its path.

The methods follow TransformerLens's ``HookedRootModule`` names and semantics: ``hook_dict``,
``mod_dict``, ``add_hook``, ``add_perma_hook``, ``list_hooks``, ``remove_all_hook_fns``,
``reset_hooks``, ``clear_contexts``, ``hooks``, ``run_with_hooks``, ``run_with_cache`` (with
``pos_slice``); docs/guide/transformerlens.md lists where they differ on purpose.
Everything that attaches hooks for the span of one call removes exactly what it attached, also
when the forward raises.

A subclass's ``forward`` is wrapped once, at class creation, so that calling it, as ``model(x)``
or as ``model.forward(x)``, is a forward in the sense of :mod:`hooked._steps` (the outermost one
running in a thread is a pass, and ``hook.step`` counts within it); with no hook attached
anywhere the wrapper only tests that and calls the forward.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from hooked import _gc_pause, _steps, fast_lookup, hook_point
from hooked.cache import ActivationCache, OwnForward, pos_axis, pos_index, slice_positions
from hooked.errors import StopForward, UnknownHookError
from hooked.hook_fns import HookFn, declare
from hooked.hook_point import (
    AttachedHook,
    Direction,
    Directions,
    HookHandle,
    HookPoint,
    attach_all,
    directions,
)
from hooked.names import NamesSpec, resolve_names
from hooked.protocol import batch_keywords

HookSpec = tuple[str | Sequence[str] | Callable[[str], bool], HookFn]


def _in_a_pass(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward``, run as a forward of :mod:`hooked._steps` (a pass when it is the outermost)."""

    @functools.wraps(forward)
    def forward_in_a_pass(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not hook_point.any_live:  # no hook attached anywhere: nothing to count
            return forward(self, *args, **kwargs)
        opened = _steps.enter()
        finished = False
        try:
            out = forward(self, *args, **kwargs)
            finished = True
            return out
        finally:
            _steps.leave(opened, finished)

    forward_in_a_pass._hooked_pass = True  # type: ignore[attr-defined]
    return forward_in_a_pass


class HookedModule(nn.Module):
    """An ``nn.Module`` whose :class:`HookPoint` submodules can be hooked by name."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.forward
        if forward is not nn.Module.forward and not getattr(forward, "_hooked_pass", False):
            cls.forward = _in_a_pass(forward)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ fast hook point lookup
    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if isinstance(value, HookPoint):
            fast_lookup.bind(self)
        elif isinstance(value, nn.Module):
            fast_lookup.install(value)

    def add_module(self, name: str, module: nn.Module | None) -> None:
        super().add_module(name, module)
        if isinstance(module, HookPoint):
            fast_lookup.bind(self)
        elif module is not None:
            fast_lookup.install(module)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fast_lookup.install(self)  # a copy's hook points are kept in step again

    # ------------------------------------------------------------------ discovery
    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        """Every hook point, by dotted module path, in module order (found afresh each time)."""
        return _find_hook_points(self, "", {}, {id(self)})

    @property
    def mod_dict(self) -> dict[str, nn.Module]:
        """Every submodule (not the model itself), by dotted module path."""
        return {name: m for name, m in self.named_modules() if name}

    def hook_points(self) -> list[HookPoint]:
        return list(self.hook_dict.values())

    @property
    def context_level(self) -> int:
        """How many ``hooks()`` contexts are open on this model (TransformerLens's counter)."""
        return self.__dict__.get("_context_level", 0)

    @context_level.setter
    def context_level(self, level: int) -> None:
        object.__setattr__(self, "_context_level", level)

    # ------------------------------------------------------------------ attaching
    def add_hook(
        self,
        name: str | Sequence[str] | Callable[[str], bool],
        hook: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: int | None = None,
        prepend: bool = False,
    ) -> HookHandle:
        """Attach ``hook`` at the hook point ``name`` (or every point a filter accepts).

        Returns a handle whose ``remove()`` takes off exactly these hooks.
        """
        return self._attach([(name, hook)], dir, is_permanent, prepend, level=level)

    def add_perma_hook(
        self, name: str | Sequence[str] | Callable[[str], bool], hook: HookFn, dir: Direction = "fwd"
    ) -> HookHandle:
        """A hook that ``reset_hooks()`` keeps (remove it with ``including_permanent=True``)."""
        return self.add_hook(name, hook, dir=dir, is_permanent=True)

    def list_hooks(
        self, name_filter: NamesSpec = None, dir: Directions = "both", including_permanent: bool = True
    ) -> dict[str, list[AttachedHook]]:
        """The attached hooks by hook name, in ``hook_dict`` order; names without one are left out.

        Args:
            name_filter: a hook name, a list of names, a filter ``fn(name) -> bool``, or all.
            dir: ``"fwd"``, ``"bwd"`` or ``"both"``.
            including_permanent: ``False`` leaves permanent hooks out.
        """
        hook_dict = self.hook_dict
        directions(dir)  # checked even when no hook point is named
        out: dict[str, list[AttachedHook]] = {}
        for name in resolve_names(hook_dict, name_filter, type(self).__name__):
            found = hook_dict[name].list_hooks(dir, including_permanent)
            if found:
                out[name] = found
        return out

    def remove_all_hook_fns(
        self, direction: Directions = "both", including_permanent: bool = False, level: int | None = None
    ) -> None:
        """Remove the hooks of every hook point (permanent ones only if asked; only one ``hooks()``
        context level's with ``level``)."""
        for hp in self.hook_dict.values():
            hp.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def clear_contexts(self) -> None:
        """Empty every hook point's ``ctx`` dict."""
        for hp in self.hook_dict.values():
            hp.clear_context()

    def reset_hooks(
        self,
        clear_contexts: bool = True,
        direction: Directions = "both",
        including_permanent: bool = False,
        level: int | None = None,
    ) -> None:
        """Remove every hook (permanent ones only with ``including_permanent=True``) and, by
        default, empty every hook point's ``ctx``."""
        if clear_contexts:
            self.clear_contexts()
        self.remove_all_hook_fns(direction, including_permanent, level)

    @contextmanager
    def hooks(
        self,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[HookedModule]:
        """Attach hooks for the span of a ``with`` block; exactly those are removed at its end.

        Blocks nest: an inner block removes only what it added. ``clear_contexts=True`` empties
        every hook point's ``ctx`` when the block ends and removes its hooks (as TransformerLens's
        ``HookedRootModule``).
        """
        level = self.context_level + 1
        handle = self._attach_many(fwd_hooks, bwd_hooks, level=level)
        object.__setattr__(self, "_context_level", level)
        try:
            yield self
        finally:
            object.__setattr__(self, "_context_level", level - 1)
            if reset_hooks_end:
                handle.remove()
                if clear_contexts:
                    self.clear_contexts()

    def run_with_hooks(
        self,
        *args: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run the forward with hooks attached, then remove them (also if the forward raises).

        Backward hooks are bound to this forward's graph: they fire in a later ``.backward()``. A
        batch mapping passed as the one positional argument is passed as the keywords it holds
        where the forward takes them (:func:`hooked.protocol.batch_keywords`).
        """
        args, kwargs = batch_keywords(self._batch_forward(), args, kwargs)
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self(*args, **kwargs)

    def run_with_cache(
        self,
        *args: Any,
        names_filter: NamesSpec = None,
        device: torch.device | str | None = None,
        incl_bwd: bool = False,
        remove_batch_dim: bool = False,
        pos_slice: Any = None,
        stop_at: str | None = None,
        clone: bool = False,
        metric: Callable[[Any], Tensor] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ActivationCache]:
        """Run the forward and record activations; returns ``(output, cache)``.

        The cache's keys come in the order the hook points ran (gradients after, in the order the
        backward pass produced them). It records this forward only: not a forward that a hook
        starts inside it, nor another thread's. A batch mapping passed as the one positional
        argument is passed as the keywords it holds (as in :meth:`run_with_hooks`).

        Args:
            names_filter: which hook points to record (a name, a list, a filter, or all); a name
                given twice is recorded once.
            device: move recorded activations there as they are recorded (e.g. ``"cpu"``).
            incl_bwd: also record gradients as ``"<name>_grad"``: ``backward()`` is called on
                ``metric(output)``, or on the output itself when no metric is given (which must
                then be a scalar, e.g. a loss).
            metric: with ``incl_bwd``, a function of the forward's output that returns the scalar
                to differentiate (e.g. a logit difference summed over the batch).
            remove_batch_dim: drop a leading batch axis of size 1.
            pos_slice: keep only these positions (TransformerLens's ``Slice``: an int keeps a
                size-1 axis, a tuple is ``slice(*t)``, a slice, or a list of positions). The axis
                is the hook point's ``pos_dim``, else -2 (query) for ``hook_pattern`` /
                ``hook_attn_scores``, else 1; activations with fewer than 2 axes are kept whole.
                For a recurrent hook point it selects steps (its time axis).
            stop_at: end the forward right after this hook point ran (the output is then
                ``None``); saves the rest of the model when only early activations are needed.
            clone: copy activations instead of detaching views (needed only if the model edits
                them in place after the hook point; that case is detected and warned about).
        """
        hook_dict = self.hook_dict
        owner = type(self).__name__
        names = list(dict.fromkeys(resolve_names(hook_dict, names_filter, owner)))
        args, kwargs = batch_keywords(self._batch_forward(), args, kwargs)
        if stop_at is not None and stop_at not in hook_dict:
            raise UnknownHookError(stop_at, hook_dict, owner)
        if incl_bwd and stop_at is not None:
            raise ValueError(
                f"run_with_cache: incl_bwd=True calls backward() on the whole forward's output, so it cannot "
                f"be combined with stop_at={stop_at!r}, which ends the forward early; drop one of them"
            )
        if incl_bwd and not torch.is_grad_enabled():
            raise ValueError("run_with_cache(incl_bwd=True) needs gradients enabled (not under no_grad)")
        if metric is not None and not (incl_bwd and callable(metric)):
            raise ValueError("run_with_cache(metric=fn) needs incl_bwd=True and a function of the output")
        index = pos_index(pos_slice)

        points = {n: hook_dict[n] for n in names}
        own = OwnForward(self._forward_root())
        recorder = _Recorder(device, clone, index, own)
        with _gc_pause.paused():  # hundreds of hooks and tensors per call: no collector walks meanwhile
            fwd = recorder.readers(points)
            bwd = recorder.readers(points, backward=True) if incl_bwd else {}
            stop = hook_dict[stop_at] if stop_at is not None else None
            out = self._record(args, kwargs, fwd, bwd, stop, own, incl_bwd, metric)
            calls = recorder.finish()
        time_dims = {n: hp.time_dim for n, hp in points.items() if hp.time_dim != 1}  # 1: the default
        if incl_bwd:
            time_dims.update({n + "_grad": d for n, d in time_dims.items()})
        recurrent = {n for n, hp in points.items() if hp.recurrent}
        recurrent |= {n + "_grad" for n in recurrent}
        if index is not None:
            calls, recurrent = _select_steps(calls, recurrent, index)
        cache = ActivationCache.from_calls(calls, time_dims, recurrent)
        if remove_batch_dim:
            cache = cache.remove_batch_dim()
        return out, cache

    # ------------------------------------------------------------------ internals
    def _record(
        self,
        args: tuple,
        kwargs: dict,
        fwd: dict[HookPoint, _Read],
        bwd: dict[HookPoint, _Read],
        stop: HookPoint | None,
        own: OwnForward,
        incl_bwd: bool,
        metric: Callable[[Any], Tensor] | None,
    ) -> Any:
        """Put the recording in place, run the forward (and backward), take it off; the output.

        A hook point that can hand its activations over without a hook (one fed by a PyTorch hook
        of its own with nothing attached, :meth:`HookPoint._read_directly`: every point of
        ``hooked.wrap``) is read so when no gradient is recorded; the others get a recording hook,
        attached after the hooks already there (so it records what they made of the activation)
        and in bulk, the points themselves, not (name, fn) specs: the names are hook_dict's own,
        so the checks and name translation of ``add_hook`` have nothing to do."""
        level = self.context_level + 1
        direct: list[Any] = []  # the PyTorch handles of points read directly
        handles: list[HookHandle] = []
        try:
            hooked: dict[HookPoint, _Read] = {}
            for hp, read in fwd.items():
                h = None if bwd else hp._read_directly(read)
                if h is None:
                    hooked[hp] = read
                else:
                    direct.append(h)
            plan: list[tuple[HookPoint, HookFn]] = []
            if hooked:
                record = _record_with(hooked)
                plan = [(hp, record) for hp in hooked]
            if stop is not None:
                plan.append((stop, _stop_forward))  # after the recording of that point
            handles.append(attach_all(plan, "fwd", level=level))
            if bwd:
                record = _record_with(bwd)
                handles.append(attach_all([(hp, record) for hp in bwd], "bwd", level=level))
            try:
                with own:
                    out = self(*args, **kwargs)
            except StopForward:
                out = None
            if incl_bwd:
                target = out if metric is None else metric(out)
                if not isinstance(target, Tensor) or target.numel() != 1:
                    shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
                    what = "metric(output)" if metric is not None else "the forward's output"
                    raise ValueError(
                        f"run_with_cache(incl_bwd=True) calls backward() on {what}, which must be a "
                        f"scalar tensor (e.g. a loss, or pass metric=fn returning one); got {shape}"
                    )
                target.backward()
        finally:
            try:
                HookHandle.merge(handles).remove()
            finally:
                for h in direct:
                    h.remove()
        return out

    def _forward_root(self) -> nn.Module:
        """The module whose call is this model's forward (:class:`hooked.cache.OwnForward`)."""
        return self

    def _batch_forward(self) -> Callable[..., Any]:
        """The function whose parameters say which keywords a batch mapping may hold."""
        return self.forward

    def _attach(
        self,
        specs: Sequence[HookSpec],
        dir: Direction,
        is_permanent: bool = False,
        prepend: bool = False,
        hook_dict: dict[str, HookPoint] | None = None,
        level: int | None = None,
    ) -> HookHandle:
        """Validate every (names, fn) pair first, then attach them all: all or nothing."""
        if dir not in ("fwd", "bwd"):
            raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        hook_dict = self.hook_dict if hook_dict is None else hook_dict
        owner = type(self).__name__
        plan: list[tuple[HookPoint, HookFn]] = []
        for spec in specs:
            try:
                names, fn = spec
            except (TypeError, ValueError):
                raise TypeError(
                    f"each {dir} hook must be a (name_or_filter, fn) pair, got {spec!r}"
                ) from None
            if not callable(fn):
                raise TypeError(
                    f"hook for {names!r} must be callable as fn(activation, hook), "
                    f"got {type(fn).__name__}: {fn!r}"
                )
            point = hook_dict.get(names) if isinstance(names, str) else None
            if point is not None:  # one exact name (the common case): no list of every name
                plan.append((point, fn))
            else:
                plan.extend((hook_dict[n], fn) for n in resolve_names(hook_dict, names, owner))
        return attach_all(plan, dir, is_permanent, prepend, level)

    def _attach_many(
        self,
        fwd_hooks: Sequence[HookSpec],
        bwd_hooks: Sequence[HookSpec],
        level: int | None = None,
    ) -> HookHandle:
        hook_dict = self.hook_dict
        fwd = self._attach(fwd_hooks, "fwd", hook_dict=hook_dict, level=level)
        try:
            bwd = self._attach(bwd_hooks, "bwd", hook_dict=hook_dict, level=level)
        except BaseException:
            fwd.remove()
            raise
        return HookHandle.merge([fwd, bwd])


def _find_hook_points(
    module: nn.Module, prefix: str, found: dict[str, HookPoint], seen: set[int]
) -> dict[str, HookPoint]:
    """Pre-order walk of ``_modules`` (what ``named_modules`` yields, about 5x faster); names
    each hook point it finds (and keeps it findable by plain attribute lookup). A HookedModule
    with hook points of its own making (``hooked.wrap``) contributes them under its path."""
    holds_points = False
    for name, child in module._modules.items():
        if child is None or id(child) in seen:
            continue
        seen.add(id(child))
        path = prefix + name
        if isinstance(child, HookPoint):
            holds_points = True
            if child.name != path:
                object.__setattr__(child, "name", path)
            found[path] = child
            continue
        if isinstance(child, HookedModule) and type(child).hook_dict is not HookedModule.hook_dict:
            for inner, hp in child.hook_dict.items():
                if id(hp) not in seen:
                    seen.add(id(hp))
                    object.__setattr__(hp, "name", f"{path}.{inner}")
                    found[f"{path}.{inner}"] = hp
        if child._modules:
            _find_hook_points(child, path + ".", found, seen)
    if holds_points and not fast_lookup.is_bound(module):
        fast_lookup.bind(module)
    return found


def _stop_forward(act: Any, hook: HookPoint) -> None:
    raise StopForward(f"forward stopped after {hook.name!r}")


declare(_stop_forward, read_only=True)


def _select_steps(
    calls: dict[str, list[Tensor]], recurrent: set[str], index: Any
) -> tuple[dict[str, list[Tensor]], set[str]]:
    """``pos_slice`` on a recurrent hook point: keep the steps it selects (its time axis). A
    TransformerLens ``Slice`` in int mode keeps one step and drops the axis."""
    out: dict[str, list[Tensor]] = {}
    still = set(recurrent)
    for name, tensors in calls.items():
        if name not in recurrent:
            out[name] = tensors
            continue
        steps = torch.arange(len(tensors))
        if isinstance(index, int):  # int mode: one step, no time axis
            chosen = [slice_positions(steps, index, 0, name)]
            still.discard(name)
        else:
            chosen = slice_positions(steps, index, 0, name).reshape(-1)
        out[name] = [tensors[int(i)] for i in chosen]
    return out, still


def _always() -> bool:
    return True


_Read = Callable[..., None]  # a _Recorder's reader: read(activation, step=None)


def _record_with(readers: dict[HookPoint, _Read]) -> HookFn:
    """One read-only hook for every hook point of ``readers``: it hands the activation it sees (and
    ``hook.step``) to the reader of the point it runs at."""

    def record(act: Tensor, hook: HookPoint) -> None:
        read = readers.get(hook)
        if read is not None:  # None: a copy of the model made while it ran, not the model recorded
            read(act, hook.step)

    record.__qualname__ = "run_with_cache.record"
    return declare(record, read_only=True)


class _Recorder:
    """Collects (step, tensor) per name while a cached forward (and backward) runs; names are
    kept in the order they first fired.

    Each hook point gets a reader (:meth:`readers`), called by the point's PyTorch hook where the
    point is read directly, else by the one recording hook of its direction (``_record_with``,
    which finds the reader of the point it runs at): a cache of every point puts hundreds of them
    in place per call, so each costs about what a hand-written PyTorch hook costs."""

    def __init__(self, device: torch.device | str | None, clone: bool, index: Any, own: OwnForward):
        self.device = device
        self.clone = clone
        self.index = index
        self.own = own
        self.calls: dict[str, list[tuple[int, Tensor, int]]] = {}

    def readers(self, points: dict[str, HookPoint], backward: bool = False) -> dict[HookPoint, _Read]:
        """For each hook point of ``points`` (``{name: point}``), a function ``read(activation,
        step=None)`` that records under each of the point's names (``backward``: its gradient,
        as ``"<name>_grad"``, which the autograd engine may hand over in another thread).
        ``step``: the call's ``hook.step``; ``None`` when the point was read without a hook, whose
        calls are recorded in the order they come (all of one forward: the steps in order)."""
        table: dict[HookPoint, tuple[tuple[str, Any, int], ...]] = {}
        for name, point in points.items():
            index = None if point.recurrent else self.index  # recurrent: steps are selected afterwards
            axis = 1 if index is None else pos_axis(name, point.pos_dim)
            spec = (name + "_grad" if backward else name, index, axis)
            table[point] = (*table.get(point, ()), spec)  # a point under two names: both recorded
        return {point: self._reader(specs, backward) for point, specs in table.items()}

    def _reader(self, specs: tuple[tuple[str, Any, int], ...], backward: bool) -> _Read:
        calls = self.calls
        device, clone = self.device, self.clone
        mine = _always if backward else self.own.mine

        def read(act: Tensor, step: int | None = None) -> None:
            if not mine():
                return  # a forward started inside the recorded one, or another thread's
            for name, index, axis in specs:
                t = act.detach()
                if index is not None and t.dim() >= 2:
                    t = slice_positions(t, index, axis, name)
                if clone:
                    t = t.clone()
                if device is not None:
                    t = t.to(device)
                seen = calls.get(name)
                if seen is None:
                    calls[name] = [(0 if step is None else step, t, t._version)]
                else:
                    seen.append((len(seen) if step is None else step, t, t._version))

        return read

    def finish(self) -> dict[str, list[Tensor]]:
        out = {}
        for name, calls in self.calls.items():
            if len(calls) == 1:  # the common case, without the general case's sort and loops
                _, t, v = calls[0]
                changed = t._version != v
            else:
                changed = any(t._version != v for _, t, v in calls)
            if changed:
                warnings.warn(
                    f"the activation cached at {name!r} was modified in place after its hook point "
                    "ran, so the cache holds the modified values; pass clone=True to "
                    "run_with_cache to keep the values as they were at the hook point",
                    stacklevel=3,
                )
            if len(calls) == 1:
                out[name] = [calls[0][1]]
                continue
            calls.sort(key=lambda c: c[0])  # backward visits steps last-first
            out[name] = [t for _, t, _ in calls]
        return out
