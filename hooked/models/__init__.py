"""Hooked models: each is a :class:`~hooked.HookedModule` with named hook points.

* :class:`ToyReLU`: the toy ReLU model of superposition (many instances at once).
* ``smollm2-135m`` and ``tiny-llama`` (:mod:`hooked.models.lm`): language models, registered by
  name; transformers loads only when one is built.
* :class:`Autoencoder`: MLP autoencoders with a chosen activation (the spotlight resonance study).
* :class:`ZooLSTM`, :class:`Zoo`, :func:`build_zoo`: RNN model zoos trained as one stacked
  computation (:mod:`hooked.models.zoo`); encoders of their weights in
  :mod:`hooked.models.weight_encoders`.
"""

from hooked.models.autoencoder import Autoencoder, load_digits, train_autoencoder
from hooked.models.toy_relu import ToyReLU, sparse_features, train_toy_relu, weighted_mse
from hooked.models.zoo import Zoo, ZooLSTM, build_zoo

__all__ = [
    "Autoencoder",
    "ToyReLU",
    "Zoo",
    "ZooLSTM",
    "build_zoo",
    "load_digits",
    "sparse_features",
    "train_autoencoder",
    "train_toy_relu",
    "weighted_mse",
]
