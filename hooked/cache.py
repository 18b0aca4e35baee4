"""ActivationCache: the activations one ``run_with_cache`` call recorded, by hook name.

It behaves like a read-only ``dict[str, Tensor]`` whose keys come in the order the hook points
first ran (TransformerLens's order: forward activations in execution order, then gradients in the
order the backward pass produced them). A hook point that ran several times in one forward (an
RNN's per-step state) is stored stacked along its time axis, in call order; the individual steps
stay reachable with :meth:`ActivationCache.steps`. The cache holds tensors only, never the model,
so keeping a cache does not keep a model (or its autograd graph) alive.

:func:`pos_index` and :func:`slice_positions` implement ``run_with_cache(pos_slice=...)`` with
TransformerLens's ``Slice`` semantics. :class:`OwnForward` tells a cache's recording hooks which
calls of their hook points belong to the forward being recorded (not to a forward that a hook
starts inside it, nor to another thread's).

Methods from a layer above: :meth:`ActivationCache.with_methods` gives a cache that also answers
the methods of an object handed in (``cache.accumulated_resid(...)`` calls
``methods.accumulated_resid(cache, ...)``). The language-model layer hands in TransformerLens's
cache methods that way (:mod:`hooked.lm.toolkit.cache_methods`); the core knows none of them.
"""

from __future__ import annotations

import functools
import numbers
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hooked.errors import UnknownHookError
from hooked.names import act_name


