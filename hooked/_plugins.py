"""Seams that other packages plug functions into: one list per seam, filled from an entry-point group.

A seam of the core (:mod:`hooked.sweeps`' sweep strategies, :mod:`hooked.circuit_graph`'s graph
providers) keeps a :class:`Plugins`: the functions of its entry-point group in every installed
package (loaded on first use, never at ``import hooked``; one that fails to load is skipped with a
warning, so a broken plugin does not break every caller) followed by those registered in this
process, each once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Generic, TypeVar, cast

F = TypeVar("F", bound=Callable)


class Plugins(Generic[F]):
    """The functions plugged into one seam (``group``: its entry-point group; ``what``: what one
    is, for messages, e.g. ``"sweep strategy"``; ``call``: how one is called, for messages)."""

    def __init__(self, group: str, what: str, call: str) -> None:
        self.group, self.what, self.call = group, what, call
        self.registered: list[F] = []
        self._installed: list[F] | None = None

    def register(self, fn: F) -> F:
        """Add ``fn`` (once; returns it, so it serves as a decorator)."""
        if not callable(fn):
            raise TypeError(f"a {self.what} must be callable as {self.call}, got {type(fn).__name__}")
        if not any(f is fn for f in self.registered):
            self.registered.append(fn)
        return fn

    def all(self) -> list[F]:
        """The installed ones (entry points), then those registered in this process, each once."""
        if self._installed is None:
            self._installed = self._load()
        out: list[F] = []
        for f in (*self._installed, *self.registered):
            if not any(f is o for o in out):
                out.append(f)
        return out

    def _load(self) -> list[F]:
        from importlib.metadata import entry_points

        found: list[F] = []
        for ep in entry_points(group=self.group):
            try:
                fn = ep.load()
            except Exception as e:  # a broken plugin must not break every caller
                warnings.warn(f"{self.what} {ep.name} ({ep.value}) failed to load: {e}", stacklevel=4)
                continue
            if callable(fn):
                found.append(cast(F, fn))  # a callable from the group: the seam calls it as documented
            else:
                warnings.warn(f"{self.what} {ep.name} ({ep.value}) is not callable; skipped", stacklevel=4)
        return found
