"""Argument checks with clear messages, shared by the models, the analyses and the command line.

* :func:`positive` / :func:`non_negative`: integer sizes and counts of a registered entry's
  options; a bad one raises :class:`~hooked.errors.OptionError`, which the command line reports
  with the option's flag (``--batch-size must be a positive integer, got -1``).
* :func:`torch_device`: a device string that exists on this machine (``cuda`` without CUDA and
  ``foo`` are refused before any work starts).
* :func:`require_finite`: refuse NaN / inf activations or weights, saying how many and where, so
  that an analysis never reports a number computed from them.
* :func:`flags`: options that must be ``True`` or ``False`` (a string ``"False"`` is truthy, so a
  flag given as one would silently do the opposite of what it says).
* :func:`finite_number`: a real number, finite and within bounds (learning rates, temperatures).
* :func:`index_tensor`: an integer tensor whose values index an axis of a given size (token ids,
  per-row positions, rows of another batch).
* :func:`hook_list`, :func:`positions`, :func:`position_in_range`, :func:`axis`, :func:`positive`
  (chunk sizes), :func:`function`, :func:`flag`, :func:`metric_values`, :func:`batch_rows`,
  :func:`source_rows`: the arguments of patching sweeps, attribution patching and the sweep
  strategies, checked by one set of functions so that every path of a function refuses the same
  inputs with the same message.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from hooked.errors import OptionError


def positive(**values: Any) -> None:
    """Each keyword must be an int >= 1 (``positive(batch_size=batch_size, members=members)``)."""
    _at_least(1, "a positive integer", values)


def non_negative(**values: Any) -> None:
    """Each keyword must be an int >= 0."""
    _at_least(0, "an integer >= 0", values)


def _at_least(low: int, what: str, values: dict[str, Any]) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise OptionError(name, f"must be {what}, got {v!r}")


def flags(**values: Any) -> None:
    """Each keyword must be a bool (``flags(do_sample=do_sample)``)."""
    for name, v in values.items():
        if not isinstance(v, bool):
            raise OptionError(name, f"must be True or False, got {v!r}")


def finite_number(
    name: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
) -> float:
    """``value`` as a float if it is a real number (not a bool; a one-element float tensor too),
    finite and within the bounds given (``above``: strictly greater), else an
    :class:`~hooked.errors.OptionError`."""
    bounds = [f"{op} {b}" for op, b in ((">", above), (">=", at_least), ("<=", at_most)) if b is not None]
    want = " ".join(["a finite number", " and ".join(bounds)]).strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if not (isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point()):
            raise OptionError(name, f"must be {want}, got {value!r}")
    number = float(value)
    if (
        not math.isfinite(number)
        or (above is not None and not number > above)
        or (at_least is not None and not number >= at_least)
        or (at_most is not None and not number <= at_most)
    ):
        raise OptionError(name, f"must be {want}, got {value!r}")
    return number


def index_tensor(name: str, t: Any, size: int, *, negative: bool = False, axis: str = "an axis") -> Tensor:
    """``t`` if it is an integer tensor (not bool) whose values index ``axis`` of length ``size``
    (``negative=True``: counted from the end too, as Python's ``-1``), else a clear error naming
    ``name``, the first value out of range and the range. One device sync (its min and max)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor of integer indices, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must hold integer indices, got a {t.dtype} tensor")
    if t.numel():
        low = -size if negative else 0
        lo, hi = (int(v) for v in torch.stack([t.min(), t.max()]).tolist())
        if lo < low or hi >= size:
            bad = lo if lo < low else hi
            raise IndexError(
                f"{name} holds {bad}, outside {axis} of {size} ({low}..{size - 1}"
                f"{', negative ones counted from the end' if negative else ''})"
            )
    return t


def torch_device(spec: str | torch.device) -> torch.device:
    """``spec`` as a ``torch.device`` that this machine has, else a ValueError that says why."""
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device {str(spec)!r} is not a torch device; expected cpu, cuda, cuda:N, mps, ..."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(spec)!r}: CUDA is not available here (torch {torch.__version__}); use cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {str(spec)!r}: this machine has {count} CUDA device(s) (0..{count - 1})"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(spec)!r}: MPS is not available here; use cpu")
    elif device.type not in ("cpu", "meta"):
        # other backends (xpu, hpu, ...): ask torch whether one is there
        module = getattr(torch, device.type, None)
        available = getattr(module, "is_available", None)
        if available is None or not available():
            raise ValueError(f"device {str(spec)!r}: no {device.type} device is available here; use cpu")
    return device


