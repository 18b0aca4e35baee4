"""The sweep strategy of causal language models: prefix reuse and layer skipping.

:func:`interventions.patching.patching_sweep` asks the core's seam (:mod:`hooked.sweeps`) for a
strategy; this module's :data:`lm_sweep` is the one this project installs (entry point ``lm`` of
the group ``hooked.sweep_strategies``; importing :mod:`hooked.lm` registers it too). On a causal
language model (any backend of :func:`hooked.lm.load`, or a ``hooked.wrap`` / bridge of a
transformers causal LM made elsewhere) and a token batch it runs the sweep through
:func:`hooked.lm.sweeps.prefix_reuse.reuse_sweep`:

* patches at positions (``pos_dim=1``, every hook's activation ``[rows, T, ...]``): each patched
  forward recomputes only the positions from its patch's position on and the layers from its
  patch's layer on (``reuse_prefix=None`` or ``True``);
* patches along another axis (``pos_dim=2``: heads) or of whole activations: only the layers before
  each patch are reused (``reuse_prefix=None``), where some hook fires after the first layer.

Anything else is left to the plain batched sweep (``None``); with ``reuse_prefix=True`` a causal
LM whose sweep does not fit is refused with the reason. The numbers equal the plain sweep's within
float noise (``tests/lm/test_prefix_reuse.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from hooked.lm.sweeps.layer_skip import layer_of
from hooked.lm.sweeps.prefix_reuse import FORWARD_OVERHEAD, WIDEST_BAND, causal_lm_forward, reuse_sweep
from hooked.lm.text.tokens import batch_ids_and_mask
from hooked.sweeps import PatchSweep, register_sweep_strategy


@dataclass(frozen=True)
class LMSweep:
    """Causal language models: reuse the base run's keys, values and layer outputs before each patch.

    Args:
        forward_overhead: a forward's fixed cost in row-tokens of its compute, the planner's cost
            constant (:data:`hooked.lm.sweeps.prefix_reuse.FORWARD_OVERHEAD`: 37, measured for
            SmolLM2-135M on a 2-core CPU; larger on a GPU, where launching a forward costs more
            against its rows). Only how patches are grouped into forwards depends on it, not the
            numbers.
        widest_band: at most this many neighbouring start positions are planned together.
    """

    forward_overhead: float = FORWARD_OVERHEAD
    widest_band: int = WIDEST_BAND

    def __call__(self, sweep: PatchSweep) -> Tensor | None:
        forward = causal_lm_forward(sweep.model, sweep.base)
        if forward is None:
            return None  # not a causal LM on a token batch: not this strategy's sweep
        length = batch_ids_and_mask(sweep.base)[0].shape[1]
        why = _why_not_by_position(sweep, length)
        if why is None:
            assert sweep.positions is not None  # _why_not_by_position said so
            starts = [int((p % length).min()) for p in sweep.positions]
            return reuse_sweep(
                forward, sweep, starts, overhead=self.forward_overhead, widest_band=self.widest_band
            )
        if sweep.required:
            raise ValueError(f"patching_sweep(reuse_prefix=True): {why}")
        stack = forward.backend.layers
        if stack is None or not any(layer_of(h, stack[0]) > 0 for h in sweep.hooks):
            return None
        return reuse_sweep(
            forward,
            sweep,
            [0] * len(sweep.hooks),
            overhead=self.forward_overhead,
            widest_band=self.widest_band,
        )


def _why_not_by_position(sweep: PatchSweep, length: int) -> str | None:
    """Why the positions before each patch cannot be reused (``None``: they can)."""
    if sweep.positions is None or sweep.pos_dim != 1:
        return "it needs positions on axis 1 (pos_dim=1) of a causal LM's token batch"
    bad = [h for h, a in sweep.sources.items() if a.dim() < 2 or a.shape[1] != length]
    if bad:
        return f"the activations at {bad[:3]} have no position axis of length {length} on axis 1"
    return None


lm_sweep = register_sweep_strategy(LMSweep())
"""The strategy :mod:`hooked.sweeps` finds for causal language models (entry point ``lm``)."""
