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
"""

from __future__ import annotations

import math
import numbers
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
