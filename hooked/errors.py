"""Exceptions raised by the hooked core.

Each names what was wrong (the hook, the argument, the file) and what was expected, so that a
user reading the message can fix the call without reading the framework's source.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HookedError(Exception):
    """Base class of every error the hooked core raises on purpose."""


CACHE_OWNER = "this cache"
"""The ``owner`` an :class:`~hooked.ActivationCache` names in its :class:`UnknownHookError`."""


class UnknownHookError(HookedError, KeyError):
    """A hook name that the model does not have."""

    def __init__(self, name: str, available: Iterable[str], owner: str = "the model"):
        available = list(available)
        self.name = name
        self.available = available
        close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}?" if close else "."
        if owner == CACHE_OWNER:
            held = ", ".join(available[:8]) + (", ..." if len(available) > 8 else "")
            self.message = (
                f"this cache has no activation named {name!r}{hint} It holds {len(available)}"
                f"{': ' + held if available else ''}. A hook point that exists on the model but did not "
                "run in that forward, or was left out by names_filter, has no entry."
            )
        else:
            self.message = (
                f"no hook point named {name!r} on {owner}{hint} It has {len(available)} hook points "
                "(see model.hook_dict, or `hooked hooks MODEL` on the command line)."
            )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.message


class HookReturnError(HookedError, ValueError):
    """A hook function returned something that cannot replace the activation."""


class OptionError(HookedError, ValueError):
    """An option of a registered model, analysis or reproduction has a value it cannot take.

    ``option`` is the keyword's name (``batch_size``); the command line shows it as its flag
    (``--batch-size``), so the message names what the user typed.
    """

    def __init__(self, option: str, problem: str):
        self.option = option
        self.problem = problem
        super().__init__(f"{option} {problem}")

    def as_flag(self, flag: str) -> str:
        """The message with the option shown as the command-line ``flag``."""
        return f"{flag} {self.problem}"


class StopForward(HookedError):
    """Raised inside a forward pass to end it early (see ``run_with_cache(stop_at=...)``)."""
