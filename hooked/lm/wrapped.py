"""The ``wrap`` backend of a language model: :func:`hooked.wrap` plus what a decoder has on top.

:class:`WrappedLM` is a :class:`hooked.Wrapped` (hook points ``P.hook_in`` / ``P.hook_out`` on
every module, logits out) that adds, for a decoder of a known layout (:mod:`hooked.lm.arch`):

* per-head hook points on every attention module ``P``: ``P.hook_z`` and ``P.hook_pattern``
  (:mod:`hooked.lm.heads`), listed in ``hook_dict`` right after ``P.hook_out``;
* padded batches: with an ``attention_mask`` that pads rows on the left and no ``position_ids``,
  each row's positions are counted from its first real token (as TransformerLens's bridge does,
  and transformers' own ``generate``; the model's forward alone would count from the padding,
  which is wrong for absolute position embeddings such as GPT-2's). Ids that look padded but
  come without a mask warn (:func:`hooked.lm.tokens.warn_if_padded_without_mask`);
* TransformerLens names for reading its caches: ``run_with_cache`` returns a cache in which
  ``cache["blocks.3.hook_resid_pre"]`` and ``cache["resid_pre", 3]`` find
  ``model.layers.3.hook_in`` (the keys stay the names that were asked for).

A model of no known layout is wrapped all the same, without per-head points and names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from hooked.lm.arch import decoder
from hooked.lm.tokens import warn_if_padded_without_mask
from hooked.wrapping import Wrapped


class WrappedLM(Wrapped):
    """A transformers causal LM under :func:`hooked.wrap` (inputs too), with per-head hook points.

    ``output`` is applied to the model's output (``hooked.lm.wrap_lm`` passes ``logits_of``).
    ``arch`` is the resolved :class:`~hooked.lm.arch.Decoder` (``None`` for an unknown layout).
    """

    def __init__(self, hf_model: Any, *, output: Callable[[Any], Any] | None = None):
        super().__init__(hf_model, inputs=True, output=output)
        arch = decoder(hf_model)
        self.__dict__["arch"] = arch  # plain attribute: not a submodule, not looked up on the module
        self.__dict__["_tl_aliases"] = {}
        if arch is not None:
            from hooked.lm.heads import head_hook_points
            from hooked.lm.names import tl_aliases

            heads = head_hook_points(arch)
            points: dict[str, Any] = {}
            for name, hp in self._points.items():
                points[name] = hp
                attn = name.removesuffix(".hook_out")
                if name.endswith(".hook_out") and f"{attn}.hook_z" in heads:
                    points[f"{attn}.hook_z"] = heads[f"{attn}.hook_z"]
                    points[f"{attn}.hook_pattern"] = heads[f"{attn}.hook_pattern"]
            points.update({n: hp for n, hp in heads.items() if n not in points})
            object.__setattr__(self, "_points", points)
            self.__dict__["_tl_aliases"] = tl_aliases(arch)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        ids = args[0] if args else kwargs.get("input_ids")
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        warn_if_padded_without_mask(self, ids, mask, stacklevel=4)
        if (
            isinstance(mask, Tensor)
            and isinstance(ids, Tensor)
            and mask.dim() == 2
            and mask.shape == ids.shape
            and len(args) < 3
            and kwargs.get("position_ids") is None
            and bool((mask[:, 0] == 0).any())
            and self._takes_position_ids()
        ):
            kwargs["position_ids"] = (mask.long().cumsum(dim=1) - 1).clamp_min(0)
        return super().forward(*args, **kwargs)

    def _takes_position_ids(self) -> bool:
        import inspect

        return "position_ids" in inspect.signature(self.module.forward).parameters

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`hooked.HookedModule.run_with_cache`; the cache also answers TransformerLens names."""
        out, cache = super().run_with_cache(*args, **kwargs)
        return out, cache.with_aliases(self._tl_aliases)
