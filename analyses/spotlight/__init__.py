"""The Spotlight Resonance Method (Bird 2025): axis alignment of activations at any hook.

The method: ``docs/methods/spotlight.md``.

Does a layer's representation line up with a privileged basis (the neurons, a rotation of them,
or an overcomplete set of directions)? A cone ("spotlight") sweeps around each plane spanned by
two basis vectors and counts the unit activations inside it; peaks at multiples of pi/2 mean the
activations sit along basis vectors, peaks at odd multiples of pi/4 mean they avoid them.

Modules:

* :mod:`~analyses.spotlight.core` - planes, the vectorised counting kernels, the isotropic
  reference, :class:`SpotlightCounter` (streaming) and :func:`spotlight` (one tensor).
* :mod:`~analyses.spotlight.basis` - standard, random and Thomson-point bases.
* :mod:`~analyses.spotlight.alignment` - peak positions and the aligned / anti-aligned /
  isotropic verdict against randomly rotated bases.
* :mod:`~analyses.spotlight.grandmother` - the inputs in each basis direction's cone.
* :mod:`~analyses.spotlight.plots` - ensemble and mean +- std plots.
* :mod:`~analyses.spotlight.stream` - :class:`SpotlightAccumulator` (SRM, cones and verdict of a
  stream of activations, batch by batch), :func:`spotlight_model` (the loop over a hooked
  model's batches that feeds one) and the ``spotlight`` analysis of the command line.
* :mod:`~analyses.spotlight.store` - :func:`spotlight_store`: the same, read from an activation
  store (``hooked.store``) instead of running the model.
"""

from analyses.spotlight.alignment import axis_harmonic, verdict
from analyses.spotlight.basis import (
    random_orthonormal,
    resolve_basis,
    standard_basis,
    thomson,
    thomson_energy,
)
from analyses.spotlight.core import (
    SpotlightCounter,
    SpotlightResult,
    isotropic_reference,
    make_planes,
    n_planes,
    naive_spotlight,
    spotlight,
)
from analyses.spotlight.grandmother import ConeCounter, GrandmotherResult, grandmother
from analyses.spotlight.store import spotlight_store
from analyses.spotlight.stream import ModelSpotlight, SpotlightAccumulator, spotlight_model

__all__ = [
    "ConeCounter",
    "GrandmotherResult",
    "ModelSpotlight",
    "SpotlightAccumulator",
    "SpotlightCounter",
    "SpotlightResult",
    "axis_harmonic",
    "grandmother",
    "isotropic_reference",
    "make_planes",
    "n_planes",
    "naive_spotlight",
    "random_orthonormal",
    "resolve_basis",
    "spotlight",
    "spotlight_model",
    "spotlight_store",
    "standard_basis",
    "thomson",
    "thomson_energy",
    "verdict",
]
