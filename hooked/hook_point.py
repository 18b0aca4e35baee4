"""HookPoint: the identity module a model places wherever an activation should be readable or
editable, the handles that remove the hooks attached to it, and the per-forward step counter.

A hook function has TransformerLens's signature ``fn(activation, hook)`` and returns ``None``
(read only) or a tensor that replaces the activation. Forward hooks run in the order they were
added (``prepend=True`` puts one first); backward hooks see the gradient of the activation as the
rest of the model used it, and may replace it too (returning a tensor or TransformerLens's
one-tuple ``(grad,)``).

Design notes
------------
* **Inactive cost.** ``HookPoint.__call__`` is overridden: with nothing attached it tests one flag
  and returns its input, not a trip through ``nn.Module.__call__`` (which TransformerLens pays at
  every hook point of every forward). Inside a :class:`~hooked.HookedModule` the hook point is also
  found by plain attribute lookup (see :mod:`hooked.fast_lookup`), so ``self.hook_x(x)`` in a
  forward costs about as much as calling a function stored on ``self``.
* **Steps.** A hook point may run several times in one forward (once per step of an unrolled
  RNN). ``hook.step`` is the index of the running call of this hook point within the current
  forward pass of the current thread. A *pass* is, per thread: the outermost
  :class:`~hooked.HookedModule` forward running (called as ``model(x)`` or ``model.forward(x)``);
  else, for a model wrapped by :func:`hooked.wrap` that has a hook attached, each call of the
  wrapped module (also when called directly, or by ``generate``); else the outermost module call
  on the thread's stack, ``module(x)`` or ``module.forward(x)`` (a bare HookPoint in a plain
  module; a hook point called outside any module is a pass of its own). Each pass counts its
  calls in an object of its own, so a pass that raised leaves nothing behind and two threads
  never share a count. A recurrent layer that runs fused segments between hooked steps passes the
  step explicitly (``hook_point(h, step=t)``) and asks :meth:`HookPoint.active_steps` which steps
  it must materialise. A hook function restricted with :func:`at_step` runs only at those steps.
* **Backward hooks** are attached to the activation tensor during the forward pass, so they
  fire in the backward pass that follows even after ``run_with_hooks`` has removed them from the
  hook point; they only ever see the graph of the forward they were live for.
* **PyTorch's own module hooks** (``register_forward_hook`` and friends) work on a HookPoint as on
  TransformerLens's: while one is registered, the call goes through ``nn.Module.__call__``
  around an identity ``forward``; they run before the hooks added with ``add_hook``.
"""

from __future__ import annotations

import operator
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hooked.errors import HookReturnError

HookFn = Callable[..., Any]
Direction = Literal["fwd", "bwd"]
Directions = Literal["fwd", "bwd", "both"]


# ---------------------------------------------------------------------------------- passes
class _Pass:
    """One forward pass in one thread: how many times each hook point has run in it so far.

    ``frame`` is the frame whose execution the pass spans (a module call), or ``None`` for a pass
    opened by a HookedModule forward (which closes it itself, in a ``finally``).
    """

    __slots__ = ("calls", "frame")

    def __init__(self, frame: FrameType | None = None) -> None:
        self.calls: dict[HookPoint, int] = {}
        self.frame = frame


class _ThreadState(threading.local):
    """This thread's open pass, and the step a running backward hook sees."""

    def __init__(self) -> None:
        self.depth = 0  # HookedModule forwards running in this thread
        self.pass_: _Pass | None = None
        self.backward: tuple[HookPoint, int] | None = None


_STATE = _ThreadState()
# id -> weak reference of every hook point with something attached; ``_ANY_LIVE`` is
# ``bool(_LIVE)``, read on the hot path: while it is False, no forward does any step bookkeeping.
# (A plain bool, not the dict: ``torch.compile`` guards a global bool by its value, but would guard
# each entry of the dict, which the garbage collector may remove while it compiles.)
_LIVE: dict[int, weakref.ref] = {}
_ANY_LIVE = False


