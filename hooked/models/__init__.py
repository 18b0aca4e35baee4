"""Hooked models: each is a :class:`~hooked.HookedModule` with named hook points.

* :class:`ToyReLU`: the toy ReLU model of superposition (many instances at once).
* :class:`ZooLSTM`, :class:`Zoo`, :func:`build_zoo`: RNN model zoos trained as one stacked
  computation (:mod:`hooked.models.zoo`); encoders of their weights in
  :mod:`hooked.models.weight_encoders`.
"""

from hooked.models.toy_relu import ToyReLU, sparse_features, train_toy_relu, weighted_mse
from hooked.models.zoo import Zoo, ZooLSTM, build_zoo

__all__ = ["ToyReLU", "Zoo", "ZooLSTM", "build_zoo", "sparse_features", "train_toy_relu", "weighted_mse"]
