"""Representations of RNN weights (Herrmann, Faccio & Schmidhuber 2024): ``hooked repro weight-space``.

* :mod:`.zoo`: the RNN model zoos (tasks, batched training with snapshots, the ``Zoo`` store; one
  member registered as ``zoo-lstm``);
* :mod:`.encoders`: the encoders of their weights and the emulation objective (registered as
  ``ws-flat``, ``ws-stats``, ``ws-transformer``, ``ws-dws``, ``ws-noninteractive``,
  ``ws-interactive``);
* :mod:`.evaluation`: task splits, downstream targets, probes of the frozen embeddings;
* :mod:`.report`: verdict, table, plot; :mod:`.repro`: the command.

The method: ``docs/methods/weight-space.md``.
"""
