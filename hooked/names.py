"""Turning what a user passes as "which hooks" into hook names.

A names spec is one of: ``None`` (every hook point), a hook name, a list of hook names, or a
filter ``fn(name) -> bool``. Names that do not exist raise :class:`~hooked.errors.UnknownHookError`
with the closest existing names; a filter that matches nothing is not an error.

:func:`act_name` is TransformerLens's shorthand for a hook name (``("resid_pre", 3)`` ->
``blocks.3.hook_resid_pre``), a rule on strings alone: every cache takes it
(``cache["resid_pre", 3]``), and a language model's backend maps its result to its own names
(``hooked.lm.act_name(model, ...)``).
"""

from __future__ import annotations

import re
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


# ---------------------------------------------------------------------- TransformerLens's shorthand
_LAYER_TYPES = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": ""}
_NAME_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_mid": "mid",
    "mlp_post": "post",
}
_ATTN = {"k", "v", "q", "z", "result", "pattern", "attn_scores", "rot_k", "rot_q"}
_MLP = {"pre", "post", "mid", "pre_linear"}


def act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """TransformerLens's ``utils.get_act_name``: the full hook name a shorthand stands for.

    ``act_name("resid_pre", 3)`` is ``"blocks.3.hook_resid_pre"``; ``act_name("z", 2)`` is
    ``"blocks.2.attn.hook_z"``; ``act_name("scale", 4, "ln1")`` is ``"blocks.4.ln1.hook_scale"``;
    ``act_name("k6")`` is ``"blocks.6.attn.hook_k"``; a full name comes back unchanged.
    """
    if layer is None and layer_type is None and ("." in name or name.startswith("hook_")):
        return name
    compact = re.fullmatch(r"([a-z_]+?)(\d+)([a-z]\w*)?", name)
    if compact is not None and layer is None:
        name, layer, layer_type = compact.group(1), int(compact.group(2)), compact.group(3)
    name = _NAME_ALIASES.get(name, name)
    if name in _ATTN:
        layer_type = "attn"
    elif name in _MLP:
        layer_type = "mlp"
    elif layer_type in _LAYER_TYPES:
        layer_type = _LAYER_TYPES[layer_type]
    full = f"blocks.{layer}." if layer is not None else ""
    full += f"{layer_type}." if layer_type else ""
    full += f"hook_{name}"
    if name in ("scale", "normalized") and layer is None:
        full = f"ln_final.{full}"
    return full