def _forget_live(key: int) -> None:
    """Take hook point ``key`` off ``_LIVE`` (detached, or collected)."""
    global _ANY_LIVE
    _LIVE.pop(key, None)
    _ANY_LIVE = bool(_LIVE)


# The same for the hook points among them with an ``at_step`` hook: when a pass ends, each is
# checked for steps it never reached (read as ``if _STEPPED``; empty, nothing is checked).
_STEPPED: dict[int, weakref.ref] = {}

_CALL_IMPL = nn.Module._call_impl.__code__
_MODULE_CALLS = frozenset(
    {_CALL_IMPL, getattr(nn.Module, "_wrapped_call_impl", nn.Module._call_impl).__code__}
)


def _running(frame: FrameType | None) -> bool:
    """True while ``frame`` executes in this thread (it is on this thread's stack)."""
    if frame is None:
        return False
    f: FrameType | None = sys._getframe(1)
    while f is not None:
        if f is frame:
            return True
        f = f.f_back
    return False


def _outermost_module_call() -> FrameType | None:
    """The frame of the outermost module call running in this thread: ``module(...)``, or a
    module's ``forward`` called directly (None if none)."""
    outer = None
    f: FrameType | None = sys._getframe(1)
    while f is not None:
        code = f.f_code
        if code in _MODULE_CALLS or (
            code.co_name == "forward"
            and code.co_argcount
            and isinstance(f.f_locals.get(code.co_varnames[0]), nn.Module)
        ):
            outer = f
        f = f.f_back
    return outer


def _nearest_module_call() -> FrameType | None:
    """The frame of ``nn.Module._call_impl`` for the innermost module call running here."""
    f: FrameType | None = sys._getframe(1)
    while f is not None and f.f_code is not _CALL_IMPL:
        f = f.f_back
    return f


def _frame_pass() -> _Pass:
    """The pass a hook point joins when no HookedModule forward runs in this thread: the one
    still running (opened by a wrapped module's call, or earlier in this module call), else a new
    one spanning the outermost module call."""
    st = _STATE
    p = st.pass_
    if p is None or not _running(p.frame):
        p = st.pass_ = _Pass(_outermost_module_call())
    return p


def _count_call(hp: HookPoint, step: int | None) -> int:
    """Count a call of ``hp`` in the current pass; returns its step (``step`` if given)."""
    st = _STATE
    if st.depth:
        p = st.pass_
    elif torch.compiler.is_compiling():
        p = _frame_pass_outside_graphs()
    else:
        p = _frame_pass()
    calls = p.calls  # type: ignore[union-attr]
    if step is None:
        step = calls.get(hp, 0)
    calls[hp] = step + 1
    return step


def _enter_forward() -> tuple[_Pass | None, bool]:
    """A HookedModule forward starts: open a pass unless one is running in this thread."""
    st = _STATE
    prev = st.pass_
    opened = not st.depth and not _running(prev.frame if prev is not None else None)
    if opened:
        st.pass_ = _Pass()
    st.depth += 1
    return prev, opened


def _leave_forward(token: tuple[_Pass | None, bool], finished: bool = False) -> None:
    """A HookedModule forward ends (``finished``: it returned, it did not raise)."""
    prev, opened = token
    st = _STATE
    st.depth -= 1
    if opened:
        if finished and _STEPPED and st.pass_ is not None:
            _report_unreached(st.pass_)
        st.depth = 0  # the outermost forward ended: nothing it started can still run
        st.pass_ = None if prev is None or not _running(prev.frame) else prev


def _open_at_module_call(module: nn.Module, args: Any) -> None:
    """Forward pre-hook (on a wrapped module while it has live hook points): a call of the
    module is a pass, unless one is already running in this thread."""
    st = _STATE
    if st.depth or (st.pass_ is not None and _running(st.pass_.frame)):
        return
    st.pass_ = _Pass(_nearest_module_call())


def _close_at_module_return(module: nn.Module, args: Any, output: Any) -> None:
    """Forward hook (``always_call``): the pass this module call opened ends with it."""
    st = _STATE
    p = st.pass_
    if not st.depth and p is not None and p.frame is not None and p.frame is _nearest_module_call():
        st.pass_ = None
        if _STEPPED and sys.exc_info()[1] is None:  # not when the call raised
            _report_unreached(p)


