"""Sweep strategies: the seam through which a kind of model runs a batched patching sweep its own way.

:func:`interventions.patching.patching_sweep` describes its work as a :class:`PatchSweep` (the
patches, the source activations, the metric, and a function that makes the hooks applying any
group of patches) and hands it to :func:`run_sweep`. A *strategy* is a callable
``strategy(sweep) -> Tensor | None``: the metric after each patch (``[len(sweep.hooks)]``, the mean
over the base rows), or ``None`` when the sweep is not one it knows how to run better (then the
next strategy is asked). When none takes it, the sweep runs the plain batched way: the base batch
repeated once per patch, every row computing everything.

Where strategies come from: the one passed to ``patching_sweep(strategy=...)``; else the
entry-point group ``hooked.sweep_strategies`` of every installed package (loaded on first use, not
at ``import hooked``) and those registered in this process with :func:`register_sweep_strategy`.
The core knows no strategy by name: this project's language-model layer declares its own
(``lm = "hooked.lm.sweeps.strategy:lm_sweep"``: prefix reuse and layer skipping on causal LMs),
so a model that layer never loaded (``hooked.wrap`` of a transformers model) gets it too.

A metric may declare the positions of the output it reads (:func:`reads_positions`, e.g. the last
one: ``reads_positions(metric, [-1])``); a strategy may then compute the output only there (a
language model's output head at those positions alone, :mod:`hooked.lm.sweeps.prefix_reuse`),
and the metric sees NaN at every other position. Undeclared metrics get the whole output.

A strategy must give what the plain sweep gives (within float noise); ``sweep.required`` says the
caller asked for the strategy's way (``patching_sweep(reuse_prefix=True)``): a strategy that knows
the model but cannot run this sweep raises a ValueError saying why, and a sweep no strategy takes
is an error too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from hooked._plugins import Plugins

ENTRY_POINT_GROUP = "hooked.sweep_strategies"

HookFns = list[tuple[str, Callable]]


@dataclass(frozen=True)
class PatchSweep:
    """A batched patching sweep, as :func:`interventions.patching.patching_sweep` hands it over.

    Attributes:
        model: the hookable model.
        base: the base batch (a tensor, a tuple of arguments or a dict of keyword arguments).
        hooks: the hook point of each patch.
        positions: each patch's ``[rows]`` indices along ``pos_dim`` (one per base row), or
            ``None``: every patch replaces its whole activation.
        pos_dim: the position axis of the activations.
        sources: the source run's activation at each hook.
        metric: forward output -> one value per batch row.
        rows: rows of the base batch.
        chunk: at most this many patches per forward.
        required: the caller asked for the strategy's way (an error where none can run it).
        progress: show a progress bar.
        make_hooks: ``(patches, start)`` -> the forward hooks that apply the patches (indices into
            ``hooks``) to a forward of the base batch repeated once per patch, patch-major (row
            ``r`` of the ``k``-th patch is batch row ``k * rows + r``), that computes only the
            positions from ``start`` on (``start > 0``: positions along ``pos_dim`` only).
    """

    model: Any
    base: Any
    hooks: tuple[str, ...]
    positions: tuple[Tensor, ...] | None
    pos_dim: int
    sources: Mapping[str, Tensor]
    metric: Callable[[Any], Tensor]
    rows: int
    chunk: int
    required: bool
    progress: bool
    make_hooks: Callable[[Sequence[int], int], HookFns]


SweepStrategy = Callable[[PatchSweep], "Tensor | None"]

_STRATEGIES: Plugins[SweepStrategy] = Plugins(ENTRY_POINT_GROUP, "sweep strategy", "strategy(sweep)")


def register_sweep_strategy(strategy: SweepStrategy) -> SweepStrategy:
    """Add ``strategy`` to those :func:`run_sweep` asks (once; usable as a decorator)."""
    return _STRATEGIES.register(strategy)


def sweep_strategies() -> list[SweepStrategy]:
    """The installed strategies (entry points, then those registered in this process), each once."""
    return _STRATEGIES.all()


def run_sweep(sweep: PatchSweep, strategy: SweepStrategy | None = None) -> Tensor | None:
    """The metric after each patch of ``sweep`` (``[len(sweep.hooks)]``) from the first strategy
    that takes it (``strategy`` alone when given), or ``None`` for the plain batched path."""
    candidates = [strategy] if strategy is not None else sweep_strategies()
    for s in candidates:
        values = s(sweep)
        if values is None:
            continue
        if not isinstance(values, Tensor) or tuple(values.shape) != (len(sweep.hooks),):
            got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(f"sweep strategy {describe(s)} returned {got}, expected [{len(sweep.hooks)}]")
        return values
    if sweep.required:
        tried = "; ".join(describe(s) for s in candidates) or "none installed"
        raise ValueError(
            f"patching_sweep(reuse_prefix=True): no sweep strategy reuses the base run for "
            f"{type(sweep.model).__name__} on this batch (strategies: {tried}); pass reuse_prefix=None "
            "or False for the plain batched sweep"
        )
    return None


def reads_positions(metric: Callable, positions: Sequence[int]) -> Callable:
    """Declare that ``metric`` reads its output only at ``positions`` (indices along the position
    axis, negative ones from the end, the same for every row: ``[-1]`` is the last position, the
    last real token of each row of a left-padded batch); returns ``metric``. A sweep strategy may
    then compute the output at those positions only (:func:`metric_positions`)."""
    if not callable(metric):
        raise TypeError(f"reads_positions: metric must be callable, got {type(metric).__name__}")
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence):
        raise TypeError(f"reads_positions: positions must be a list of ints, got {positions!r}")
    if not positions or not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise ValueError(f"reads_positions: positions must be a non-empty list of ints, got {positions!r}")
    metric.reads_positions = tuple(positions)  # type: ignore[attr-defined]
    return metric


def metric_positions(metric: Callable) -> tuple[int, ...] | None:
    """The positions ``metric`` declared with :func:`reads_positions`; ``None``: it reads them all."""
    positions = getattr(metric, "reads_positions", None)
    return None if positions is None else tuple(positions)


def describe(strategy: SweepStrategy) -> str:
    """A strategy's name and the first line of its docstring."""
    name = getattr(strategy, "__qualname__", None) or type(strategy).__name__
    doc = (getattr(strategy, "__doc__", None) or "").strip().splitlines()
    return f"{name} ({doc[0].rstrip('.')})" if doc else name
