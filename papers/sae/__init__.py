"""What sparse autoencoders find where the answer is known, and on a real language model (issue 24).

* :mod:`papers.sae.bows_recovery`: on the Bag-of-Words Superposition toy model, whose true
  features are its weight columns: does an SAE recover them, with correlated and with
  independent features, at which width and L0 (``hooked repro sae-bows``)?
* :mod:`papers.sae.calendar`: on SmolLM2-135M's residual stream with offline Wikipedia text:
  features for months and days of the week, and whether their directions go round in calendar
  order (``hooked repro sae-calendar``).

Both use only :mod:`hooked.sae`'s public functions (stores, training, encoding).
"""