def require_finite(t: Tensor, what: str) -> Tensor:
    """Return ``t`` if every value is finite, else raise a ValueError naming ``what`` with counts."""
    if t.is_floating_point() or t.is_complex():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(bad.sum()) - n_nan
            rows = ""
            if t.dim() >= 2 and t.shape[-1]:
                bad_rows = bad.reshape(-1, t.shape[-1]).any(dim=1)
                rows = f" in {int(bad_rows.sum())} of {bad_rows.numel()} vectors"
            raise ValueError(
                f"{what} hold non-finite values ({n_nan} NaN, {n_inf} inf{rows}, shape "
                f"{tuple(t.shape)}); nothing computed from them would mean anything"
            )
    return t


# ---------------------------------------------------------------------- hooks, positions, metrics, batches
# One set of checks for every function that takes a list of hooks, positions, a chunk size, a metric
# or a batch (interventions.patching, interventions.attribution, the sweep strategies), so that every
# path of a function (plain, batched, prefix-reusing) refuses the same inputs with the same message.


def hook_list(model: Any, hooks: Any, caller: str) -> list[str]:
    """``hooks`` (one hook name or a list of them) as a list of hook names of ``model``, each
    naming another hook point, in the order given.

    For functions whose result has one entry per name given (a sweep's rows, a store's columns): a
    name given twice, or two names of one hook point (a TransformerLens name and the module path
    of ``hooked.wrap``, an alias and its canonical name on the bridge), would make two entries of
    one activation, so it is refused, naming both. Unknown names raise
    :class:`~hooked.errors.UnknownHookError` with the closest names.
    """
    from hooked.protocol import check_hookable, hook_point

    names = [hooks] if isinstance(hooks, str) else hooks
    if isinstance(names, (bytes, Tensor)) or not isinstance(names, Iterable):
        raise TypeError(f"{caller}: hooks must be a hook name or a list of hook names, got {_short(hooks)}")
    names = list(names)
    if not names:
        raise ValueError(f"{caller}: hooks is empty; give at least one hook name")
    seen: dict[int, str] = {}
    points = check_hookable(model).hook_dict  # read once: a bridge builds it afresh on each read
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"{caller}: hook names must be strings, got {type(name).__name__}: {_short(name)}"
            )
        key = id(hook_point(model, name, points))
        if key in seen:
            if seen[key] == name:
                raise ValueError(f"{caller}: hook {name!r} is given twice in hooks; give each hook once")
            raise ValueError(
                f"{caller}: hooks {seen[key]!r} and {name!r} are two names of one hook point; "
                "give one of them"
            )
        seen[key] = name
    return names


def positions(values: Any, caller: str, rows: int | None = None) -> list[int | Tensor] | None:
    """``positions`` of a sweep: ``None`` (whole activations), or a non-empty list whose entries are
    each an int (numpy and 0-d integer tensors included) or a ``[rows]`` integer tensor (one index
    per batch row). Floats, bools, slices and tensors of another shape are refused (``2.7`` is not
    position 2); ranges are checked against the activations by :func:`position_in_range`."""
    if values is None:
        return None
    if isinstance(values, (str, bytes, slice)) or not isinstance(values, Iterable):
        raise TypeError(
            f"{caller}: positions must be a list of positions (ints, or [rows] integer tensors) or None, "
            f"got {_short(values)}"
        )
    out: list[int | Tensor] = []
    for p in values:
        if isinstance(p, Tensor) and p.dim() == 1:
            if p.dtype == torch.bool or p.is_floating_point() or p.is_complex():
                raise TypeError(
                    f"{caller}: a per-row position must be an integer tensor, got dtype {p.dtype}"
                )
            if rows is not None and p.shape[0] != rows:
                raise ValueError(
                    f"{caller}: a per-row position must be a [{rows}] tensor (one index per base row), "
                    f"got {tuple(p.shape)}"
                )
            out.append(p.long())
            continue
        out.append(_index(p, caller, "a position"))
    if not out:
        raise ValueError(f"{caller}: positions is empty; pass None to patch each hook's whole activation")
    return out


