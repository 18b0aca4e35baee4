"""Passes and steps: which forward pass a call of a hook point belongs to, and which step it is.

The rule
--------
A **pass** is the outermost *forward* running in a thread, where a forward is one of

* a :class:`~hooked.HookedModule`'s forward (``model(x)`` or ``model.forward(x)``),
* a call of a module wrapped by :func:`hooked.wrap`, while one of its hook points has a hook
  (also when that module is called directly, as ``generate`` does once per new token), or
* a ``with hooked.forward_pass():`` block.

A forward that starts inside another joins its pass. A hook point's **step** (``hook.step``) is
how many times it ran before in the pass: 0, 1, ... (a recurrent layer may pass it explicitly,
``hook_point(h, step=t)``). A pass that raised leaves nothing behind, and two threads never share
one. When the pass ends, an ``at_step`` hook whose step its hook point never reached is reported.

A hook point that runs outside all three (a bare ``HookPoint`` in a plain ``nn.Module``) has no
forward to count in, so it counts within the outermost module call on the thread's stack
(``module(x)``, or ``module.forward(x)`` called directly), or within its own call when no module
runs at all. Only this fallback decides anything by looking at the stack: a plain module's call
tells nothing to anyone (PyTorch's global module hooks would, at the price of putting every
module call of the process on PyTorch's slow path, and they still miss ``module.forward(x)``).
Two checks look at it too: whether a wrapped module's call is still running (PyTorch skips the
``always_call`` hook that ends it when a ``BaseException`` such as ``KeyboardInterrupt`` passes),
and which line of the user's code a warning about an unreached step should name.

Interface (for :mod:`hooked.hook_point`, :mod:`hooked.hooked_module` and :mod:`hooked.wrapping`)
------------------------------------------------------------------------------------------------
=====================================  ==========================================================
``attached(on)``                       hook points say when the first hook anywhere is attached
                                       (True), and when one is left with none while none has any
``enter()``                            a HookedModule forward starts; says whether it opened the
                                       pass
``leave(opened, finished)``            it ends (``finished``: it returned, it did not raise)
``forward_pass()``                     the ``with`` block (public as ``hooked.forward_pass``)
``count_calls(module)``                make each call of a wrapped module a forward; returns the
                                       two PyTorch handles that undo it
``count(point, step)``                 count a call of ``point`` in its pass; returns its step
``step_of(point)``                     the step of ``point``'s running call (``hook.step``)
``backward_step(point, step)``         ``with`` block around a backward hook: ``hook.step`` is the
                                       step of the forward call whose gradient it sees
``ran_steps(point, n)``                a fused recurrent layer ran ``n`` steps without calling
                                       ``point`` at each
``expect_steps(point, unreached)``     ``point`` has ``at_step`` hooks: ``unreached(ran)`` gives
                                       the messages to warn with when a pass it ran in ends
=====================================  ==========================================================

HookedModule forwards call ``enter`` / ``leave`` only while ``hooked.hook_point.any_live`` says
that some hook is attached: with none, there is nothing to count.

``torch.compile``: the functions that look at the stack cannot be traced, so compiled code calls
them through ``torch.compiler.disable`` twins, made when the first hook is attached (importing
``torch._dynamo`` costs about a second, too much for ``import hooked``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class _Pass:
    """One pass in one thread: how many times each hook point has run in it so far.

    ``frame`` is the frame the pass spans when it was not opened by a forward with a ``finally``
    of its own: a wrapped module's ``nn.Module._call_impl``, or, for hook points outside every
    forward, the outermost module call (``None`` outside any module).
    """

    __slots__ = ("calls", "frame")

    def __init__(self, frame: FrameType | None = None) -> None:
        self.calls: dict[Any, int] = {}
        self.frame = frame


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.depth = 0  # HookedModule forwards and forward_pass blocks running in this thread
        self.pass_: _Pass | None = None  # the outermost forward's pass (at depth 0: a wrapped call's)
        self.bare: _Pass | None = None  # the pass of hook points that run outside every forward
        self.backward: tuple[Any, int] | None = None  # (point, step) while a backward hook runs


_STATE = _ThreadState()
# id(point) -> weak method giving the messages for its unreached at_step hooks (empty: no check)
_EXPECTING: dict[int, weakref.WeakMethod] = {}


# ---------------------------------------------------------------------------------- forwards
def enter() -> bool:
    """A forward starts: it opens a pass unless one is running in this thread (returns whether).
    Call :func:`leave` when it ends, in a ``finally``."""
    st = _STATE
    p = st.pass_
    opened = not st.depth and not (p is not None and _running(p.frame))  # (a wrapped call's pass)
    if opened:
        st.pass_ = _Pass()
    st.depth += 1
    return opened


def leave(opened: bool, finished: bool) -> None:
    """A forward ends (``opened``: what :func:`enter` returned; ``finished``: it returned, it did
    not raise)."""
    st = _STATE
    st.depth -= 1
    if opened:
        p = st.pass_
        st.pass_ = None
        st.depth = 0  # the outermost forward ended: nothing it started can still run
        if finished and _EXPECTING and p is not None:
            _report_unreached(p)


@contextlib.contextmanager
def forward_pass() -> Iterator[None]:
    """A ``with`` block that is one forward pass: the hook points that run in it count their steps
    from 0 in one pass (unless a forward already runs in this thread: then the block joins it).

    >>> with hooked.forward_pass():
    ...     for t in range(T):
    ...         h = cell(x[:, t], h)   # cell.hook_h sees hook.step == t

    Use it to make one pass of several forwards (a recurrence driven from Python), or to give
    hook points outside any HookedModule a pass of their own. When the block ends without an
    exception, ``at_step`` hooks whose steps were never reached are reported.
    """
    opened = enter()
    finished = False
    try:
        yield
        finished = True
    finally:
        leave(opened, finished)


# ------------------------------------------------------------------ calls of a wrapped module
def _open_at_call(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: a call of the module opens a pass unless a forward runs in this thread."""
    st = _STATE
    p = st.pass_
    if st.depth or (p is not None and _running(p.frame)):
        return
    st.pass_ = _Pass(_nearest_module_call())


