"""TransformerLens's ``ActivationCache`` methods on the caches of a language model, both backends.

:class:`TLCacheMethods` is what :meth:`hooked.ActivationCache.with_methods` hands the core's
cache (the seam: the core imports nothing of ``hooked.lm``): ``cache.accumulated_resid(...)``,
``cache.decompose_resid(...)``, ``cache.stack_head_results(...)``, ``cache.apply_ln_to_stack(...)``,
``cache.logit_attrs(...)``, ``cache.stack_activation(...)``, ``cache.compute_head_results()``,
``cache.cache_dict`` and ``cache.toggle_autodiff`` with TransformerLens's arguments, each the
function of :mod:`hooked.lm.toolkit.resid` of the same name on the model the cache came from.
:class:`hooked.lm.WrappedLM` and the bridge (:class:`hooked.lm.backends.bridge.HookedBridge`)
attach them in ``run_with_cache`` (this module registers the class in
``hooked.lm.backends.backend.CACHE_METHODS`` when imported, which ``import hooked.lm`` does).

Differences from TransformerLens's methods are those of :mod:`hooked.lm.toolkit.resid` (norms
applied with their gains, as an unprocessed model needs); ``compute_head_results`` is a no-op
(per-head results are computed from ``hook_z`` on demand), ``toggle_autodiff`` sets
``torch.set_grad_enabled`` as TransformerLens's does.
"""

from __future__ import annotations

import weakref
from typing import Any, Literal

import torch
from torch import Tensor

from hooked.lm.backends.backend import CACHE_METHODS
from hooked.lm.toolkit import resid


class TLCacheMethods:
    """TransformerLens's cache methods for the caches of one model (held weakly: a cache never
    keeps its model alive; a method called after the model is gone says so)."""

    def __init__(self, model: Any):
        self._model = weakref.ref(model)

    def model(self) -> Any:
        model = self._model()
        if model is None:
            raise RuntimeError("this cache's model no longer exists; its TransformerLens methods need it")
        return model

    def accumulated_resid(
        self,
        cache: Any,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Any = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ) -> Any:
        return resid.accumulated_resid(
            self.model(),
            cache,
            layer,
            incl_mid=incl_mid,
            apply_ln=apply_ln,
            pos_slice=pos_slice,
            mlp_input=mlp_input,
            return_labels=return_labels,
        )

    def decompose_resid(
        self,
        cache: Any,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: Literal["all", "mlp", "attn"] = "all",
        apply_ln: bool = False,
        pos_slice: Any = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ) -> Any:
        return resid.decompose_resid(
            self.model(),
            cache,
            layer,
            mlp_input=mlp_input,
            mode=mode,
            apply_ln=apply_ln,
            pos_slice=pos_slice,
            incl_embeds=incl_embeds,
            return_labels=return_labels,
        )

    def stack_head_results(
        self,
        cache: Any,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: Any = None,
        apply_ln: bool = False,
    ) -> Any:
        return resid.stack_head_results(
            self.model(),
            cache,
            layer,
            return_labels=return_labels,
            incl_remainder=incl_remainder,
            pos_slice=pos_slice,
            apply_ln=apply_ln,
        )

    def apply_ln_to_stack(
        self,
        cache: Any,
        residual_stack: Tensor,
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> Tensor:
        if batch_slice is not None or not has_batch_dim:
            raise NotImplementedError(
                "apply_ln_to_stack: batch_slice / has_batch_dim=False are not supported"
            )
        return resid.apply_ln_to_stack(
            self.model(),
            cache,
            residual_stack,
            layer,
            mlp_input=mlp_input,
            pos_slice=pos_slice,
            recompute_ln=recompute_ln,
        )

    def logit_attrs(
        self,
        cache: Any,
        residual_stack: Tensor,
        tokens: Any,
        incorrect_tokens: Any = None,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
    ) -> Tensor:
        if batch_slice is not None or not has_batch_dim:
            raise NotImplementedError("logit_attrs: batch_slice / has_batch_dim=False are not supported")
        return resid.logit_attrs(
            self.model(), cache, residual_stack, tokens, incorrect_tokens, pos_slice=pos_slice
        )

    def stack_activation(
        self, cache: Any, activation_name: str, layer: int = -1, sublayer_type: str | None = None
    ) -> Tensor:
        """``cache[activation_name, l]`` for the layers before ``layer`` (all for -1), stacked on a
        new axis 0."""
        n = self.model().cfg.n_layers
        stop = n if layer == -1 else layer
        return torch.stack(
            [
                cache[activation_name, i, sublayer_type] if sublayer_type else cache[activation_name, i]
                for i in range(stop)
            ]
        )

    def compute_head_results(self, cache: Any) -> None:
        """Per-head results are computed from ``hook_z`` when asked for (``stack_head_results``)."""

    def toggle_autodiff(self, cache: Any, mode: bool = False) -> None:
        torch.set_grad_enabled(mode)

    def cache_dict(self, cache: Any) -> dict[str, Tensor]:
        """``cache.cache_dict``: name -> tensor (an attribute, as in TransformerLens)."""
        return cache.to_dict()

    cache_dict.cache_property = True  # type: ignore[attr-defined]


CACHE_METHODS["class"] = TLCacheMethods
