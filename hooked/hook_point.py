"""HookPoint: the identity module a model places wherever an activation should be readable or
editable, and the handles that remove the hooks attached to it.

A hook function has TransformerLens's signature ``fn(activation, hook)`` and returns ``None``
(read only) or a tensor that replaces the activation. Forward hooks run in the order they were
added (``prepend=True`` puts one first); backward hooks see the gradient of the activation as the
rest of the model used it, and may replace it too.

Design notes
------------
* **Inactive cost.** ``HookPoint.__call__`` is overridden: with nothing attached it only returns
  its input, not a trip through ``nn.Module.__call__`` (which TransformerLens pays at every hook
  point of every forward). Attaching a hook switches the instance to a subclass whose call runs
  the hooks; removing the last switches it back, so the inactive path reads no attribute at all.
  All state a live call mutates sits in a small slotted object, off ``nn.Module.__setattr__``.
* **Recurrence.** A hook point may run several times in one forward (once per step of an
  unrolled RNN). ``hook.step`` tells a hook function which call it is in; the counters restart when
  a top-level forward of a :class:`~hooked.HookedModule` ends (also when it raises). A recurrent
  layer that runs fused segments between hooked steps passes the step explicitly
  (``hook_point(h, step=t)``) and asks :meth:`HookPoint.active_steps` which steps it must
  materialise. A hook function restricted with :func:`at_step` runs only at those steps.
* **Backward hooks** are attached to the activation tensor during the forward pass, so they
  fire in the backward pass that follows even after ``run_with_hooks`` has removed them from the
  hook point; they only ever see the graph of the forward they were live for.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hooked.errors import HookReturnError

HookFn = Callable[..., Any]
Direction = Literal["fwd", "bwd"]


class _Pass:
    """How deep we are in nested hooked forwards; at the outermost one's end, step counters restart."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0


_PASS = _Pass()
_LIVE: weakref.WeakSet[HookPoint] = weakref.WeakSet()  # hook points with hooks attached


def _restart_steps() -> None:
    """Reset the per-forward call counter of every live hook point (end of a top-level forward)."""
    for hp in list(_LIVE):
        hp._run_state.calls = 0


def _restart_steps_outside_graphs() -> None:
    """``_restart_steps``, kept out of compiled graphs (a graph then never guards on a counter
    that changes per call). Wrapped with ``torch.compiler.disable`` when the first hook is attached,
    not at import: that import of ``torch._dynamo`` costs about a second."""
    _restart_eagerly()


_restart_eagerly: Callable[[], None] = _restart_steps


def _keep_restart_out_of_graphs() -> None:
    global _restart_eagerly
    if _restart_eagerly is _restart_steps:
        _restart_eagerly = torch.compiler.disable(_restart_steps)


# ---------------------------------------------------------------------- what a hook function declares
# A hook function is any callable ``fn(activation, hook) -> Tensor | None``. It may declare two
# attributes, which recurrent layers read to decide how to run (fused kernels where no hook needs a
# step materialised); nothing else reads or sets them:
#
#   steps: frozenset[int] | None   the steps it runs at; None (or absent) means every step
#   read_only: bool                it never replaces the activation (its return value is dropped)
#
# ``at_step`` and ``read_only`` below are the public ways to declare them; internally, ``_declare``.
def _declare(fn: HookFn, *, steps: Iterable[int] | None = None, read_only: bool | None = None) -> HookFn:
    """Set the declared attributes on a hook function (a plain function or any object that takes them)."""
    if steps is not None:
        fn.steps = frozenset(int(s) for s in steps)  # type: ignore[attr-defined]
    if read_only is not None:
        fn.read_only = read_only  # type: ignore[attr-defined]
    return fn


def _declared_steps(fn: HookFn) -> frozenset[int] | None:
    steps = getattr(fn, "steps", None)
    return None if steps is None else frozenset(int(s) for s in steps)


