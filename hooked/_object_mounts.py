"""Importing beartype in a process where another library has added methods to ``object`` itself.

beartype builds, when first imported, a ``frozenset`` of every callable attribute of ``object``
(to tell default dunder methods from a class's own). A library that writes an *unhashable* method
into ``object``'s type dict breaks that import with ``TypeError: unhashable type``: nnsight 0.8
mounts ``.save`` on every object (an ``instancemethod``) when it is imported, so ``import nnsight;
import hooked`` failed while the other order worked.

:func:`objects_attributes_hidden` takes such attributes out of ``object``'s dict for the duration of
a ``with`` block and puts them back on exit (also when the block raises), invalidating the type
cache each time, which is what those libraries themselves do to add them. Outside the block the
process sees ``object`` exactly as the other library left it (``x.save()`` keeps working), and
beartype's checks later in the run are unaffected: its one use of the set guards unhashable
values itself.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["objects_attributes_hidden"]


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _object_dict() -> dict:
    """The dict behind the read-only ``object.__dict__`` mapping proxy."""
    (real,) = (r for r in gc.get_referents(object.__dict__) if isinstance(r, dict))
    return real


@contextmanager
def objects_attributes_hidden() -> Iterator[dict[str, object]]:
    """Hide the unhashable attributes of ``object`` inside the block; yields what was hidden."""
    hidden: dict[str, object] = {k: v for k, v in vars(object).items() if callable(v) and not _hashable(v)}
    if not hidden:
        yield hidden
        return
    real = _object_dict()
    for name in hidden:
        del real[name]
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(object))
    try:
        yield hidden
    finally:
        real.update(hidden)
        ctypes.pythonapi.PyType_Modified(ctypes.py_object(object))
