"""One forward of a language model on any backend of :func:`hooked.lm.load`, with a key-value cache.

:class:`LMForward` hides how the backends differ (the bridge takes ids positionally and returns
logits; ``hooked.wrap`` and ``hf`` take keywords and return a ``ModelOutput``; the cache keyword is
``cache=`` from transformers 5.24 on, ``past_key_values=`` before) so that :func:`hooked.lm.generate`
and the prefix-reusing patching sweep (:mod:`hooked.lm.sweeps.prefix_reuse`) run one loop on all of
them; which backend a model is comes from its :class:`~hooked.lm.backends.backend.LMBackend`.
:func:`prefix_cache` copies the first positions of a cache for several patched runs, and
:func:`logits_of` finds the logits in any backend's output.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor

from hooked.lm.backends.backend import backend_of


class LMForward:
    """Calls a language model on ``(ids, mask, positions, cache)`` and returns its logits.

    Args:
        model: a model from :func:`hooked.lm.load` (``bridge``, ``wrap`` or ``hf``), or a
            ``hooked.wrap`` / ``TransformerBridge`` of a transformers causal LM.
        fwd_hooks: ``(name or filter, fn)`` pairs that :meth:`hooks` attaches.
    """

    def __init__(self, model: Any, fwd_hooks: Sequence):
        self.model = model
        self.fwd_hooks = list(fwd_hooks or ())
        self.backend = backend_of(model, "LMForward")
        self.hf: Any = self.backend.hf  # the transformers model (Any: its config, forward, ...)
        if self.backend.is_bridge:
            from hooked.lm.backends.bridge import fix_kv_cache

            fix_kv_cache(model)  # idempotent: a bridge booted outside lm.load gets the fix too
        if self.fwd_hooks and self.backend.kind == "hf":
            raise ValueError(
                f"{type(model).__name__} has no hook points (backend 'hf'); load the model with "
                "backend='bridge' or 'wrap' to generate with hooks"
            )
        params = inspect.signature(self.hf.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.pass_positions = "position_ids" in params
        # computing the output head at some positions only (transformers' causal LMs since 4.45)
        self.keep_kwarg = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)

    def new_cache(self, every_position: bool = False) -> Any:
        """An empty key-value cache for this model. ``every_position``: every layer keeps every
        position (no sliding-window layers that drop old ones), so that :func:`prefix_cache` can
        cut it at any length; sliding-window attention is then applied by the mask."""
        import transformers

        if every_position:
            return transformers.DynamicCache()
        return transformers.DynamicCache(config=self.hf.config)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence | None = None) -> Iterator[None]:
        """Attach ``fwd_hooks`` (default: the ones given at construction) for a ``with`` block."""
        fwd_hooks = self.fwd_hooks if fwd_hooks is None else list(fwd_hooks)
        if not fwd_hooks:
            yield
            return
        with self.model.hooks(fwd_hooks=fwd_hooks):
            yield

    def __call__(
        self, ids: Tensor, mask: Tensor, positions: Tensor, cache: Any, keep: Tensor | None = None
    ) -> Tensor:
        """Logits ``[batch, len(ids), vocab]``; ``mask`` covers the cached and the new positions.
        ``keep``: indices into ``ids``' positions; the logits are then ``[batch, len(keep), vocab]``,
        the output head run there only (where the model cannot, at every position, then indexed)."""
        kwargs: dict[str, Any] = {"attention_mask": mask}
        if keep is not None and self.keep_kwarg is not None:
            kwargs[self.keep_kwarg] = keep
        if self.pass_positions:
            kwargs["position_ids"] = positions
        if cache is not None:
            kwargs[self.cache_kwarg] = cache
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        if self.backend.is_bridge:
            logits = self.model(ids, **kwargs)
        else:
            logits = logits_of(self.model(input_ids=ids, **kwargs))
        if keep is not None and logits.shape[1] != len(keep):
            logits = logits[:, keep]  # the model ignored the request: index its whole output
        return logits


def prefix_cache(cache: Any, length: int, rows: Tensor, layer_rows: Sequence[int] | None = None) -> Any:
    """A new cache holding the first ``length`` positions of ``cache``, for the batch rows ``rows``
    (a row may be taken several times); ``cache`` itself is left as it was. ``layer_rows``: layer
    ``i`` holds only the first ``layer_rows[i]`` of ``rows`` (a forward whose layers run different
    numbers of rows, :func:`hooked.lm.sweeps.layer_skip.ragged`; a cache of ``DynamicLayer`` s
    only, :func:`per_layer_rows` says whether ``cache`` is one)."""
    if cache.get_seq_length() < length:
        raise ValueError(f"prefix_cache: the cache holds {cache.get_seq_length()} positions, not {length}")
    if per_layer_rows(cache):  # each layer's keys and values cut and indexed, no copy of the rest
        out = type(cache)()
        for i, layer in enumerate(cache.layers):
            take = rows if layer_rows is None else rows[: layer_rows[i]]
            keys = layer.keys[:, :, :length].index_select(0, take)
            out.update(keys, layer.values[:, :, :length].index_select(0, take), i)
        return out
    if layer_rows is not None:
        raise ValueError(f"prefix_cache: a {type(cache).__name__} cannot hold other rows in each layer")
    out = copy.deepcopy(cache)
    extra = out.get_seq_length() - length
    if extra:
        param = next(iter(inspect.signature(out.crop).parameters))
        out.crop(-extra if param == "tokens_to_remove" else length)  # transformers >= 5.24 / older
    out.batch_select_indices(rows)
    return out


def per_layer_rows(cache: Any) -> bool:
    """Whether ``cache`` is a ``DynamicCache`` of plain ``DynamicLayer`` s, every one filled: then
    :func:`prefix_cache` can give each layer its own rows."""
    if type(cache).__name__ != "DynamicCache" or not getattr(cache, "layers", None):
        return False
    return all(
        type(layer).__name__ == "DynamicLayer"
        and getattr(layer, "is_initialized", False)
        and isinstance(getattr(layer, "keys", None), Tensor)
        for layer in cache.layers
    )


def logits_of(out: Any) -> Tensor:
    """The logits of an LM's forward output (a tensor, a ``ModelOutput`` or a tuple)."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"cannot find logits in a {type(out).__name__}")
