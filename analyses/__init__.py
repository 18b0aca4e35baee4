"""Analyses of hooked models, written against hook names only (``hooked.Hookable``).

The command-line analyses are registered through the ``hooked.analyses`` entry-point group
(``pyproject.toml``), like any other package's.
"""
