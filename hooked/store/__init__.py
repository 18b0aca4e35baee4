"""Activation stores: a hooked model's activations at chosen hooks, on disk, larger than memory.

* :func:`harvest` ``(model, batches, hooks, out)`` runs the model over an iterable of batches and
  writes Arrow shards, one row per token (or per sample for non-sequence models), resumable after
  a crash and spread over ranks under ``torchrun``; ``hooked harvest`` on the command line.
* :func:`open` ``(DIR)`` reads a store back as a memory-mapped ``datasets.Dataset`` (torch format)
  with integer columns ``row``, ``sequence``, ``position`` (token rows only) and one column per
  hook, named by the hook; :func:`iter_batches` streams shuffled torch batches from it in constant
  memory; :func:`read_manifest` gives what the store holds (``verify=True`` checks every hash).

pyarrow and datasets are imported when a store is written or read, not with this package.
"""

from hooked.store.manifest import FORMAT, StoreError, read_manifest
from hooked.store.reader import iter_batches, manifest_of, open, store_path
from hooked.store.writer import harvest

__all__ = [
    "FORMAT",
    "StoreError",
    "harvest",
    "iter_batches",
    "manifest_of",
    "open",
    "read_manifest",
    "store_path",
]
