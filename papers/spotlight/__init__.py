"""The Spotlight Resonance Method (Bird 2025) on digit autoencoders: ``hooked repro spotlight``.

The method itself is generic (:mod:`analyses.spotlight`); here: which basis each activation
function's bottleneck prefers.

* :mod:`.autoencoder`: the hooked MLP autoencoders with a chosen activation (batched, optionally
  in a rotated basis), the digits, the registered model ``digits-ae``;
* :mod:`.training`: the digits' train / test split, the autoencoders trained side by side as one
  batched model, their checkpoints;
* :mod:`.analysis`: one pass over the digits through the hook point, feeding a
  :class:`~analyses.spotlight.stream.SpotlightAccumulator` per model and epsilon (standard and
  rotated basis against one shared null), the non-SRM check, the verdicts against the paper's
  claims (:func:`~.analysis.paper_claim`);
* :mod:`.report`: the printed tables and the figures; :mod:`.repro`: the command.

The method: ``docs/methods/spotlight.md``.
"""
