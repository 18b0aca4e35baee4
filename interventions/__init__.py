"""Interventions on hooked models, written against hook names only (``hooked.Hookable``).

They run unchanged on the toy models, the RNNs, and real language models through
TransformerLens's bridge or ``hooked.wrap``.
"""