def _report_unreached(p: _Pass) -> None:
    """Warn about each ``at_step`` hook of a hook point that ran in pass ``p`` but fewer times
    than the hook's last step needs (the hook never fired at those steps)."""
    for ref in tuple(_STEPPED.values()):
        hp = ref()
        ran = None if hp is None else p.calls.get(hp)
        if ran is None:
            continue  # the hook point did not run in this pass (another branch of the model)
        for h in (*hp._fwd, *hp._bwd):
            missed = sorted(s for s in h.steps or () if s >= ran)
            if missed:
                warnings.warn(
                    f"at_step: hook function {_describe(h.fn)} at {hp._label()} is restricted to "
                    f"step(s) {missed}, but that hook point ran only {ran} step(s) in this forward "
                    f"(steps 0..{ran - 1}); it never fired there",
                    UserWarning,
                    stacklevel=4,
                )


_frame_pass_outside_graphs: Callable[[], _Pass] = _frame_pass


def _keep_out_of_graphs() -> None:
    """Frame inspection cannot be traced by ``torch.compile``: under compilation it runs in a
    disabled function. Wrapped when the first hook is attached, not at import (importing
    ``torch._dynamo`` costs about a second)."""
    global _frame_pass_outside_graphs, _open_at_module_call, _close_at_module_return
    if _frame_pass_outside_graphs is _frame_pass:
        _frame_pass_outside_graphs = torch.compiler.disable(_frame_pass)
        _open_at_module_call = torch.compiler.disable(_open_at_module_call)
        _close_at_module_return = torch.compiler.disable(_close_at_module_return)


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
    """One attached hook function and how it was attached.

    The entries of ``hook_point.fwd_hooks`` / ``bwd_hooks``, with the fields of TransformerLens's
    ``LensHandle``: ``is_permanent``, ``context_level``, ``user_hook`` (the function as passed to
    ``add_hook``) and ``hook`` (``.hook.remove()`` detaches it).
    """

    __slots__ = ("fn", "is_permanent", "context_level", "steps", "read_only", "_point", "_dir")

    def __init__(self, point: HookPoint, dir: str, fn: HookFn, is_permanent: bool, context_level: int | None):
        self.fn = fn
        self.is_permanent = is_permanent
        self.context_level = context_level
        self.steps = _declared_steps(fn)
        self.read_only = _declared_read_only(fn)
        self._point = weakref.ref(point)  # no reference cycle: a dropped model is freed at once
        self._dir = dir

    @property
    def user_hook(self) -> HookFn:
        return self.fn

    @property
    def hook(self) -> HookHandle:
        """A handle whose ``remove()`` detaches this hook (TransformerLens: ``handle.hook.remove()``)."""
        point = self._point()
        return HookHandle([] if point is None else [(point, self._dir, self)])

    def remove(self) -> None:
        self.hook.remove()

    def __repr__(self) -> str:
        bits = [_describe(self.fn)]
        if self.is_permanent:
            bits.append("permanent")
        if self.context_level is not None:
            bits.append(f"level={self.context_level}")
        point = self._point()
        return f"<{self._dir} hook {', '.join(bits)} at {point._label() if point is not None else '?'}>"


def _describe(fn: HookFn) -> str:
    inner = getattr(fn, "func", None) or getattr(fn, "fn", None) or fn
    return getattr(inner, "__qualname__", None) or type(inner).__name__


def _matches(h: _Hook, including_permanent: bool, level: int | None) -> bool:
    """Whether a hook is in scope for ``has_hooks`` / ``remove_hooks`` / ``list_hooks`` (as TL)."""
    if h.is_permanent and not including_permanent:
        return False
    return level is None or h.context_level == level


def _directions(dir: str) -> tuple[str, ...]:
    if dir == "both":
        return ("fwd", "bwd")
    if dir in ("fwd", "bwd"):
        return (dir,)
    raise ValueError(f"dir must be 'fwd', 'bwd' or 'both', got {dir!r}")


