"""Room ``text``: text in and out of a loaded language model.

* :mod:`.tokens`: texts to token ids with the model's own tokenizer, padded batches and their
  masks, and the warning for a padded batch run without its mask.
* :mod:`.generate`: generation with hooks attached, on every backend, with a key-value cache.
"""
