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
(per-head results are read from ``hook_result`` or computed from ``hook_z`` on demand),
``toggle_autodiff`` sets ``torch.set_grad_enabled`` as TransformerLens's does.

**Gradient caches.** TransformerLens users build a cache of gradients by hand (backward hooks, then
``ActivationCache(grads, model)``) and call the same methods on it; its ``stack_head_results``
then needs the gradients at ``hook_result`` (mapping ``hook_z``'s gradient through ``W_O`` is a
forward map applied to a gradient, and wrong). Here a cache knows what it holds: one from
``run_with_cache`` is a forward cache (its ``<name>_grad`` entries, with ``incl_bwd=True``, are
never read by these methods), and ``cache.gradients()`` gives the gradient cache: the
``<name>_grad`` entries under the forward names, whose methods know they read gradients.
On it ``stack_head_results`` gives the gradient with respect to each head's result (``hook_result``'s
gradient, else the attention output's, the same for every head; it refuses otherwise),
``accumulated_resid`` / ``decompose_resid`` / ``stack_activation`` stack gradients as
TransformerLens's do, and what needs forward activations (norms: ``apply_ln``,
``apply_ln_to_stack``, ``logit_attrs``) refuses.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from hooked.lm.backends.backend import CACHE_METHODS
from hooked.lm.toolkit import resid


class TLCacheMethods:
    """TransformerLens's cache methods for the caches of one model (held weakly: a cache never
    keeps its model alive; a method called after the model is gone says so). ``gradient=True``:
    the methods of a gradient cache (:meth:`gradients`)."""

    def __init__(self, model: Any, gradient: bool = False):
        self._model = weakref.ref(model)
        self.gradient = gradient

    def _forward_only(self, what: str) -> None:
        if self.gradient:
            raise ValueError(
                f"{what} applies norms at the scales of the forward's residual stream, and this is a "
                "gradient cache (cache.gradients()): call it on the forward cache"
            )

    def gradients(self, cache: Any) -> Any:
        """The gradient cache: this cache's ``<name>_grad`` entries (``run_with_cache(...,
        incl_bwd=True)``) under their forward names, answering these methods as gradients (see the
        module docstring)."""
        if self.gradient:
            raise ValueError("cache.gradients(): this cache holds gradients already")
        grads = {name.removesuffix("_grad"): t for name, t in cache.items() if name.endswith("_grad")}
        if not grads:
            raise ValueError(
                "cache.gradients(): this cache holds no gradients; run run_with_cache(..., "
                "incl_bwd=True, metric=fn) to record them"
            )
        from hooked.cache import ActivationCache

        aliases = {k: v for k, v in cache.aliases.items() if v in grads}
        return ActivationCache(grads, aliases=aliases).with_methods(TLCacheMethods(self.model(), True))

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
        if apply_ln:
            self._forward_only("accumulated_resid(apply_ln=True)")
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
        if apply_ln:
            self._forward_only("decompose_resid(apply_ln=True)")
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
        """Every head's output, or on a gradient cache the gradient with respect to it
        (:func:`hooked.lm.stack_head_results` with ``grad``)."""
        return resid.stack_head_results(
            self.model(),
            _GradNames(cache) if self.gradient else cache,
            layer,
            return_labels=return_labels,
            incl_remainder=incl_remainder,
            pos_slice=pos_slice,
            apply_ln=apply_ln,
            grad=self.gradient,
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
        self._forward_only("apply_ln_to_stack")
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
        self._forward_only("logit_attrs")
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
        """Per-head results are read from ``hook_result`` or computed from ``hook_z`` when asked for
        (``stack_head_results``; on a gradient cache, from the gradients at ``hook_result`` or the
        attention output)."""

    def toggle_autodiff(self, cache: Any, mode: bool = False) -> None:
        torch.set_grad_enabled(mode)

    def cache_dict(self, cache: Any) -> dict[str, Tensor]:
        """``cache.cache_dict``: name -> tensor (an attribute, as in TransformerLens)."""
        return cache.to_dict()

    cache_dict.cache_property = True  # type: ignore[attr-defined]


class _GradNames(Mapping[str, Tensor]):
    """A gradient cache seen with the ``<name>_grad`` names of ``run_with_cache(incl_bwd=True)``,
    which :mod:`hooked.lm.toolkit.resid` reads with ``grad=True``."""

    def __init__(self, cache: Any):
        self._cache = cache

    def __getitem__(self, name: str) -> Tensor:
        if not name.endswith("_grad"):
            raise KeyError(f"{name!r}: a gradient cache holds gradients only")
        return self._cache[name.removesuffix("_grad")]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.endswith("_grad") and name.removesuffix("_grad") in self._cache

    def __iter__(self) -> Iterator[str]:
        return (name + "_grad" for name in self._cache)

    def __len__(self) -> int:
        return len(self._cache)


CACHE_METHODS["class"] = TLCacheMethods
