"""Hooked models: each is a :class:`~hooked.HookedModule` with named hook points.

* :class:`ToyReLU`: the toy ReLU model of superposition (many instances at once).
* :class:`HookedGRU`, :class:`HookedLSTM`: drop-in ``nn.GRU`` / ``nn.LSTM`` with per-step hook points.
* :class:`RepeatModel`: the onion paper's repeat-task model (one GRU/LSTM as encoder and decoder).
"""

from hooked.models.repeat import RepeatModel, make_repeat_data, train_repeat
from hooked.models.rnn import HookedGRU, HookedLSTM
from hooked.models.toy_relu import ToyReLU, sparse_features, train_toy_relu, weighted_mse

__all__ = [
    "HookedGRU",
    "HookedLSTM",
    "RepeatModel",
    "ToyReLU",
    "make_repeat_data",
    "sparse_features",
    "train_repeat",
    "train_toy_relu",
    "weighted_mse",
]