def _close_at_return(module: nn.Module, args: Any, output: Any) -> None:
    """Forward hook (``always_call``): the pass a call of the module opened ends with that call."""
    st = _STATE
    p = st.pass_
    if not st.depth and p is not None and p.frame is not None and p.frame is _nearest_module_call():
        st.pass_ = None
        if _EXPECTING and sys.exc_info()[1] is None:  # not when the call raised
            _report_unreached(p)


def count_calls(module: nn.Module) -> tuple[RemovableHandle, RemovableHandle]:
    """Make each call of ``module`` a forward; remove both returned handles to undo it."""
    twins = _outside_graphs()
    return (
        module.register_forward_pre_hook(twins.open_at_call),
        module.register_forward_hook(twins.close_at_return, always_call=True),
    )


# ---------------------------------------------------------------------------- hook points
def count(point: Any, step: int | None) -> int:
    """Count a call of ``point`` in its pass; returns its step (``step`` itself if given)."""
    st = _STATE
    if st.depth:
        p = st.pass_
    elif torch.compiler.is_compiling():
        p = _outside_graphs().pass_outside_forwards()
    else:
        p = _pass_outside_forwards()
    calls = p.calls  # type: ignore[union-attr]
    if step is None:
        step = calls.get(point, 0)
    calls[point] = step + 1
    return step


def step_of(point: Any) -> int:
    """The step of ``point``'s running (or last) call in this thread; in a backward hook, the step
    of the forward call whose gradient it sees."""
    st = _STATE
    b = st.backward
    if b is not None and b[0] is point:
        return b[1]
    p = st.pass_ if st.depth or st.pass_ is not None else st.bare
    n = p.calls.get(point, 0) if p is not None else 0
    return n - 1 if n else 0


