"""Representations of RNN weights (Herrmann, Faccio & Schmidhuber 2024): ``hooked repro weight-space``.

The zoos and encoders are models of the library (:mod:`hooked.models.zoo`,
:mod:`hooked.models.weight_encoders`); here: :mod:`.evaluation` (task splits, downstream targets,
probes of the frozen embeddings), :mod:`.report` (verdict, table, plot) and :mod:`.repro` (the
command). The method: ``docs/methods/weight-space.md``.
"""
