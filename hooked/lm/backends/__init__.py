"""Room ``backends``: the forms a loaded language model takes, and the one object that says which.

* :mod:`.backend`: :class:`~.backend.LMBackend`, one per model (:func:`~.backend.backend_of`):
  which backend it is (``bridge``, ``wrap``, ``hf``), its transformers model, its decoder and the
  hook names of its parts.
* :mod:`.wrapped`: the ``wrap`` backend, :func:`hooked.wrap` plus TransformerLens's hook points
  inside attention (:mod:`.heads`: ``hook_z``, ``hook_pattern``, ``hook_attn_scores``, rotated
  queries and keys; :mod:`.head_inputs`: per-head inputs; :mod:`.projections`: ``hook_q/k/v``,
  ``hook_result``) and the norms (:mod:`.norms`), padded batches and TransformerLens names;
  :mod:`.tl_model`: TransformerLens's model API on it.
* :mod:`.bridge`: the ``bridge`` backend, TransformerLens 4's ``TransformerBridge`` as one
  subclass with hooked's hook methods and the fixes the pinned TransformerLens needs.
* :mod:`.forward`: one forward with a key-value cache on any backend (generation, sweeps).
* :mod:`.seen_as`: a hook point as a hook sees it when attached by another name.
"""