@contextlib.contextmanager
def backward_step(point: Any, step: int) -> Iterator[None]:
    """While the block runs, ``step_of(point)`` is ``step`` (a backward hook of that call runs)."""
    st = _STATE
    outer = st.backward
    st.backward = (point, step)
    try:
        yield
    finally:
        st.backward = outer


def ran_steps(point: Any, n: int) -> None:
    """``point``'s sequence had ``n`` steps in the running pass, whether or not it was called at
    each (a fused layer skips the steps no hook needs): its ``at_step`` hooks beyond ``n`` are
    then reported as if every step had run."""
    if id(point) not in _EXPECTING:
        return  # no at_step hook here: nothing to report
    st = _STATE
    p = st.pass_ if st.depth else _pass_outside_forwards()
    if p is not None and p.calls.get(point, 0) < n:
        p.calls[point] = n


def expect_steps(point: Any, unreached: Callable[[int], list[str]] | None) -> None:
    """``point`` has ``at_step`` hooks (``unreached`` given) or none (``None``). When a pass in
    which it ran ``ran`` times ends, each message of ``unreached(ran)`` is warned (a weak
    reference: a collected hook point drops out)."""
    key = id(point)
    if unreached is None:
        _EXPECTING.pop(key, None)
    elif key not in _EXPECTING:
        _EXPECTING[key] = weakref.WeakMethod(unreached, lambda _, key=key: _EXPECTING.pop(key, None))  # type: ignore[arg-type]


def attached(on: bool) -> None:
    """The first hook anywhere was attached (``on``: make the compile twins), or a hook point was
    left with none while none has any (let go of this thread's idle passes and their frames)."""
    if on:
        _outside_graphs()
    elif not _STATE.depth:
        _STATE.pass_ = _STATE.bare = None


def _report_unreached(p: _Pass) -> None:
    for ref in tuple(_EXPECTING.values()):
        unreached = ref()
        if unreached is None:
            continue  # the hook point is gone
        ran = p.calls.get(unreached.__self__)
        if ran is None:
            continue  # the hook point did not run in this pass (another branch of the model)
        for message in unreached(ran):
            warnings.warn(message, UserWarning, stacklevel=_callers_level())


_LIBRARY_FILES = (
    os.path.dirname(torch.__file__) + os.sep,
    os.path.dirname(__file__) + os.sep,  # hooked
    contextlib.__file__,  # forward_pass's __exit__
)


def _callers_level() -> int:
    """The ``stacklevel`` that makes a warning name the first frame outside hooked and torch."""
    level, f = 1, sys._getframe(1)
    while f.f_back is not None and f.f_code.co_filename.startswith(_LIBRARY_FILES):
        f, level = f.f_back, level + 1
    return level


# ------------------------------------------------------------------ the stack (see the rule)
def _pass_outside_forwards() -> _Pass:
    """The pass of a hook point that runs while no HookedModule forward or ``forward_pass`` block
    does: a wrapped module's call still running, else the outermost module call's."""
    st = _STATE
    p = st.pass_
    if p is not None:
        if _running(p.frame):
            return p
        st.pass_ = None  # a wrapped call that a BaseException ended
    b = st.bare
    if b is None or not _running(b.frame):
        b = st.bare = _Pass(_outermost_module_call())
    return b


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


class _Twins(NamedTuple):
    pass_outside_forwards: Callable[[], _Pass]
    open_at_call: Callable[[nn.Module, Any], None]
    close_at_return: Callable[[nn.Module, Any, Any], None]


_TWINS: _Twins | None = None


def _outside_graphs() -> _Twins:
    """The functions that look at the stack, run outside ``torch.compile`` graphs (made once)."""
    global _TWINS
    if _TWINS is None:

        def off(fn: Callable[..., Any]) -> Any:  # torch's annotation mixes in disable()'s no-argument form
            return torch.compiler.disable(fn)

        _TWINS = _Twins(off(_pass_outside_forwards), off(_open_at_call), off(_close_at_return))
    return _TWINS