def _declared_read_only(fn: HookFn) -> bool:
    return bool(getattr(fn, "read_only", False))


class _Hook:
    """One attached hook function and how it was attached."""

    __slots__ = ("fn", "permanent", "steps", "read_only")

    def __init__(self, fn: HookFn, permanent: bool):
        self.fn = fn
        self.permanent = permanent
        self.steps = _declared_steps(fn)
        self.read_only = _declared_read_only(fn)


class _RunState:
    """What a live hook point mutates while it runs (kept off ``nn.Module.__setattr__``)."""

    __slots__ = ("calls", "step")

    def __init__(self) -> None:
        self.calls = 0
        self.step = 0


def _describe(fn: HookFn) -> str:
    inner = getattr(fn, "func", None) or getattr(fn, "fn", None) or fn
    return getattr(inner, "__qualname__", None) or type(inner).__name__


class HookPoint(nn.Module):
    """An identity module: ``hook_point(x)`` returns ``x`` unless hooks are attached.

    Args:
        recurrent: the activation is produced once per time step; caches always stack it
            along ``time_dim``, even for a sequence of one step.
        time_dim: the axis a cache stacks repeated calls along (1 gives ``[batch, time, ...]``).
    """

    def __init__(self, *, recurrent: bool = False, time_dim: int = 1):
        super().__init__()
        self.name: str | None = None
        self.recurrent = recurrent
        self.time_dim = time_dim
        self.ctx: dict[str, Any] = {}
        self._fwd: list[_Hook] = []
        self._bwd: list[_Hook] = []
        self._live = False
        self._run_state = _RunState()

    # ------------------------------------------------------------------ the hot path
    def __call__(self, x: Any, step: int | None = None) -> Any:
        # Nothing attached (a hook point with hooks is switched to _LiveHookPoint).
        return x

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A user's subclass is not class-switched: give it the checking call unless it has its own.
        if cls.__name__ != "_LiveHookPoint" and "__call__" not in cls.__dict__:
            cls.__call__ = HookPoint._checked_call

    def _checked_call(self, x: Any, step: int | None = None) -> Any:
        if self._live:
            return self._run(x, step)
        return x

    def forward(self, x: Any, step: int | None = None) -> Any:
        return self(x, step)

    # ------------------------------------------------------------------ attaching
    def add_hook(
        self,
        hook: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
        prepend: bool = False,
    ) -> HookHandle:
        """Attach ``hook`` (``fn(activation, hook) -> Tensor | None``); returns its handle."""
        if not callable(hook):
            raise TypeError(
                f"hook for {self._label()} must be callable as fn(activation, hook), "
                f"got {type(hook).__name__}: {hook!r}"
            )
        return HookHandle([(self, dir, self._attach(hook, dir, is_permanent, prepend))])

    def _attach(self, hook: HookFn, dir: str, is_permanent: bool, prepend: bool) -> _Hook:
        hooks = self._hooks(dir)
        entry = _Hook(hook, is_permanent)
        if prepend:
            hooks.insert(0, entry)
        else:
            hooks.append(entry)
        self._refresh()
        return entry

    def add_perma_hook(self, hook: HookFn, dir: Direction = "fwd") -> HookHandle:
        return self.add_hook(hook, dir=dir, is_permanent=True)

    def remove_hooks(
        self, dir: Direction | Literal["both"] = "both", including_permanent: bool = False
    ) -> None:
        """Remove this hook point's hooks (permanent ones only if asked)."""
        for d in ("fwd", "bwd") if dir == "both" else (dir,):
            hooks = self._hooks(d)
            hooks[:] = [h for h in hooks if h.permanent and not including_permanent]
        self._refresh()

    def has_hooks(self, dir: Direction | Literal["both"] = "both", including_permanent: bool = True) -> bool:
        dirs = ("fwd", "bwd") if dir == "both" else (dir,)
        return any(including_permanent or not h.permanent for d in dirs for h in self._hooks(d))

    def clear_context(self) -> None:
        self.ctx.clear()

    @property
    def fwd_hooks(self) -> list[HookFn]:
        """The attached forward hook functions, in the order they run."""
        return [h.fn for h in self._fwd]

    @property
    def bwd_hooks(self) -> list[HookFn]:
        return [h.fn for h in self._bwd]

    @property
    def step(self) -> int:
        """Which call of this hook point in the current forward is running (0, 1, ...)."""
        return self._run_state.step

    # ------------------------------------------------------------------ for recurrent layers
    def active_steps(self) -> frozenset[int] | None:
        """The steps some attached hook needs: ``None`` means every step, an empty set none.

        A recurrent layer uses this to run fused kernels between the steps it must materialise.
        """
        if not self._live:
            return frozenset()
        steps: set[int] = set()
        for h in (*self._fwd, *self._bwd):
            if h.steps is None:
                return None
            steps |= h.steps
        return frozenset(steps)

    @property
    def read_only(self) -> bool:
        """True when every attached hook only reads (so a layer may compute the activation in
        one fused pass and hand it over step by step afterwards)."""
        return not self._bwd and all(h.read_only for h in self._fwd)

    # ------------------------------------------------------------------ internals
    def _hooks(self, dir: str) -> list[_Hook]:
        if dir == "fwd":
            return self._fwd
        if dir == "bwd":
            return self._bwd
        raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")

    def _refresh(self) -> None:
        live = bool(self._fwd or self._bwd)
        set_ = object.__setattr__  # plain attributes: skip nn.Module.__setattr__'s checks
        set_(self, "_live", live)
        if live:
            _keep_restart_out_of_graphs()
            _LIVE.add(self)
        else:
            _LIVE.discard(self)
            self._run_state.calls = 0
        cls = type(self)
        if live and cls is HookPoint:
            set_(self, "__class__", _LiveHookPoint)
        elif not live and cls is _LiveHookPoint:
            set_(self, "__class__", HookPoint)

    def _label(self) -> str:
        return f"hook point {self.name!r}" if self.name else "an unnamed HookPoint"

    def _next_step(self, step: int | None) -> int:
        st = self._run_state
        if step is None:
            step = st.calls
        st.calls = step + 1
        st.step = step
        return step

    def _run(self, x: Any, step: int | None) -> Any:
        step = self._next_step(step)
        for h in tuple(self._fwd):
            if h.steps is not None and step not in h.steps:
                continue
            out = self._call_hook(h.fn, x)
            if out is not None:
                _check_replacement(self, h.fn, x, out, "activation")
                x = out
        if self._bwd and isinstance(x, Tensor) and x.requires_grad:
            x = x.view_as(x)  # a node of its own: the gradient seen is exactly this activation's
            hooks = tuple(self._bwd)
            x.register_hook(lambda grad: self._run_backward(hooks, step, grad))
        return x

    def _run_backward(self, hooks: tuple[_Hook, ...], step: int, grad: Tensor) -> Tensor:
        self._run_state.step = step
        for h in hooks:
            if h.steps is not None and step not in h.steps:
                continue
            out = self._call_hook(h.fn, grad)
            if out is not None:
                _check_replacement(self, h.fn, grad, out, "gradient")
                grad = out
        return grad

    def _call_hook(self, fn: HookFn, x: Any) -> Any:
        try:
            return fn(x, hook=self)
        except Exception as e:
            e.add_note(f"(raised by hook function {_describe(fn)} at {self._label()}, step {self.step})")
            raise

    def extra_repr(self) -> str:
        bits = [f"name={self.name!r}"] if self.name else []
        if self.recurrent:
            bits.append("recurrent")
        if self._fwd:
            bits.append(f"{len(self._fwd)} fwd")
        if self._bwd:
            bits.append(f"{len(self._bwd)} bwd")
        return ", ".join(bits)


