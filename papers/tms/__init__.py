"""Toy Models of Superposition (Elhage et al. 2022): ``hooked repro tms``.

* :mod:`.data`: the sparsity sweep of the paper.
* :mod:`.training`: train a sweep of toy ReLU models as one batched model.
* :mod:`.analysis`: the three sweeps and the phase diagram, read through ``hook_hidden``, and the
  paper's claims checked against them.
* :mod:`.repro`: the command. The method: ``docs/methods/tms.md``.
"""
