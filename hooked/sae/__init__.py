"""Sparse autoencoders and transcoders on any hooked model: train them on activation stores, splice
them into the forward, read, patch and steer their features.

* :class:`SAE` / :class:`Transcoder` (:mod:`hooked.sae.dictionary`): the dictionaries (kinds
  ``standard``, ``topk``, ``batchtopk``, ``jumprelu``), each a hooked model with SAELens's hook
  points; ``encode``, ``decode``, ``forward``.
* :func:`save` / :func:`load` (:mod:`hooked.sae.files`): SAELens's on-disk layout, checked on load.
* :func:`spliced`, :func:`run_with_cache`, :func:`run_with_hooks`, :func:`splice_hooks`
  (:mod:`hooked.sae.splice`): dictionaries in a model's forward, features cached and hooked as
  ``<hook>.hook_sae_acts_post``; :func:`steer` and :func:`ablate` give hooks that edit them.
* :func:`train` (:mod:`hooked.sae.training`): training on a ``hooked harvest`` store, several
  dictionaries in one pass, checkpoints, resume, ``torchrun``.
* :func:`evaluate` (:mod:`hooked.sae.evaluation`): explained variance, L0, dead / dense features,
  loss recovered and per-feature top contexts of a dictionary spliced into a language model.

Command line: ``hooked sae train ...`` and ``hooked sae eval ...``. The generic parts use only the
core's protocol; :mod:`hooked.sae.evaluation` alone uses :mod:`hooked.lm`.
"""

from typing import TYPE_CHECKING

from hooked.sae.dictionary import KINDS, SAE, Transcoder
from hooked.sae.files import SAEFileError, dictionary_folders, load, save
from hooked.sae.splice import (
    POINTS,
    Spliced,
    ablate,
    feature_name,
    run_with_cache,
    run_with_hooks,
    splice_hooks,
    spliced,
    steer,
)

if TYPE_CHECKING:  # loaded on first use (below); named here for type checkers
    from hooked.sae.evaluation import evaluate
    from hooked.sae.training import TrainingError, train

__all__ = [
    "KINDS",
    "POINTS",
    "SAE",
    "SAEFileError",
    "Spliced",
    "Transcoder",
    "TrainingError",
    "ablate",
    "dictionary_folders",
    "evaluate",
    "feature_name",
    "load",
    "run_with_cache",
    "run_with_hooks",
    "save",
    "splice_hooks",
    "spliced",
    "steer",
    "train",
]


def __getattr__(name: str):
    # Loaded on first use: training reads stores (pyarrow), evaluation needs a language model.
    if name in ("train", "TrainingError"):
        from hooked.sae import training

        return getattr(training, name)
    if name == "evaluate":
        from hooked.sae.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'hooked.sae' has no attribute {name!r}")