class _LiveHookPoint(HookPoint):
    """A plain HookPoint while hooks are attached: its call runs them.

    Switching the class (rather than testing a flag) keeps the inactive call to the bare minimum
    Python allows for a module: ``nn.Module`` defines ``__getattr__``, which makes every attribute
    read on a module slower, so the inactive path reads none.
    """

    def __call__(self, x: Any, step: int | None = None) -> Any:
        return self._run(x, step)


_LiveHookPoint.__qualname__ = "HookPoint"


def _check_replacement(hp: HookPoint, fn: HookFn, old: Any, new: Any, what: str) -> None:
    if not isinstance(old, Tensor):
        return
    where = f"hook function {_describe(fn)} at {hp._label()}"
    if not isinstance(new, Tensor):
        raise HookReturnError(
            f"{where} returned a {type(new).__name__}; a hook must return None or a tensor "
            f"that replaces the {what} (shape {tuple(old.shape)}, {old.dtype}, {old.device})"
        )
    if new.shape != old.shape or new.dtype != old.dtype or new.device != old.device:
        raise HookReturnError(
            f"{where} returned a tensor of shape {tuple(new.shape)}, {new.dtype}, on {new.device}, "
            f"but the {what} it replaces has shape {tuple(old.shape)}, {old.dtype}, on {old.device}"
        )


