"""Room ``backends``: the forms a loaded language model takes.

* :mod:`.wrapped`: the ``wrap`` backend, :func:`hooked.wrap` plus per-head hook points
  (:mod:`.heads`), padded batches and TransformerLens names.
* :mod:`.bridge`: the ``bridge`` backend, TransformerLens 4's ``TransformerBridge`` with hooked's
  hook methods; :mod:`.bridge_fixes`: what it changes on TransformerLens's bridge.
* :mod:`.forward`: one forward with a key-value cache on any backend (generation, sweeps).
* :mod:`.seen_as`: a hook point as a hook sees it when attached by another name.
"""
