"""Hook points found by plain attribute lookup: ``self.hook_x`` in a forward without the detour
through ``nn.Module.__getattr__``.

``nn.Module`` keeps submodules in ``self._modules``; reading ``self.hook_x`` misses the instance
``__dict__`` and falls back to ``nn.Module.__getattr__``, a Python-level search that costs more
than an inactive hook point's whole call. :func:`install` puts each hook point also into its
parent's ``__dict__`` (where normal lookup finds it first) and replaces the parent's ``_modules``
by a :class:`_ModuleDict`, a ``dict`` that keeps that copy in step: a hook point assigned,
replaced, set to ``None`` or deleted (``nn.Module.__delattr__`` removes only from ``_modules``)
updates the ``__dict__`` entry at once. ``state_dict``, ``named_modules``, ``.to()``, pickling
and ``copy.deepcopy`` read ``_modules`` and are unchanged.

Invariant: a module's ``__dict__`` holds a hook point copy only while its ``_modules`` is a
``_ModuleDict`` (so every change to ``_modules`` keeps the copy true). Copies of a module
(``deepcopy``, pickling) get an unbound ``_ModuleDict``; it finds its owner when it first needs
to (rare: deleting a hook point of a copied plain module), and :class:`~hooked.HookedModule`
binds them again when it is copied. Containers (``ModuleList``, ``Sequential``, ``ModuleDict``)
are indexed through ``_modules`` anyway and are left alone, as are names that a class attribute
(a method, a property) already shadows.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from torch import nn

from hooked.hook_point import HookPoint

_CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


class _ModuleDict(dict):
    """A module's ``_modules`` that mirrors its hook point children into the module's ``__dict__``."""

    __slots__ = ("_owner",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner: weakref.ref | None = None

    # what pickling and deepcopy produce: the same items, not bound to any module
    def __reduce__(self) -> tuple:
        return (_ModuleDict, (), None, None, iter(self.items()))

    def _owner_module(self) -> nn.Module | None:
        """The module whose ``_modules`` this is (None if none is found)."""
        owner = self._owner() if self._owner is not None else None
        if owner is not None and owner.__dict__.get("_modules") is self:
            return owner
        # Unbound (a copy): look the owner up. Rare: only when a hook point is replaced or removed.
        for ref in gc.get_referrers(self):
            if isinstance(ref, dict) and ref.get("_modules") is self:
                ref = next((m for m in gc.get_referrers(ref) if getattr(m, "__dict__", None) is ref), None)
            if isinstance(ref, nn.Module) and ref.__dict__.get("_modules") is self:
                self._owner = weakref.ref(ref)
                return ref
        return None

    def _changed(self, name: str, old: Any, new: Any) -> None:
        """Keep the owner's ``__dict__`` copy of ``name`` true after ``old`` was replaced by ``new``
        (``_MISSING`` for a removal). Only a hook point can have a copy, so nothing else needs
        the owner."""
        if not isinstance(old, HookPoint):
            if not isinstance(new, HookPoint) or self._owner is None:
                return  # no copy to correct (an unbound dict, e.g. being unpickled, adds none)
        owner = self._owner_module()
        if owner is None:
            return
        d = owner.__dict__
        if isinstance(new, HookPoint) and _mirrorable(owner, name):
            d[name] = new
        elif isinstance(d.get(name), HookPoint):
            del d[name]

    def __setitem__(self, name: str, value: Any) -> None:
        old = self.get(name, _MISSING)
        super().__setitem__(name, value)
        if old is not value:
            self._changed(name, old, value)

    def __delitem__(self, name: str) -> None:
        old = self[name]
        super().__delitem__(name)
        self._changed(name, old, _MISSING)

    def pop(self, name: str, *default: Any) -> Any:
        had = name in self
        value = super().pop(name, *default)
        if had:
            self._changed(name, value, _MISSING)
        return value

    def popitem(self) -> tuple[str, Any]:
        name, value = super().popitem()
        self._changed(name, value, _MISSING)
        return name, value

    def clear(self) -> None:
        items = list(self.items())
        super().clear()
        for name, value in items:
            self._changed(name, value, _MISSING)

    def setdefault(self, name: str, default: Any = None) -> Any:
        if name not in self:
            self[name] = default
        return self[name]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def __ior__(self, other: Any) -> _ModuleDict:
        self.update(other)
        return self


_MISSING = object()


def _mirrorable(module: nn.Module, name: str) -> bool:
    """A copy in ``__dict__`` would be found exactly where ``nn.Module.__getattr__`` finds it now."""
    return name.isidentifier() and not hasattr(type(module), name)


def bind(module: nn.Module) -> None:
    """Mirror ``module``'s own hook point children into its ``__dict__`` (and keep them in step)."""
    if isinstance(module, _CONTAINERS):
        return
    mods = module.__dict__.get("_modules")
    if mods is None:
        return
    names = [n for n, m in mods.items() if isinstance(m, HookPoint) and _mirrorable(module, n)]
    if not names and not isinstance(mods, _ModuleDict):
        return
    if not isinstance(mods, _ModuleDict) or mods._owner is None or mods._owner() is not module:
        bound = _ModuleDict(mods)
        bound._owner = weakref.ref(module)
        object.__setattr__(module, "_modules", bound)
        mods = bound
    d = module.__dict__
    for n in names:
        if d.get(n) is not mods[n]:
            d[n] = mods[n]


def is_bound(module: nn.Module) -> bool:
    """Whether ``module``'s ``_modules`` keeps its hook point copies in step."""
    mods = module.__dict__.get("_modules")
    return isinstance(mods, _ModuleDict) and mods._owner is not None and mods._owner() is module


def install(root: nn.Module) -> None:
    """:func:`bind` ``root`` and every module below it."""
    for m in root.modules():
        if m.__dict__.get("_modules"):
            bind(m)
