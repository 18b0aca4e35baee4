"""The benchmark suite: cost of instrumentation, as ratios against uninstrumented models.

Run ``python -m benchmarks`` (full sizes) or ``python -m benchmarks --quick`` (seconds, for CI);
``--device cuda`` on a GPU. Each run writes a JSON file under ``benchmarks/results/`` and
regenerates the tables in ``benchmarks/README.md`` from all result files.
"""