class HookHandle:
    """Removes exactly the hooks one ``add_hook`` call attached (also usable as a context)."""

    def __init__(self, entries: list[tuple[HookPoint, str, _Hook]]):
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hook_points(self) -> list[HookPoint]:
        return [hp for hp, _, _ in self._entries]

    def remove(self) -> None:
        for hp, dir, entry in self._entries:
            hooks = hp._hooks(dir)
            for i, h in enumerate(hooks):
                if h is entry:
                    del hooks[i]
                    break
            hp._refresh()
        self._entries = []

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @staticmethod
    def merge(handles: Iterable[HookHandle]) -> HookHandle:
        return HookHandle([e for h in handles for e in h._entries])


class _StepHook:
    """A hook function that runs only at some steps (see :func:`at_step`)."""

    __slots__ = ("fn", "steps", "read_only", "__weakref__")

    def __init__(self, fn: HookFn, steps: frozenset[int]):
        self.fn = fn
        self.steps = steps
        self.read_only = _declared_read_only(fn)

    def __call__(self, x: Any, hook: HookPoint) -> Any:
        return self.fn(x, hook=hook)

    def __repr__(self) -> str:
        return f"at_step({sorted(self.steps)}, {_describe(self.fn)})"


def at_step(steps: int | Iterable[int], fn: HookFn) -> HookFn:
    """Restrict ``fn`` to the given step(s) of a recurrent hook point.

    >>> model.run_with_hooks(x, fwd_hooks=[("rnn.hook_h", at_step(3, zero_ablate))])

    Recurrent layers read the steps off the hook and run fused kernels everywhere else.
    """
    if not callable(fn):
        raise TypeError(f"at_step needs a callable hook function, got {type(fn).__name__}")
    steps = frozenset([steps] if isinstance(steps, int) else (int(s) for s in steps))
    if any(s < 0 for s in steps):
        raise ValueError(f"at_step: steps must be >= 0, got {sorted(steps)}")
    return _StepHook(fn, steps)


def read_only(fn: HookFn) -> HookFn:
    """Wrap ``fn`` as a hook that never replaces the activation (its return value is dropped).

    Recurrent layers may then compute the activation in one fused pass and hand it to the hook
    step by step afterwards, instead of unrolling the recurrence.
    """
    if not callable(fn):
        raise TypeError(f"read_only needs a callable hook function, got {type(fn).__name__}")

    def reader(x: Any, hook: HookPoint) -> None:
        fn(x, hook=hook)

    reader.__qualname__ = f"read_only({_describe(fn)})"
    return _declare(reader, steps=_declared_steps(fn), read_only=True)
