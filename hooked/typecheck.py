"""Shape and dtype checks for the public API: jaxtyping annotations enforced by beartype.

Decorate a public function with :func:`typechecked` and annotate its tensors, e.g.
``x: Float[Tensor, "batch instances features"]``; a call with a wrong shape or dtype then fails
with a message naming the argument, the expected shape and the one received.

The checks cost tens of microseconds a call, which matters only for tiny models in tight loops:
turn them off with ``hooked.typecheck.enable(False)``, for a block with ``with
hooked.typecheck.disabled():``, or for a whole process with the environment variable
``HOOKED_TYPECHECK=0``.

An int is accepted where a float is annotated (PEP 484's numeric tower: ``epsilon=1``). A failed
check raises ``jaxtyping.TypeCheckError`` (a TypeError) with a short message: the function, the
argument, what was expected and what came, and the shape axes bound so far; not the dump of every
argument jaxtyping writes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from jaxtyping import Bool, Float, Int, Integer, Num, Shaped, TypeCheckError, jaxtyped

from hooked._object_mounts import objects_attributes_hidden

# beartype hashes every callable attribute of ``object`` when it is first imported. Some libraries
# write unhashable methods into ``object`` (nnsight mounts ``.save`` on every object at import), so
# beartype is imported with those hidden for the moment of its import.
with objects_attributes_hidden():
    from beartype import BeartypeConf, beartype

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
    checked = jaxtyped(typechecker=_BEARTYPE)(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _SWITCH.on:
            try:
                return checked(*args, **kwargs)
            except TypeCheckError as e:
                raise TypeCheckError(_short(str(e))) from None
        return fn(*args, **kwargs)

    return call  # type: ignore[return-value]


_BEARTYPE = beartype(conf=BeartypeConf(is_pep484_tower=True))


def _short(message: str) -> str:
    """jaxtyping's message without the dump of every argument and annotation."""
    head, sep, tail = message.partition("\n----------------------\n")
    if not sep:
        return message
    axes = tail.partition("The current values for each jaxtyping axis annotation are as follows.\n")[2]
    bound = ", ".join(line.strip() for line in axes.splitlines() if line.strip())
    return head.strip() + (f"\nShape axes bound so far: {bound}." if bound else "")
