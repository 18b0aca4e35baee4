"""Room ``names``: where a decoder's parts are, and what each backend calls them.

* :mod:`.layouts`: :class:`~.layouts.Layout` (module paths of one decoder family's parts), the
  table :data:`~.layouts.LAYOUTS`, and :func:`~.layouts.decoder` / :func:`~.layouts.decoder_layers`,
  which resolve them against a transformers model. A new architecture is a new ``Layout`` there
  (``docs/developing/adding-an-lm-family.md``).
* :mod:`.hook_names`: :class:`~.hook_names.LMNames`, the hook name of each part on the bridge
  (TransformerLens names) or on ``wrap`` (module paths), and the TransformerLens aliases of a
  wrapped model.

Nothing here loads or runs a model; the backends (:mod:`hooked.lm.backends`) build on it.
"""
