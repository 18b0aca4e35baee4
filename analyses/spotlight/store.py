"""Spotlight resonance over an activation store (:mod:`hooked.store`): no model run, constant memory.

:func:`spotlight_store` feeds a :class:`~analyses.spotlight.stream.SpotlightAccumulator` with a
hook's column of a store, read in row order a chunk at a time; every stored row is a sample (a
token of a token store, so padding, which a store does not hold, is never counted). On the rows
of the same model and data it counts what :func:`~analyses.spotlight.stream.spotlight_model`
counts.
"""

from __future__ import annotations

from typing import Any

from analyses.spotlight.stream import ModelSpotlight, SpotlightAccumulator


def spotlight_store(
    store: Any,
    hook: str,
    *,
    chunk_rows: int = 65536,
    labels: str | None = None,
    **options: Any,
) -> ModelSpotlight:
    """SRM, cone membership and (with ``null_bases``) the alignment verdict of a stored hook.

    Args:
        store: the store's folder, or the ``datasets.Dataset`` ``hooked.store.open`` gave.
        hook: the hook (a column of the store).
        chunk_rows: rows read and counted at a time.
        labels: an integer column of the store used as the cones' labels (e.g. ``"position"``).
        options: those of :class:`SpotlightAccumulator` (``basis``, ``epsilon``, ``null_bases``, ...).
    """
    from hooked.store import iter_batches, manifest_of

    manifest = manifest_of(store)
    if hook not in manifest["hooks"]:
        raise ValueError(f"the store holds no hook {hook!r}; it has {', '.join(manifest['hooks'])}")
    if labels is not None and labels not in ("row", "sequence", "position"):
        raise ValueError(
            f"labels must be an id column of the store (row, sequence, position), got {labels!r}"
        )
    columns = [hook] if labels is None else [hook, labels]
    acc = SpotlightAccumulator(hook=hook, **options)
    for batch in iter_batches(store, chunk_rows, shuffle=False, columns=columns):
        acc.add(batch[hook], batch[labels] if labels is not None else None)
    if not acc.n_batches:
        raise ValueError(f"spotlight_store: the store {store} has no rows")
    return acc.result()
