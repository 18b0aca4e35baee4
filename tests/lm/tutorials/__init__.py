"""TransformerLens's own tutorial notebooks, run unchanged on both backends (issue 27).

``notebooks.json`` holds the code cells of four TransformerLens demo notebooks, extracted by
``extract.py`` (the source repository, commit and notebook paths are in its header); the only
changes are the model-loading lines listed in its ``adaptations``. ``runner.py`` runs one notebook
on one backend in a fresh process and records what each cell left behind; ``compare.py`` compares
two such records; ``test_tutorials.py`` runs every notebook on TransformerLens's own bridge and on
``lm.load(..., backend="bridge" | "wrap")`` and checks that the same cells run, with the same
numbers.
"""
