"""Onion representations in small RNNs (Csordás et al. 2024): ``hooked repro onion``.

* :mod:`.repeat`: the repeat task (data, the GRU/LSTM model registered as ``repeat-gru`` /
  ``repeat-lstm``, its training and accuracy);
* :mod:`.glue`: the repeat task's counterfactual batches (unigram, bigram, onion), loss, metric;
* :mod:`.training`: the model of one size and seed, then its interventions and probes;
* :mod:`.report`: the size x method table, the verdict against the claim, the plot;
* :mod:`.repro`: the command. The method: ``docs/methods/onion.md``.
"""
