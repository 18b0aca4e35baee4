"""Room ``sweeps``: patching sweeps that reuse the base run on a causal language model.

* :mod:`.strategy`: :class:`~.strategy.LMSweep`, the sweep strategy that
  :func:`interventions.patching.patching_sweep` gets through the core's seam
  (:mod:`hooked.sweeps`) for a causal language model: when to reuse what, with which constants.
* :mod:`.prefix_reuse`: the engine: one base run, then each patch recomputes only the positions
  from its position on and the layers from its layer on, grouped into forwards by a cost model.
* :mod:`.layer_skip`: start a forward at a later layer on the base run's residual stream.
"""
