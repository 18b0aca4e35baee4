"""Room ``sweeps``: patching sweeps that reuse the base run on a causal language model.

* :mod:`.layer_skip`: start a forward at a later layer on the base run's residual stream.
"""
