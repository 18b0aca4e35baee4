"""Turning what a user passes as "which hooks" into a list of hook names.

A names spec is one of: ``None`` (every hook point), a hook name, a list of hook names, or a
filter ``fn(name) -> bool``. Names that do not exist raise :class:`~hooked.errors.UnknownHookError`
with the closest existing names; a filter that matches nothing is not an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from hooked.errors import UnknownHookError

NamesSpec = str | Sequence[str] | Callable[[str], bool] | None


def resolve_names(available: Iterable[str], spec: NamesSpec, owner: str = "the model") -> list[str]:
    """The hook names ``spec`` selects, in the model's order for filters and as given for lists."""
    available = list(available)
    if spec is None:
        return available
    if isinstance(spec, str):
        return [_check(spec, available, owner)]
    if callable(spec):
        return [n for n in available if spec(n)]
    try:
        names = list(spec)
    except TypeError:
        raise TypeError(
            "names must be a hook name, a list of hook names, a filter fn(name) -> bool, or None; "
            f"got {type(spec).__name__}"
        ) from None
    known = set(available)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"hook names must be strings, got {type(n).__name__}: {n!r}")
        if n not in known:
            _check(n, available, owner)
    return names


def _check(name: str, available: list[str], owner: str) -> str:
    if name not in available:
        raise UnknownHookError(name, available, owner)
    return name