def position_in_range(position: int | Tensor, length: int, caller: str, where: str) -> None:
    """``position`` (an int or per-row indices) must index an axis of ``length`` (``-length ..
    length - 1``); ``where`` says which axis (``"the source's activation at 'h' (axis 1)"``)."""
    if isinstance(position, Tensor):
        if not position.numel():
            return
        low, high = int(position.min()), int(position.max())
    else:
        low = high = position
    if low < -length or high >= length:
        shown = position.tolist() if isinstance(position, Tensor) else position
        raise ValueError(
            f"{caller}: position {shown} is out of range for {where}, which has {length} positions "
            f"(-{length} .. {length - 1})"
        )


def function(fn: Any, name: str, caller: str) -> Callable:
    """``fn`` if it is callable, else a TypeError naming the argument."""
    if not callable(fn):
        raise TypeError(f"{caller}: {name} must be a function, got {type(fn).__name__}: {_short(fn)}")
    return fn


def flag(value: Any, name: str, caller: str, *, none: bool = False) -> bool | None:
    """``value`` if it is a bool (or ``None`` where ``none``), else a TypeError naming the argument."""
    if isinstance(value, bool) or (none and value is None):
        return value
    allowed = "True, False or None" if none else "True or False"
    raise TypeError(f"{caller}: {name} must be {allowed}, got {_short(value)}")


def axis(value: Any, ndim: int, caller: str, name: str, where: str) -> int:
    """``value`` as an axis (``0 .. ndim - 1``) of an activation of ``ndim`` axes other than its
    batch axis 0; negative values count from the end."""
    i = _index(value, caller, name)
    if not -ndim <= i < ndim:
        raise ValueError(f"{caller}: {name}={i} is not an axis of {where}, which has {ndim} axes")
    i %= ndim
    if i == 0:
        raise ValueError(
            f"{caller}: {name}={value} is the batch axis of {where}; positions are along another"
        )
    return i


def metric_values(values: Any, rows: int, caller: str) -> Tensor:
    """A metric's result on a forward of ``rows`` batch rows: one real value per row (``[rows]``)."""
    if not isinstance(values, Tensor):
        raise TypeError(
            f"{caller}: metric must return a tensor of one value per batch row of the forward it is "
            f"given (a [rows] tensor), got {type(values).__name__}"
        )
    if values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"{caller}: metric must return real values, got dtype {values.dtype}")
    if tuple(values.shape) != (rows,):
        hint = (
            "; a scalar (a mean or sum over rows) mixes the patches that share a forward: return "
            "each row's value and leave the mean to the caller"
            if values.dim() == 0
            else ""
        )
        # not the forward's row count: batched paths run several patches' rows in one forward, and
        # every path must refuse a metric with the same message
        raise ValueError(
            f"{caller}: metric must return one value per batch row of the forward it is given (a [rows] "
            f"tensor); got {tuple(values.shape)}{hint}"
        )
    return values


def batch_rows(batch: Any, caller: str, what: str = "batch") -> int:
    """How many rows a batch (a tensor, a tuple of arguments or a dict of keyword arguments) has:
    the first axis of its first tensor with at least one axis."""
    from hooked.protocol import split_batch

    if batch is None:
        raise TypeError(f"{caller}: the {what} is None; give a tensor, a tuple or a dict of tensors")
    args, kwargs = split_batch(batch)
    for v in (*args, *kwargs.values()):
        if isinstance(v, Tensor) and v.dim() > 0:
            if v.shape[0] == 0:
                raise ValueError(f"{caller}: the {what} has no rows (a tensor of shape {tuple(v.shape)})")
            return v.shape[0]
    raise ValueError(
        f"{caller}: the {what} must hold at least one tensor with a batch axis, got {_short(batch)}"
    )


def source_rows(source: int, base: int, caller: str, where: str = "") -> None:
    """A source of patches has the base's rows, or one row that every base row takes."""
    if source not in (base, 1):
        raise ValueError(
            f"{caller}: the source{where} has {source} rows and the base {base}; give the source one row "
            "per base row, or one row for all of them"
        )


def _index(value: Any, caller: str, name: str) -> int:
    """An integer (Python, numpy or a 0-d integer tensor), never a bool or a float."""
    if isinstance(value, bool) or (isinstance(value, Tensor) and (value.dtype == torch.bool or value.dim())):
        raise TypeError(f"{caller}: {name} must be an integer, got {_short(value)}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{caller}: {name} must be an integer, got {type(value).__name__}: {_short(value)}"
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
