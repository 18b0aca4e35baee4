"""Hook functions and what they declare: :func:`at_step` (run only at some steps) and
:func:`read_only` (never replace the activation).

A hook function is any callable ``fn(activation, hook) -> Tensor | None``. It may carry two
attributes, which :class:`~hooked.HookPoint` reads when the hook is attached (to skip the other
steps, and to tell a recurrent layer through ``active_steps()`` / ``read_only`` which steps it must
materialise and whether fused kernels may compute the activation); nothing else reads or sets them:

====================  ===================================================================
``steps``             ``frozenset[int]`` of the steps it runs at; ``None`` (or absent): every step
``read_only``         ``bool``: it never replaces the activation (its return value is dropped)
====================  ===================================================================

:func:`at_step` and :func:`read_only` are the public ways to declare them; :func:`declare` sets
them on a function in place (for the library's own hooks, which need no extra call layer).
A hook's step is :attr:`HookPoint.step` (see :mod:`hooked._steps` for what counts as a pass).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

HookFn = Callable[..., Any]


def declare(fn: HookFn, *, steps: Iterable[int] | None = None, read_only: bool | None = None) -> HookFn:
    """Set the declared attributes on ``fn`` (a plain function or any object that takes them); returns it."""
    if steps is not None:
        fn.steps = frozenset(int(s) for s in steps)  # type: ignore[attr-defined]
    if read_only is not None:
        fn.read_only = read_only  # type: ignore[attr-defined]
    return fn


def declared_steps(fn: HookFn) -> frozenset[int] | None:
    """The steps ``fn`` runs at (``None``: every step)."""
    steps = getattr(fn, "steps", None)
    return None if steps is None else frozenset(int(s) for s in steps)


def declared_read_only(fn: HookFn) -> bool:
    """Whether ``fn`` declares that it never replaces the activation."""
    return bool(getattr(fn, "read_only", False))


def describe(fn: HookFn) -> str:
    """A hook function's name for messages (the function inside an ``at_step`` / ``partial`` wrapper)."""
    inner = getattr(fn, "func", None) or getattr(fn, "fn", None) or fn
    return getattr(inner, "__qualname__", None) or type(inner).__name__


class _StepHook:
    """A hook function that runs only at some steps (see :func:`at_step`)."""

    __slots__ = ("fn", "steps", "read_only", "__weakref__")

    def __init__(self, fn: HookFn, steps: frozenset[int]):
        self.fn = fn
        self.steps = steps
        self.read_only = declared_read_only(fn)

    def __call__(self, x: Any, hook: Any) -> Any:
        return self.fn(x, hook=hook)

    def __repr__(self) -> str:
        return f"at_step({sorted(self.steps)}, {describe(self.fn)})"


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
    else. A step the hook point never reaches in a pass (past the end of the sequence) is reported
    by a UserWarning when the pass ends (a HookedModule forward, a call of a ``hooked.wrap`` model
    or a ``hooked.forward_pass()`` block; a bare hook point in a plain module has no end of pass
    to check at).
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

    def reader(x: Any, hook: Any) -> None:
        fn(x, hook=hook)

    reader.__qualname__ = f"read_only({describe(fn)})"
    return declare(reader, steps=declared_steps(fn), read_only=True)