class HookPoint(nn.Module):
    """An identity module: ``hook_point(x)`` returns ``x`` unless hooks are attached.

    Args:
        recurrent: the activation is produced once per time step; caches always stack it
            along ``time_dim``, even for a sequence of one step.
        time_dim: the axis a cache stacks repeated calls along (1 gives ``[batch, time, ...]``).
        pos_dim: the position axis of the activation, for ``run_with_cache(pos_slice=...)``
            (TransformerLens's ``HookPoint.pos_dim``); ``None``: axis 1, or -2 for names ending in
            ``hook_pattern`` / ``hook_attn_scores``.
    """

    def __init__(self, *, recurrent: bool = False, time_dim: int = 1, pos_dim: int | None = None):
        super().__init__()
        self.name: str | None = None
        self.recurrent = recurrent
        self.time_dim = time_dim
        self.pos_dim = pos_dim
        self.ctx: dict[str, Any] = {}
        self._fwd: list[_Hook] = []
        self._bwd: list[_Hook] = []
        self._torch_hooks = False  # something was registered with PyTorch's register_*_hook
        self._live = False

    # ------------------------------------------------------------------ the hot path
    def __call__(self, x: Any, step: int | None = None) -> Any:
        # Reads no attribute of self while nothing is attached anywhere: an nn.Module's
        # attributes are slow to read (its __getattr__ keeps the interpreter's fast paths off).
        if _ANY_LIVE and self._live:
            return self._run(x, step)
        return x

    def forward(self, x: Any, step: int | None = None) -> Any:
        """The identity (hooks run in ``__call__``, as PyTorch's module hooks run around ``forward``)."""
        return x

    # ------------------------------------------------------------------ attaching
    def add_hook(
        self,
        hook: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: int | None = None,
        prepend: bool = False,
    ) -> HookHandle:
        """Attach ``hook`` (``fn(activation, hook) -> Tensor | None``); returns its handle.

        Args:
            dir: ``"fwd"`` (the activation) or ``"bwd"`` (its gradient).
            is_permanent: survives ``reset_hooks()`` / ``remove_hooks()`` unless they include
                permanent hooks.
            level: the ``hooks()`` context level it belongs to (TransformerLens's metadata).
            prepend: run it before the hooks already attached.
        """
        if not callable(hook):
            raise TypeError(
                f"hook for {self._label()} must be callable as fn(activation, hook), "
                f"got {type(hook).__name__}: {hook!r}"
            )
        return HookHandle([(self, dir, self._attach(hook, dir, is_permanent, prepend, level))])

    def _attach(
        self, hook: HookFn, dir: str, is_permanent: bool, prepend: bool, level: int | None = None
    ) -> _Hook:
        hooks = self._hooks(dir)
        entry = _Hook(self, dir, hook, is_permanent, level)
        if prepend:
            hooks.insert(0, entry)
        else:
            hooks.append(entry)
        self._refresh()
        return entry

    def add_perma_hook(self, hook: HookFn, dir: Direction = "fwd") -> HookHandle:
        return self.add_hook(hook, dir=dir, is_permanent=True)

    def remove_hooks(
        self, dir: Directions = "fwd", including_permanent: bool = False, level: int | None = None
    ) -> None:
        """Remove this hook point's hooks: forward ones by default (as TransformerLens), both
        directions with ``dir="both"``; permanent ones only if asked; only one ``hooks()``
        context level's with ``level``."""
        for d in _directions(dir):
            hooks = self._hooks(d)
            hooks[:] = [h for h in hooks if not _matches(h, including_permanent, level)]
        self._refresh()

    def has_hooks(
        self, dir: Directions = "both", including_permanent: bool = True, level: int | None = None
    ) -> bool:
        return any(_matches(h, including_permanent, level) for d in _directions(dir) for h in self._hooks(d))

    def clear_context(self) -> None:
        self.ctx = {}

    @property
    def fwd_hooks(self) -> list[_Hook]:
        """The attached forward hooks, in the order they run (TransformerLens's ``LensHandle``
        fields: ``is_permanent``, ``context_level``, ``user_hook``, ``hook.remove()``)."""
        return list(self._fwd)

    @property
    def bwd_hooks(self) -> list[_Hook]:
        return list(self._bwd)

    @property
    def step(self) -> int:
        """Which call of this hook point in the current forward pass of this thread is running
        (0, 1, ...); in a backward hook, the step of the forward call whose gradient it sees."""
        st = _STATE
        b = st.backward
        if b is not None and b[0] is self:
            return b[1]
        p = st.pass_
        n = p.calls.get(self, 0) if p is not None else 0
        return n - 1 if n else 0

    def layer(self) -> int:
        """The block index in this hook point's name (``blocks.3.attn.hook_q`` -> 3; the first
        all-digit part of the dotted name, so ``model.layers.3.mlp.hook_out`` -> 3 too)."""
        if self.name is None:
            raise ValueError("this hook point has no name (it is not part of a HookedModule's hook_dict)")
        for part in self.name.split("."):
            if part.isdigit():
                return int(part)
        raise ValueError(f"hook point name {self.name!r} has no layer index (no all-digit part)")

    # ------------------------------------------------------------------ PyTorch's module hooks
    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_forward_pre_hook(*args, **kwargs))

    def register_forward_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_forward_hook(*args, **kwargs))

    def register_full_backward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_full_backward_pre_hook(*args, **kwargs))

    def register_full_backward_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_full_backward_hook(*args, **kwargs))

    def register_backward_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_backward_hook(*args, **kwargs))

    def _torch_hook(self, handle: Any) -> Any:
        object.__setattr__(self, "_torch_hooks", True)
        self._refresh()
        return handle

    def _has_torch_hooks(self) -> bool:
        return bool(
            self._forward_pre_hooks or self._forward_hooks or self._backward_pre_hooks or self._backward_hooks
        )

    # ------------------------------------------------------------------ for recurrent layers
    def active_steps(self) -> frozenset[int] | None:
        """The steps some attached hook needs: ``None`` means every step, an empty set none.

        A recurrent layer uses this to run fused kernels between the steps it must materialise.
        """
        if not self._live:
            return frozenset()
        if self._torch_hooks and self._has_torch_hooks():
            return None
        steps: set[int] = set()
        for h in (*self._fwd, *self._bwd):
            if h.steps is None:
                return None
            steps |= h.steps
        return frozenset(steps)

    def ran_steps(self, n: int) -> None:
        """Tell the running pass that this recurrent hook point's sequence has ``n`` steps, for a
        layer that skips calling it at steps no hook needs (fused kernels): an ``at_step`` hook
        beyond the sequence is then reported when the forward ends, as if every step had run."""
        if id(self) not in _STEPPED:
            return  # no at_step hook here: nothing to report
        st = _STATE
        p = st.pass_ if st.depth else _frame_pass()
        if p is not None and p.calls.get(self, 0) < n:
            p.calls[self] = n

    @property
    def read_only(self) -> bool:
        """True when every attached hook only reads (so a layer may compute the activation in
        one fused pass and hand it over step by step afterwards)."""
        if self._torch_hooks and self._has_torch_hooks():
            return False
        return not self._bwd and all(h.read_only for h in self._fwd)

    # ------------------------------------------------------------------ internals
    def _hooks(self, dir: str) -> list[_Hook]:
        if dir == "fwd":
            return self._fwd
        if dir == "bwd":
            return self._bwd
        raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")

    def _refresh(self) -> None:
        set_ = object.__setattr__  # plain attributes: skip nn.Module.__setattr__'s checks
        if self._torch_hooks and not self._has_torch_hooks():
            set_(self, "_torch_hooks", False)
        live = bool(self._fwd or self._bwd or self._torch_hooks)
        set_(self, "_live", live)
        key = id(self)
        if live:
            _keep_out_of_graphs()
            if key not in _LIVE:
                global _ANY_LIVE
                _LIVE[key] = weakref.ref(self, lambda _, key=key: _forget_live(key))
                _ANY_LIVE = True
        else:
            _forget_live(key)
        if live and any(h.steps is not None for h in (*self._fwd, *self._bwd)):
            if key not in _STEPPED:
                _STEPPED[key] = weakref.ref(self, lambda _, key=key: _STEPPED.pop(key, None))
        else:
            _STEPPED.pop(key, None)
        if not live:
            st = _STATE
            if not _LIVE and not st.depth:
                st.pass_ = None  # let go of the frame a bare hook point's pass refers to

    def _label(self) -> str:
        return f"hook point {self.name!r}" if self.name else "an unnamed HookPoint"

    def _run(self, x: Any, step: int | None) -> Any:
        step = _count_call(self, step)
        if self._torch_hooks:
            if self._has_torch_hooks():
                x = nn.Module.__call__(self, x)
            else:
                self._refresh()
        for h in tuple(self._fwd):
            if h.steps is not None and step not in h.steps:
                continue
            out = self._call_hook(h.fn, x, step)
            if out is not None:
                _check_replacement(self, h.fn, x, out, "activation")
                x = out
        if self._bwd and isinstance(x, Tensor) and x.requires_grad:
            x = x.view_as(x)  # a node of its own: the gradient seen is exactly this activation's
            hooks = tuple(self._bwd)
            x.register_hook(lambda grad: self._run_backward(hooks, step, grad))
        return x

    def _run_backward(self, hooks: tuple[_Hook, ...], step: int, grad: Tensor) -> Tensor:
        st = _STATE
        outer = st.backward
        st.backward = (self, step)
        try:
            for h in hooks:
                if h.steps is not None and step not in h.steps:
                    continue
                out = self._call_hook(h.fn, grad, step)
                if isinstance(out, tuple) and len(out) == 1:
                    out = out[0]  # TransformerLens's backward hooks may return (grad,)
                if out is not None:
                    _check_replacement(self, h.fn, grad, out, "gradient")
                    grad = out
        finally:
            st.backward = outer
        return grad

    def _call_hook(self, fn: HookFn, x: Any, step: int) -> Any:
        try:
            return fn(x, hook=self)
        except Exception as e:
            e.add_note(f"(raised by hook function {_describe(fn)} at {self._label()}, step {step})")
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


