"""The small protocol that analyses and interventions are written against, and helpers on it.

A model is *hookable* when it has ``hook_dict`` (hook name -> hook point), ``run_with_hooks``
and ``run_with_cache`` with TransformerLens's calling conventions. :class:`~hooked.HookedModule`
(toy models, RNNs, weight-space encoders, ``hooked.wrap`` of any module) and TransformerLens 4's
``TransformerBridge`` both satisfy it, so code in ``analyses/`` and ``interventions/`` that uses
only what is here runs unchanged on a toy model and on a real language model.

Inputs are passed as a *batch*: a tensor (one positional argument), a tuple (positional
arguments) or a dict (keyword arguments). Helpers that walk a dataset take an iterable of batches
and never hold more than one batch's activations unless asked to concatenate them.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, overload, runtime_checkable

import torch
from torch import Tensor

from hooked.errors import StopForward, UnknownHookError
from hooked.names import NamesSpec, resolve_names

Batch = Tensor | tuple | dict | Any


@runtime_checkable
class Hookable(Protocol):
    """What analyses and interventions may rely on."""

    @property
    def hook_dict(self) -> Mapping[str, Any]: ...

    def run_with_hooks(
        self, *args: Any, fwd_hooks: Any = ..., bwd_hooks: Any = ..., **kwargs: Any
    ) -> Any: ...

    def run_with_cache(self, *args: Any, names_filter: Any = ..., **kwargs: Any) -> Any: ...


def check_hookable(model: Any, argument: str = "model") -> Hookable:
    """Return ``model`` if it follows the protocol, else raise a TypeError that says what is missing."""
    # the class first: ``hasattr(model, "hook_dict")`` would build a property's whole dict to say yes
    kind = type(model)
    needed = ("hook_dict", "run_with_hooks", "run_with_cache")
    missing = [a for a in needed if not (hasattr(kind, a) or hasattr(model, a))]
    if missing:
        raise TypeError(
            f"{argument} must be a hooked model (a hooked.HookedModule, hooked.wrap(module), or a "
            f"TransformerLens TransformerBridge); {type(model).__name__} has no {', '.join(missing)}"
        )
    return model


def hook_names(model: Hookable, names: NamesSpec = None) -> list[str]:
    """The hook names of ``model`` that ``names`` selects (all by default). Where the model takes
    other names for its hook points (``hook_name_aliases``), a name may be one of those (it is kept as
    given) and a filter sees both names of each point; each point is selected once, by its own name
    (a ``hook_dict`` may list it under its other names too, as a wrapped language model's does)."""
    hooks = check_hookable(model).hook_dict
    owner = type(model).__name__
    aliases = {a: h for a, h in _name_aliases(model).items() if h in hooks and a != h}
    if not aliases:
        return resolve_names(hooks, names, owner)
    own = [h for h in hooks if h not in aliases]
    if names is None:
        return own
    if callable(names) and not isinstance(names, str):
        others = other_names(model)
        return [h for h in own if names(h) or any(names(a) for a in others.get(h, ()))]
    return resolve_names([*own, *aliases], names, owner)


def check_hook(model: Hookable, name: str) -> str:
    """Return ``name`` if ``model`` has that hook point, else raise with the closest names."""
    hook_point(model, name)
    return name


def check_hooks(model: Hookable, names: Iterable[str]) -> list[str]:
    """:func:`check_hook` for each of ``names``, reading ``model.hook_dict`` once (a bridge builds
    it afresh on each read); returns the names as a list."""
    names = list(names)
    hooks = check_hookable(model).hook_dict
    for name in names:
        hook_point(model, name, hooks)
    return names


def hook_point(model: Hookable, name: str, hooks: Mapping[str, Any] | None = None) -> Any:
    """The hook point ``name`` of ``model``: by its name in ``hook_dict`` (``hooks``, when the caller
    read it already), or by another name the model takes for it (an optional ``hook_name_aliases``
    mapping, ``{other name: hook name}``: a wrapped language model's TransformerLens names)."""
    if hooks is None:
        hooks = check_hookable(model).hook_dict
    if name in hooks:
        return hooks[name]
    other = _name_aliases(model).get(name)
    if other is not None and other in hooks:
        return hooks[other]
    raise UnknownHookError(name, hooks, type(model).__name__)


def hook_key(model: Hookable, name: str, hooks: Mapping[str, Any] | None = None) -> str:
    """The name under which ``model.hook_dict`` holds the hook point ``name`` (``name`` itself, or
    the hook point's name where ``name`` is another name the model takes for it; ``hooks``: the
    ``hook_dict`` when the caller read it already)."""
    if hooks is None:
        hooks = check_hookable(model).hook_dict
    own = _name_aliases(model).get(name)
    if own is not None and own in hooks and (name not in hooks or hooks[name] is hooks[own]):
        return own  # another name of a hook point (also when hook_dict lists it under that name)
    if name in hooks:
        return name
    hook_point(model, name, hooks)  # unknown: UnknownHookError with the closest names
    return _name_aliases(model)[name]


def other_names(model: Hookable) -> dict[str, list[str]]:
    """Hook name -> the other names ``model`` takes for that hook point (``hook_name_aliases``)."""
    out: dict[str, list[str]] = {}
    for a, h in _name_aliases(model).items():
        out.setdefault(h, []).append(a)
    return out


def _name_aliases(model: Hookable) -> dict[str, str]:
    """``model.hook_name_aliases`` where it is a ``{str: str}`` mapping, else nothing."""
    aliases = getattr(model, "hook_name_aliases", None)
    if not isinstance(aliases, Mapping):
        return {}
    return {a: h for a, h in aliases.items() if isinstance(a, str) and isinstance(h, str)}


def split_batch(batch: Batch) -> tuple[tuple, dict]:
    """The positional and keyword arguments a batch stands for."""
    if isinstance(batch, dict):
        return (), batch
    if isinstance(batch, tuple):
        return batch, {}
    return (batch,), {}


def batch_keywords(forward: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with a batch mapping passed as the one positional argument turned into the
    keywords it holds, where it is one: ``run_with_hooks(batch)`` runs as ``run_with_hooks(**batch)``
    (``patch(model, batch, ...)`` takes a tokenized batch positionally too).

    A mapping is a batch of keywords when its keys are strings that name ``forward``'s parameters
    (or ``forward`` takes ``**kwargs``) and one of them is the parameter it was passed as (a
    tokenizer's ``{"input_ids", "attention_mask"}`` for ``forward(input_ids, attention_mask, ...)``);
    a mapping that is the forward's argument itself (a model that takes a dict of features) is
    passed on as it is.
    """
    if len(args) != 1 or not isinstance(args[0], Mapping):
        return args, kwargs
    batch = args[0]
    try:
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        return args, kwargs
    if not params or params[0].kind not in (params[0].POSITIONAL_OR_KEYWORD, params[0].POSITIONAL_ONLY):
        return args, kwargs
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    any_keyword = any(p.kind == p.VAR_KEYWORD for p in params)
    keys = list(batch)
    if (
        params[0].name not in keys
        or not all(isinstance(k, str) and (k in named or any_keyword) for k in keys)
        or any(k in kwargs for k in keys)
    ):
        return args, kwargs
    return (), {**batch, **kwargs}


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def exclusive(model: Any) -> Iterator[None]:
    """Run the ``with`` block alone among the blocks on ``model`` (other threads wait; the same
    thread may nest them).

    Hooks are the model's state: a forward in any thread sees every hook attached to its hook
    points. A function that attaches hooks for many forwards (a patching sweep, attribution
    patching) runs in this block, so that two of them started from two threads on one model take
    turns instead of patching each other's forwards."""
    try:
        with _LOCKS_GUARD:
            lock = _LOCKS.get(model)
            if lock is None:
                lock = _LOCKS[model] = threading.RLock()
    except TypeError:  # a model without weak references: nothing to take turns on
        yield
        return
    with lock:
        yield


def run_with_hooks(
    model: Hookable, batch: Batch, fwd_hooks: Sequence = (), bwd_hooks: Sequence = (), **kwargs: Any
) -> Any:
    """``model.run_with_hooks`` on a batch (tensor, tuple of args, or dict of kwargs)."""
    args, kw = split_batch(batch)
    return model.run_with_hooks(*args, fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks), **kw, **kwargs)


def cache_batch(
    model: Hookable, batch: Batch, names: NamesSpec, **kwargs: Any
) -> tuple[Any, Mapping[str, Tensor]]:
    """``model.run_with_cache`` on one batch, recording only ``names``."""
    args, kw = split_batch(batch)
    selected = hook_names(model, names)
    return model.run_with_cache(*args, names_filter=selected, **kw, **kwargs)


def read_activation(model: Hookable, batch: Batch, name: str) -> Tensor:
    """The activation at hook ``name`` for one batch (no gradients); the forward stops right
    after that hook point, so the rest of the model is not run."""
    check_hook(model, name)
    found: list[Tensor] = []

    def grab(act: Tensor, hook: Any) -> None:
        found.append(act.detach())
        raise StopForward(f"read_activation stops after {name!r}")

    with torch.no_grad():
        try:
            run_with_hooks(model, batch, [(name, grab)])
        except StopForward:
            pass
    if not found:
        raise ValueError(f"hook point {name!r} exists but did not run on this batch, so it has no activation")
    return found[0]


def model_device(model: Any) -> torch.device:
    """Where ``model``'s first parameter lives (the CPU for a model without parameters); parameters
    offloaded by accelerate (``meta`` tensors until their layer runs) are skipped."""
    try:
        params = model.parameters()
    except AttributeError:
        return torch.device("cpu")
    return next((p.device for p in params if p.device.type != "meta"), torch.device("cpu"))


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """``batch`` with every tensor in it (nested in tuples, lists and dicts) moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(to_device(b, device) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def batch_mask(batch: Batch) -> Tensor | None:
    """A padded batch's attention mask (a dict batch's ``attention_mask``), else ``None``."""
    if isinstance(batch, dict):
        mask = batch.get("attention_mask")
        return mask if isinstance(mask, Tensor) else None
    return None


def mask_ends(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(first, last)``, each ``[batch]``: the index of each row's first and last real token (1 in
    the attention ``mask`` ``[batch, pos]`` of a padded batch); a ValueError for a row with none."""
    if mask.dim() != 2:
        raise ValueError(f"attention_mask must be [batch, pos], got shape {tuple(mask.shape)}")
    real = mask.bool()
    empty = (~real.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"rows {empty.tolist()[:10]} of the attention mask have no real token")
    positions = torch.arange(mask.shape[1], device=mask.device)
    first = torch.where(real, positions, mask.shape[1]).amin(dim=1)
    last = torch.where(real, positions, -1).amax(dim=1)
    return first, last


@overload
def iter_activations(
    model: Hookable,
    batches: Iterable[Batch],
    names: NamesSpec,
    *,
    device: torch.device | str | None = None,
    progress: bool | str = False,
    with_mask: Literal[False] = False,
) -> Iterator[dict[str, Tensor]]: ...
@overload
def iter_activations(
    model: Hookable,
    batches: Iterable[Batch],
    names: NamesSpec,
    *,
    device: torch.device | str | None = None,
    progress: bool | str = False,
    with_mask: Literal[True],
) -> Iterator[tuple[dict[str, Tensor], Tensor | None]]: ...
def iter_activations(
    model: Hookable,
    batches: Iterable[Batch],
    names: NamesSpec,
    *,
    device: torch.device | str | None = None,
    progress: bool | str = False,
    with_mask: bool = False,
) -> Iterator[dict[str, Tensor] | tuple[dict[str, Tensor], Tensor | None]]:
    """Yield ``{name: activation}`` for each batch in turn (streaming, no gradients).

    With ``with_mask=True`` yield ``(activations, mask)`` pairs instead, ``mask`` being the batch's
    attention mask (:func:`batch_mask`; ``None`` for a batch without one), so that a reduction over
    tokens can leave a padded batch's padding out.
    """
    selected = hook_names(model, names)
    it: Iterable[Batch] = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc=progress if isinstance(progress, str) else "activations", leave=False)
    for batch in it:
        with torch.no_grad():
            _, cache = cache_batch(model, batch, selected)
        not_run = [n for n in selected if n not in cache]
        if not_run:
            raise ValueError(
                f"hook point(s) {', '.join(map(repr, not_run))} exist on {type(model).__name__} but did not "
                "run on this batch, so they have no activation"
            )
        acts = {n: cache[n] if device is None else cache[n].to(device) for n in selected}
        yield (acts, batch_mask(batch)) if with_mask else acts


def collect_activations(
    model: Hookable,
    batches: Iterable[Batch],
    names: NamesSpec,
    *,
    dim: int = 0,
    device: torch.device | str | None = "cpu",
    progress: bool | str = False,
) -> dict[str, Tensor]:
    """Concatenate each hook's activations over all batches along ``dim`` (the batch axis)."""
    parts: dict[str, list[Tensor]] = {}
    for acts in iter_activations(model, batches, names, device=device, progress=progress):
        for n, t in acts.items():
            parts.setdefault(n, []).append(t)
    return {n: torch.cat(ts, dim=dim) for n, ts in parts.items()}


def hook_shapes(model: Hookable, batch: Batch) -> dict[str, tuple[int, ...]]:
    """Every hook point's activation shape on ``batch`` (stacked shapes for per-step points)."""
    with torch.no_grad():
        _, cache = cache_batch(model, batch, None)
    return {n: tuple(cache[n].shape) for n in cache}
