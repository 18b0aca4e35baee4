"""Room ``toolkit``: analyses of a loaded language model's residual stream, on every backend.

* :mod:`.resid`: the logit lens, residual decompositions, per-head results and direct logit
  attribution (TransformerLens's ``ActivationCache`` helpers as functions of ``(model, cache)``).
"""
