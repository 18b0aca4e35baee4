"""Bag-of-Words Superposition (Prieto et al. 2026): ``hooked repro bows`` and ``bows-synthetic``.

* data: :mod:`.synthetic` (binary features with a known co-activation structure) and
  :mod:`.corpus` (real text -> vocabulary -> binary bag-of-words windows, cached on disk);
* :mod:`.training`: every setting is one instance of one batched toy ReLU model;
* :mod:`.analysis`: Gram matrices, the months' cycle, interference, clusters, latent sizes;
* :mod:`.report`: summaries, the claims table, figures; :mod:`.repro`: the two commands.

The method: ``docs/methods/bows.md``.
"""