def _step_arg(s: Any) -> int:
    if isinstance(s, bool):
        raise TypeError(f"at_step: a step must be an int, got the bool {s!r}")
    try:
        step = operator.index(s)
    except TypeError:
        raise TypeError(f"at_step: a step must be an int, got {type(s).__name__}: {s!r}") from None
    if step < 0:
        raise ValueError(f"at_step: steps must be >= 0, got {step}")
    return step


def at_step(steps: int | Iterable[int], fn: HookFn) -> HookFn:
    """Restrict ``fn`` to the given step(s) of a recurrent hook point.

    >>> model.run_with_hooks(x, fwd_hooks=[("rnn.hook_h", at_step(3, zero_ablate))])

    ``steps`` is a non-negative int (Python, numpy or a 0-d tensor) or a non-empty iterable of
    them; a string, a bool, a float or None is a TypeError, a negative step or no step at all a
    ValueError. Recurrent layers read the steps off the hook and run fused kernels everywhere
    else. A step the hook point never reaches in a forward (past the end of the sequence) is
    reported by a UserWarning when the forward ends (a HookedModule forward or a call of a
    ``hooked.wrap`` model; a bare hook point in a plain module has no end of forward to check at).
    """
    if not callable(fn):
        raise TypeError(f"at_step needs a callable hook function, got {type(fn).__name__}")
    if isinstance(steps, (str, bytes, bytearray)):
        raise TypeError(
            f"at_step: steps must be an int or an iterable of ints, got the {type(steps).__name__} {steps!r}"
        )
    if isinstance(steps, Iterable) and not (isinstance(steps, Tensor) and steps.dim() == 0):
        items = list(steps)
        try:
            chosen = frozenset(_step_arg(s) for s in items)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{e} (in the {type(steps).__name__} {_short(steps)})") from None
        if not chosen:
            raise ValueError(
                f"at_step: no steps given (an empty {type(steps).__name__}); the hook would never run"
            )
    else:
        chosen = frozenset([_step_arg(steps)])
    return _StepHook(fn, chosen)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
