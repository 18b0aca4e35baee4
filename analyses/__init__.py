"""Analyses of hooked models, written against hook names only (``hooked.Hookable``).

Each module registers its command-line entry points with ``@hooked.register_analysis``.
"""
