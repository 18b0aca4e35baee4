"""Exceptions raised by the hooked core.

Each names what was wrong (the hook, the argument, the file) and what was expected, so that a
user reading the message can fix the call without reading the framework's source.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HookedError(Exception):
    """Base class of every error the hooked core raises on purpose."""


class UnknownHookError(HookedError, KeyError):
    """A hook name that the model does not have."""

    def __init__(self, name: str, available: Iterable[str], owner: str = "the model"):
        available = list(available)
        self.name = name
        self.available = available
        close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        listing = (
            f" It has {len(available)} hook points"
            f" (see model.hook_dict, or `hooked hooks MODEL` on the command line)."
        )
        self.message = f"no hook point named {name!r} on {owner}{hint}{listing}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.message


class HookReturnError(HookedError, ValueError):
    """A hook function returned something that cannot replace the activation."""


class StopForward(HookedError):
    """Raised inside a forward pass to end it early (see ``run_with_cache(stop_at=...)``)."""
