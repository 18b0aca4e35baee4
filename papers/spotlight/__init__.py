"""The Spotlight Resonance Method (Bird 2025) on digit autoencoders: ``hooked repro spotlight``.

The method itself is generic (:mod:`analyses.spotlight`); here: which basis each activation
function's bottleneck prefers. The method: ``docs/methods/spotlight.md``.
"""
