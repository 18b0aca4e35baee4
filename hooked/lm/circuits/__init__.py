"""Room ``circuits``: the computational graph of a language model, for :mod:`interventions.circuits`.

* :mod:`.graph`: :func:`~.graph.lm_graph`, the provider that :func:`hooked.circuit_graph.graph_of`
  finds through the core's seam (entry point ``lm`` of the group ``hooked.circuit_graphs``): the
  embeddings, every attention head (its query, key and value inputs as receivers), every MLP and
  the logits of a transformers decoder on ``hooked.wrap`` or TransformerLens's bridge.
"""
