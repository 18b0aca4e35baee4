"""A hook point as a hook function sees it when the hook was attached by another name.

TransformerLens code checks ``hook.name`` (``if hook.name.endswith("hook_resid_pre")``), so a
hook attached by a TransformerLens name on the bridge (whose canonical names differ) or on a
``hooked.wrap`` language model (whose hook points are named by module path) is called with a
:class:`SeenAs` view: the hook point's attributes, under the name it was attached by. Used by
:mod:`hooked.lm.backends.bridge` and :mod:`hooked.lm.backends.wrapped`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class SeenAs:
    """A hook point as a hook function sees it: its own attributes, under the name it was attached by."""

    __slots__ = ("_point", "name")

    def __init__(self, point: Any, name: str):
        object.__setattr__(self, "_point", point)
        object.__setattr__(self, "name", name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._point, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._point, attr, value)

    def layer(self) -> int:
        parts = self.name.split(".")
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"hook {self.name!r} is not in a numbered block")
        return int(parts[1])

    def __repr__(self) -> str:
        return f"HookPoint(name={self.name!r}, canonical={self._point.name!r})"


def seen_as(fn: Callable, name: str) -> Callable:
    """``fn`` as a hook that sees its hook point under ``name``."""

    def call(act: Any, hook: Any) -> Any:
        return fn(act, hook=hook if hook.name == name else SeenAs(hook, name))

    call.__qualname__ = getattr(fn, "__qualname__", type(fn).__name__)
    call._hooked_user_fn = getattr(fn, "_hooked_user_fn", fn)  # type: ignore[attr-defined]  # user_hook
    return call
