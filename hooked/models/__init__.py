"""Hooked models: each is a :class:`~hooked.HookedModule` with named hook points.

* :class:`ToyReLU`: the toy ReLU model of superposition (many instances at once).
"""

from hooked.models.toy_relu import ToyReLU, sparse_features, train_toy_relu, weighted_mse

__all__ = ["ToyReLU", "sparse_features", "train_toy_relu", "weighted_mse"]