class ActivationCache(Mapping[str, Tensor]):
    """A mapping from hook name to activation tensor.

    Args:
        data: name -> tensor. Stacked per-step activations are plain tensors here.
        time_dims: for names recorded over several steps, the axis the steps are stacked on.
        ragged: names whose steps had different shapes and could not be stacked: name -> steps.
        order: the key order (default: ``data``'s keys, then ``ragged``'s).
    """

    def __init__(
        self,
        data: Mapping[str, Tensor],
        time_dims: Mapping[str, int] | None = None,
        ragged: Mapping[str, Sequence[Tensor]] | None = None,
        aliases: Mapping[str, str] | None = None,
        order: Sequence[str] | None = None,
    ):
        self._data = dict(data)
        self._time_dims = dict(time_dims or {})
        self._ragged = {k: list(v) for k, v in (ragged or {}).items()}
        self._order = list(order) if order is not None else [*self._data, *self._ragged]
        n = len(self._order)  # every name of data and ragged once: a set check, not two sorts
        if not (n == len(set(self._order)) == len(self._data) + len(self._ragged)) or not all(
            k in self._data or k in self._ragged for k in self._order
        ):
            raise ValueError("ActivationCache: order must list every name of data and ragged once")
        self._aliases = dict(aliases or {})  # other names of stored keys (see with_aliases)
        self._methods: Any = None  # an object whose methods this cache also answers (with_methods)

    @classmethod
    def from_calls(
        cls, calls: Mapping[str, list[Tensor]], time_dims: Mapping[str, int], recurrent: set[str]
    ) -> ActivationCache:
        """Build a cache from the tensors each hook point produced, one per call.

        A name called once (and not marked recurrent) keeps its tensor as is; a name called
        several times is stacked along its ``time_dims`` axis.
        """
        data: dict[str, Tensor] = {}
        stacked: dict[str, int] = {}
        ragged: dict[str, list[Tensor]] = {}
        for name, tensors in calls.items():
            if len(tensors) == 1 and name not in recurrent:
                data[name] = tensors[0]
                continue
            dim = time_dims.get(name, 1)
            dim = min(dim, tensors[0].dim())  # a 0-d or 1-d activation stacks on its last axis
            if all(t.shape == tensors[0].shape for t in tensors):
                data[name] = torch.stack(tensors, dim=dim)
                stacked[name] = dim
            else:
                ragged[name] = tensors
        return cls(data, stacked, ragged, order=list(calls))

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, name: str | tuple) -> Tensor:
        if isinstance(name, tuple):  # TransformerLens's shorthand: cache["resid_pre", 3]
            name = _shorthand(*name)
        elif not isinstance(name, str):
            raise KeyError(
                f"a cache is keyed by hook names (str) or TransformerLens's (name, layer) shorthand, not "
                f"{type(name).__name__} {name!r}; its names: list(cache)"
            )
        try:
            return self._data[name]
        except KeyError:
            pass
        other = self._other_name(name)
        if other is not None and other != name and other in self:
            return self[other]
        if name in self._ragged:
            shapes = [tuple(t.shape) for t in self._ragged[name]]
            raise KeyError(
                f"hook {name!r} ran {len(shapes)} times with different shapes {shapes}, so its "
                f"steps cannot be stacked; read them with cache.steps({name!r})"
            )
        raise UnknownHookError(name, list(self), owner="this cache")

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._data) + len(self._ragged)

    def __contains__(self, name: object) -> bool:
        """True for a stored name and for another name of one (:meth:`with_aliases`), as lookups."""
        if name in self._data or name in self._ragged:
            return True
        other = self._other_name(name) if isinstance(name, str) else None
        return other is not None and other != name and (other in self._data or other in self._ragged)

    # ------------------------------------------------------------------ names
    @property
    def aliases(self) -> dict[str, str]:
        """The other names the activations are found under (``{other name: stored name}``)."""
        return dict(self._aliases)

    def _other_name(self, name: str) -> str | None:
        """The stored name that ``name`` is another name of (``<alias>_grad``: the gradient of the
        stored name), or None."""
        other = self._aliases.get(name) or self._aliases.get(act_name(name))
        if other is None and name.endswith("_grad"):
            point = self._aliases.get(name[: -len("_grad")])
            other = None if point is None else point + "_grad"
        return other

    def with_aliases(self, aliases: Mapping[str, str]) -> ActivationCache:
        """The same activations, also found under other names (``{other name: stored name}``)."""
        out = ActivationCache(
            self._data, self._time_dims, self._ragged, {**self._aliases, **aliases}, order=self._order
        )
        out._methods = self._methods
        return out

    def with_methods(self, methods: Any) -> ActivationCache:
        """The same activations, also answering ``methods``' public methods, each called with this
        cache first: ``cache.f(*args)`` is ``methods.f(cache, *args)``, and a method marked
        ``f.cache_property = True`` is read as an attribute, ``cache.f`` (a seam for the layers
        above the core; kept by :meth:`with_aliases`, :meth:`apply`, :meth:`to`,
        :meth:`remove_batch_dim`)."""
        out = self.with_aliases({})
        out._methods = methods
        return out

    def __getattr__(self, name: str) -> Any:
        methods = self.__dict__.get("_methods")
        if methods is not None and not name.startswith("_"):
            fn = getattr(methods, name, None)
            if callable(fn):
                return fn(self) if getattr(fn, "cache_property", False) else functools.partial(fn, self)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # ------------------------------------------------------------------ steps
    def is_stacked(self, name: str) -> bool:
        """True if ``name`` ran several times (or is recurrent) and is stored per step."""
        return name in self._time_dims or name in self._ragged

    def steps(self, name: str) -> list[Tensor]:
        """The activation of each call of ``name``, in call order."""
        if name in self._ragged:
            return list(self._ragged[name])
        t = self[name]
        if name not in self._time_dims:
            return [t]
        return list(t.unbind(self._time_dims[name]))

    def time_dim(self, name: str) -> int | None:
        return self._time_dims.get(name)

    # ------------------------------------------------------------------ whole-cache operations
    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ActivationCache:
        """A new cache with every tensor moved (like ``Tensor.to``)."""
        return self.apply(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None))

    def cpu(self) -> ActivationCache:
        return self.to("cpu")

    def apply(self, fn: Callable[[Tensor], Tensor]) -> ActivationCache:
        """A new cache with ``fn`` applied to every tensor (which must return a tensor)."""
        if not callable(fn):
            raise TypeError(f"ActivationCache.apply needs a function of a tensor, got {type(fn).__name__}")

        def applied(name: str, t: Tensor) -> Tensor:
            out = fn(t)
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"ActivationCache.apply: the function returned {type(out).__name__} for {name!r}, "
                    "not a tensor; return the new activation (e.g. lambda t: t.float())"
                )
            return out

        out = ActivationCache(
            {k: applied(k, v) for k, v in self._data.items()},
            self._time_dims,
            {k: [applied(k, t) for t in v] for k, v in self._ragged.items()},
            self._aliases,
            order=self._order,
        )
        out._methods = self._methods
        return out

    def remove_batch_dim(self) -> ActivationCache:
        """Drop the batch axis (of size 1) from every tensor: each step's axis 0, which a stack
        along time axis 0 moves to axis 1. Any entry with another batch size, or without a batch
        axis, is refused (naming it) before anything is dropped."""
        batch_axis = {k: 1 if d == 0 else 0 for k, d in self._time_dims.items()}
        for name, t in self._data.items():
            axis = batch_axis.get(name, 0)
            if t.dim() <= axis or t.shape[axis] != 1:
                stacked = f" (steps stacked on axis {self._time_dims[name]})" if name in batch_axis else ""
                raise ValueError(
                    f"remove_batch_dim needs batch size 1, but {name!r} has shape {tuple(t.shape)}{stacked}"
                )
        for name, steps in self._ragged.items():
            shapes = [tuple(t.shape) for t in steps]
            if any(len(s) == 0 or s[0] != 1 for s in shapes):
                raise ValueError(
                    f"remove_batch_dim needs batch size 1, but the steps of {name!r} have shapes {shapes}"
                )
        out = ActivationCache(
            {k: v.select(batch_axis.get(k, 0), 0) for k, v in self._data.items()},
            {k: d if d < batch_axis[k] else d - 1 for k, d in self._time_dims.items()},
            {k: [t[0] for t in v] for k, v in self._ragged.items()},
            self._aliases,
            order=self._order,
        )
        out._methods = self._methods
        return out

    @property
    def nbytes(self) -> int:
        """Total bytes held by the cached tensors."""
        return sum(t.numel() * t.element_size() for t in self._all_tensors())

    def _all_tensors(self) -> Iterator[Tensor]:
        yield from self._data.values()
        for ts in self._ragged.values():
            yield from ts

    def stack(self, names: Iterable[str] | Callable[[str], bool] | None = None, dim: int = 0) -> Tensor:
        """Stack the activations of ``names`` (a list, a filter on names, or all) along ``dim``.

        Typical use: ``cache.stack(lambda n: n.endswith("hook_resid_post"))`` gives
        ``[layer, batch, pos, d_model]``.
        """
        if names is None:
            selected = list(self)
        elif callable(names):
            selected = [n for n in self if names(n)]
        else:
            selected = list(names)
        if not selected:
            raise ValueError("stack: no cached activation matches the names given")
        tensors = [self[n] for n in selected]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            detail = ", ".join(f"{n}: {tuple(t.shape)}" for n, t in zip(selected, tensors))
            raise ValueError(f"stack: activations have different shapes ({detail})")
        return torch.stack(tensors, dim=dim)

    def to_dict(self) -> dict[str, Tensor]:
        return {k: self._data[k] for k in self._order if k in self._data}

    def __repr__(self) -> str:
        lines = [f"ActivationCache({len(self)} activations, {_human_bytes(self.nbytes)})"]
        for name in self._order:
            if name in self._ragged:
                lines.append(f"  {name}: {len(self._ragged[name])} steps of different shapes")
                continue
            t = self._data[name]
            steps = f" (stacked on dim {self._time_dims[name]})" if name in self._time_dims else ""
            lines.append(f"  {name}: {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}{steps}")
        return "\n".join(lines)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ---------------------------------------------------------------------- pos_slice
