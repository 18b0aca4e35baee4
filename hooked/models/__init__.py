"""Hooked models: each is a :class:`~hooked.HookedModule` with named hook points.

* :class:`ToyReLU`: the toy ReLU model of superposition (many instances at once), its data
  (:func:`sparse_uniform`) and batched training (:func:`train_instances`).
* :class:`HookedGRU`, :class:`HookedLSTM`: drop-in ``nn.GRU`` / ``nn.LSTM`` with per-step hook points.
* :class:`RepeatModel`: the onion paper's repeat-task model (one GRU/LSTM as encoder and decoder).
* :class:`Autoencoder`: MLP autoencoders with a chosen activation (the spotlight resonance study).
* :class:`ZooLSTM`, :class:`Zoo`, :func:`build_zoo`: RNN model zoos trained as one stacked
  computation (:mod:`hooked.models.zoo`); encoders of their weights in
  :mod:`hooked.models.weight_encoders`.
* ``smollm2-135m`` and ``tiny-llama`` (:mod:`hooked.models.lm`): language models, registered by
  name; transformers loads only when one is built.
"""

from hooked.models.autoencoder import Autoencoder, load_digits, train_autoencoder
from hooked.models.repeat import RepeatModel, make_repeat_data, train_repeat
from hooked.models.rnn import HookedGRU, HookedLSTM
from hooked.models.toy_relu import ToyReLU, sparse_uniform, weighted_mse
from hooked.models.toy_relu_training import train_instances
from hooked.models.zoo import Zoo, ZooLSTM, build_zoo

__all__ = [
    "Autoencoder",
    "HookedGRU",
    "HookedLSTM",
    "RepeatModel",
    "ToyReLU",
    "Zoo",
    "ZooLSTM",
    "build_zoo",
    "load_digits",
    "make_repeat_data",
    "sparse_uniform",
    "train_autoencoder",
    "train_repeat",
    "train_instances",
    "weighted_mse",
]
