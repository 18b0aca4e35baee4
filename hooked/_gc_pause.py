"""The cyclic garbage collector held off for the span of one recording call.

``run_with_cache`` of every hook point attaches and removes hundreds of hooks and keeps hundreds
of tensors per call; those allocations start several collections of the cyclic collector per call,
each a walk of every tracked object in the process (a loaded language model and its TransformerLens
bridge hold hundreds of thousands). Measured on SmolLM2 (``benchmarks/peers.py``'s job "cache
every module's input and output"): about a fifth of the call's time. What such a call allocates is
freed by reference counting; cycles it may leave are collected at the next collection after it.

:func:`paused` disables the collector while its block runs, when it was enabled, and enables it
again afterwards (also when the block raises). Nested blocks leave it to the outermost one.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection of reference cycles while the block runs."""
    was_on = gc.isenabled()
    if was_on:
        gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