class _Keep:
    """One position, keeping the axis (size 1): what TransformerLens's ``run_with_cache`` makes
    of an int (``Slice.unwrap`` turns ``-1`` into ``[-1]``)."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i

    def __repr__(self) -> str:
        return f"[{self.i}]"


PosIndex = _Keep | int | slice | Tensor


def _shorthand(*key: Any) -> str:
    """``cache[name, layer(, layer_type)]``: :func:`hooked.names.act_name` of the key, also found
    through the aliases the model gave its caches (a wrapped LM: ``model.layers.3.hook_in``)."""
    if not 1 <= len(key) <= 3 or not isinstance(key[0], str):
        raise KeyError(
            f"cache[{', '.join(map(repr, key))}]: the shorthand is cache[name, layer] or "
            "cache[name, layer, layer_type] (TransformerLens's get_act_name), e.g. cache['resid_pre', 3]"
        )
    name: str = key[0]
    layer, layer_type = (*key[1:], None, None)[:2]
    if isinstance(layer, Tensor) and layer.dim() == 0:
        if not (layer.is_floating_point() or layer.dtype == torch.bool):
            layer = int(layer)  # computed with tensor ops (topk(...).indices // n_heads), as TL takes it
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, (numbers.Integral, str))):
        raise KeyError(f"cache[{name!r}, {layer!r}]: the layer must be an integer")
    if layer_type is not None and not isinstance(layer_type, str):
        raise KeyError(f"cache[{name!r}, {layer!r}, {layer_type!r}]: the layer type must be a string")
    if isinstance(layer, numbers.Integral) and layer < 0:
        raise KeyError(
            f"cache[{name!r}, {layer}]: a cache does not know the number of layers; use "
            f"cache[hooked.lm.act_name(model, {name!r}, {layer})]"
        )
    return act_name(name, int(layer) if isinstance(layer, numbers.Integral) else layer, layer_type)


def pos_index(spec: Any) -> PosIndex | None:
    """``run_with_cache``'s ``pos_slice`` as an index along the position axis (``None``: all).

    TransformerLens's ``Slice`` semantics: an int selects one position and keeps the axis (size 1);
    a tuple ``t`` is ``slice(*t)`` (``(3,)`` is ``:3``, ``(1, 5)`` is ``1:5``); a ``slice`` as is;
    a list, 1-d tensor or array of indices (or a boolean mask) picks those positions; a
    TransformerLens ``Slice`` object is applied as that object would (its int mode drops the axis).
    """
    if spec is None:
        return None
    if hasattr(spec, "mode") and hasattr(spec, "slice") and type(spec).__name__ == "Slice":
        mode, s = spec.mode, spec.slice
        if mode == "identity":
            return None
        if mode == "int":
            return int(s)
        if mode == "slice":
            return s
        return torch.as_tensor(s)
    if isinstance(spec, bool):
        raise TypeError(f"pos_slice must be an int, a tuple, a slice or a list of positions, got {spec!r}")
    if isinstance(spec, numbers.Integral) or (
        isinstance(spec, Tensor) and spec.dim() == 0 and not spec.dtype.is_floating_point
    ):
        return _Keep(int(spec))
    if isinstance(spec, tuple):
        if not 1 <= len(spec) <= 3 or not all(v is None or isinstance(v, numbers.Integral) for v in spec):
            raise TypeError(f"pos_slice as a tuple means slice(*tuple): 1 to 3 ints, got {spec!r}")
        return slice(*spec)
    if isinstance(spec, slice):
        return spec
    if isinstance(spec, (list, Tensor)) or type(spec).__module__ == "numpy":
        index = torch.as_tensor(spec)
        if index.dim() != 1 or not (index.dtype == torch.bool or not index.dtype.is_floating_point):
            raise TypeError(
                f"pos_slice as a list or tensor must be 1-d integer positions or a mask, not {spec!r}"
            )
        return index if index.dtype == torch.bool else index.long()
    raise TypeError(
        f"pos_slice must be None, an int, a tuple (slice(*tuple)), a slice, or a list/tensor of "
        f"positions, got {type(spec).__name__}: {spec!r}"
    )


def slice_positions(t: Tensor, index: PosIndex, dim: int, name: str) -> Tensor:
    """``t`` cut at ``index`` along axis ``dim`` (see :func:`pos_index`)."""
    n = t.shape[dim]
    if isinstance(index, (_Keep, int)):
        i = index.i if isinstance(index, _Keep) else index
        if not -n <= i < n:
            raise IndexError(f"pos_slice={i} is out of range for {name!r}: its position axis {dim} has {n}")
        return t.narrow(dim, i % n, 1) if isinstance(index, _Keep) else t.select(dim, i)
    if isinstance(index, Tensor):
        if index.dtype == torch.bool:
            if index.numel() != n:
                raise IndexError(f"pos_slice mask has {index.numel()} entries but {name!r} has {n} positions")
            index = index.nonzero().flatten()
        elif index.numel() and not (-n <= int(index.min()) and int(index.max()) < n):
            raise IndexError(f"pos_slice {index.tolist()} is out of range for {name!r}: {n} positions")
        return t.index_select(dim, (index % n if n else index).to(t.device))
    return t[(slice(None),) * (dim % t.dim()) + (index,)]


def pos_axis(name: str, pos_dim: int | None) -> int:
    """The position axis ``pos_slice`` cuts: the hook point's ``pos_dim``, else -2 (the query
    axis) for attention patterns and scores, else 1 (as TransformerLens's bridge)."""
    if pos_dim is not None:
        return pos_dim
    return -2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1


# ---------------------------------------------------------------------- whose calls a cache records
class OwnForward:
    """Which calls of a hook point belong to the forward a cache records.

    While the ``with`` block runs, ``mine()`` is true in the thread that opened it, outside any
    call of ``root`` or in its outermost one: a forward that a hook starts inside the recorded one
    (``model(other)`` in a hook) and other threads' forwards of the same model are not recorded
    (they used to be stacked into the cache as extra steps). ``root`` is the module whose call is
    the forward (a ``HookedModule``, or the module ``hooked.wrap`` wraps); two PyTorch hooks on it
    count the calls while the block runs.
    """

    __slots__ = ("_root", "_thread", "_depth", "_handles")

    def __init__(self, root: nn.Module):
        self._root = root
        self._thread = threading.get_ident()
        self._depth = 0
        self._handles: tuple = ()

    def mine(self) -> bool:
        return self._depth <= 1 and threading.get_ident() == self._thread

    def _enter(self, module: nn.Module, args: Any) -> None:
        if threading.get_ident() == self._thread:
            self._depth += 1

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() == self._thread:
            self._depth -= 1

    def __enter__(self) -> OwnForward:
        self._handles = (
            self._root.register_forward_pre_hook(self._enter, prepend=True),
            self._root.register_forward_hook(self._leave, always_call=True),
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = ()
