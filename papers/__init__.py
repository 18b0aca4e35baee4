"""The paper reproductions: one folder per paper, each a plugin of the library.

Each folder holds what only that paper needs (its data, its training runs, the analysis of its
claims and the report) and registers its ``hooked repro NAME`` command through the
``hooked.repros`` entry-point group, the same way any other installed package would. The library
(``hooked``, ``interventions``, ``analyses``) never imports from here. The method of each paper,
in the project's words, is in ``docs/methods/``.

* :mod:`papers.tms`: Toy Models of Superposition (Elhage et al. 2022).
* :mod:`papers.bows`: Bag-of-Words Superposition (Prieto et al. 2026).
* :mod:`papers.onion`: onion representations in small RNNs (Csordás et al. 2024).
* :mod:`papers.spotlight`: the Spotlight Resonance Method (Bird 2025).
* :mod:`papers.weight_space`: representations of RNN weights (Herrmann et al. 2024).
* :mod:`papers.lm`: the methods on a real language model (SmolLM2-135M, offline).
"""
