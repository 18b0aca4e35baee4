"""Hooked models that any user reuses: each is a :class:`~hooked.HookedModule` with named hook points.

* :class:`ToyReLU`: the toy ReLU model of superposition (many instances at once), its data
  (:func:`sparse_uniform`) and batched training (:func:`train_instances`).
* :class:`HookedGRU`, :class:`HookedLSTM`: drop-in ``nn.GRU`` / ``nn.LSTM`` with per-step hook points.
* ``smollm2-135m`` and ``tiny-llama`` (:mod:`hooked.models.lm`): language models, registered by
  name; transformers loads only when one is built.

The models of one paper live with that paper and register through the same ``hooked.models``
entry points: the repeat-task GRU/LSTM in :mod:`papers.onion.repeat`, the digit autoencoders in
:mod:`papers.spotlight.autoencoder`, the RNN zoos and their weight encoders in
:mod:`papers.weight_space.zoo` and :mod:`papers.weight_space.encoders`.
"""

from hooked.models.rnn import HookedGRU, HookedLSTM
from hooked.models.toy_relu import ToyReLU, sparse_uniform, weighted_mse
from hooked.models.toy_relu_training import train_instances

__all__ = [
    "HookedGRU",
    "HookedLSTM",
    "ToyReLU",
    "sparse_uniform",
    "train_instances",
    "weighted_mse",
]
