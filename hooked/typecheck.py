"""Shape and dtype checks for the public API: jaxtyping annotations enforced by beartype.

Decorate a public function with :func:`typechecked` and annotate its tensors, e.g.
``x: Float[Tensor, "batch instances features"]``; a call with a wrong shape or dtype then fails
with a message naming the argument, the expected shape and the one received.

The checks cost tens of microseconds a call, which matters only for tiny models in tight loops:
turn them off with ``hooked.typecheck.enable(False)``, for a block with ``with
hooked.typecheck.disabled():``, or for a whole process with the environment variable
``HOOKED_TYPECHECK=0``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from beartype import beartype
from jaxtyping import Bool, Float, Int, Integer, Num, Shaped, jaxtyped

__all__ = ["Bool", "Float", "Int", "Integer", "Num", "Shaped", "typechecked", "enable", "disabled", "enabled"]

F = TypeVar("F", bound=Callable)


class _Switch:
    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = os.environ.get("HOOKED_TYPECHECK", "1").lower() not in ("0", "false", "no", "off")


_SWITCH = _Switch()


def enabled() -> bool:
    return _SWITCH.on


def enable(on: bool = True) -> None:
    """Turn the checks on or off for the whole process."""
    _SWITCH.on = bool(on)


@contextmanager
def disabled() -> Iterator[None]:
    """Run a block without the checks (e.g. a benchmark or a hot training loop)."""
    before = _SWITCH.on
    _SWITCH.on = False
    try:
        yield
    finally:
        _SWITCH.on = before


def typechecked(fn: F) -> F:
    """Check ``fn``'s annotated arguments and return value at every call while checks are on."""
    checked = jaxtyped(typechecker=beartype)(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _SWITCH.on:
            return checked(*args, **kwargs)
        return fn(*args, **kwargs)

    return call  # type: ignore[return-value]
