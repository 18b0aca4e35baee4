"""The ``wrap`` backend of a language model: :func:`hooked.wrap` plus what a decoder has on top.

:class:`WrappedLM` is a :class:`hooked.Wrapped` (hook points ``P.hook_in`` / ``P.hook_out`` on
every module, logits out) that adds, for a decoder of a known layout (:mod:`hooked.lm.names.layouts`):

* per-head hook points on every attention module ``P``: ``P.hook_z``, ``P.hook_pattern``,
  ``P.hook_attn_scores`` and (rotary models) ``P.hook_rot_q`` / ``hook_rot_k``
  (:mod:`hooked.lm.backends.heads`), each head's query, key and value input ``P.hook_q_input`` /
  ``hook_k_input`` / ``hook_v_input`` (:mod:`hooked.lm.backends.head_inputs`), its query, key and
  value ``P.hook_q`` / ``hook_k`` / ``hook_v`` and its output ``P.hook_result``
  (:mod:`hooked.lm.backends.projections`), listed in ``hook_dict`` right after ``P.hook_out``;
  ``N.hook_scale`` / ``N.hook_normalized`` on each norm ``N`` (:mod:`hooked.lm.backends.norms`);
* padded batches: with an ``attention_mask`` that pads rows on the left and no ``position_ids``,
  each row's positions are counted from its first real token (as TransformerLens's bridge does,
  and transformers' own ``generate``; the model's forward alone would count from the padding,
  which is wrong for absolute position embeddings such as GPT-2's). Ids that look padded but
  come without a mask warn (:func:`hooked.lm.text.tokens.warn_if_padded_without_mask`);
* TransformerLens names (:func:`hooked.lm.names.hook_names.tl_aliases`: ``hook_embed``,
  ``blocks.3.hook_resid_pre`` / ``hook_resid_mid`` / ``hook_resid_post``, ``hook_attn_out``,
  ``hook_mlp_out``, ``attn.hook_z``, ``attn.hook_pattern``, ``ln1`` / ``ln2`` / ``ln_final``, the
  points above by their TransformerLens names (:mod:`hooked.lm.names.hook_names`), ``mlp.hook_pre``
  / ``hook_pre_linear`` / ``hook_post``) work
  wherever a hook name is taken: ``add_hook``, ``hooks``, ``run_with_hooks``, ``list_hooks`` and
  ``run_with_cache`` (``names_filter``, ``stop_at``); a hook attached by such a name sees it as
  ``hook.name``, and a filter function is offered both names of each hook point. Caches keep the
  module-path keys and answer TransformerLens names too (``cache["blocks.3.hook_resid_pre"]``,
  ``cache["resid_pre", 3]``).
* ``hook_dict`` as TransformerLens's bridge has it: every hook point under its module path (its
  ``name``), then each TransformerLens name as another key of the same :class:`~hooked.HookPoint`
  (so ``hook_dict["blocks.0.attn.hook_z"].name`` is the module path, and code that copies
  ``grad_cache[hp.name]`` to ``grad_cache[key]`` for every ``key`` with ``hp.name != key``, as
  TransformerLens's Attribution Patching demo does, finds them); ``mod_dict`` adds those keys to
  the module tree, as the bridge's does. A point reachable by several names is still one point:
  a filter (``add_hook``, ``hooks``, ``run_with_cache``, ``list_hooks``) attaches or records it
  once, under the first name it matches in ``hook_dict``'s order (the module path when it matches,
  else the TransformerLens name, which the hook then sees as ``hook.name``, as on the bridge), and
  ``run_with_cache()`` with no filter records each point once, under its module path.

A model of no known layout is wrapped all the same, without per-head points and names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, cast

from torch import Tensor

from hooked.hook_point import Directions
from hooked.lm.backends.backend import LMBackend, attach, backend_of, cache_methods
from hooked.lm.backends.forward import logits_of
from hooked.lm.backends.seen_as import seen_as
from hooked.lm.backends.tl_model import TLModelAPI
from hooked.lm.names.layouts import Decoder, decoder
from hooked.lm.text.tokens import UnmaskedPaddingWarning, warn_if_padded_without_mask
from hooked.wrapping import Wrapped


class WrappedLM(TLModelAPI, Wrapped):
    """A transformers causal LM under :func:`hooked.wrap` (inputs too), with per-head hook points
    and TransformerLens's model API (:class:`hooked.lm.backends.tl_model.TLModelAPI`).

    ``output`` is applied to the model's output (``hooked.lm.wrap_lm`` passes ``logits_of``).
    ``arch`` is the resolved :class:`~hooked.lm.names.layouts.Decoder` (``None`` for an unknown layout).
    """

    def __init__(self, hf_model: Any, *, output: Callable[[Any], Any] | None = None):
        super().__init__(hf_model, inputs=True, output=output)
        self.training = hf_model.training  # the wrapper is in the model's mode (eval after loading)
        arch = attach(self, LMBackend("wrap", hf_model, decoder(hf_model))).decoder
        self.__dict__["_tl_aliases"] = {}
        if arch is not None:
            from hooked.lm.backends.head_inputs import head_input_points
            from hooked.lm.backends.heads import head_hook_points
            from hooked.lm.backends.norms import norm_points
            from hooked.lm.backends.projections import projection_points
            from hooked.lm.names.hook_names import tl_aliases, tl_point_aliases

            extra: dict[str, Any] = {
                **head_hook_points(arch),
                **head_input_points(arch),
                **projection_points(arch),
                **norm_points(arch),
            }
            after: dict[str, list[str]] = {}  # a module's hook_out -> its extra points, listed after it
            for name in extra:
                after.setdefault(f"{name.rsplit('.', 1)[0]}.hook_out", []).append(name)
            points: dict[str, Any] = {}
            for name, hp in self._points.items():
                points[name] = hp
                for e in after.get(name, ()):
                    points[e] = extra[e]
            points.update({n: hp for n, hp in extra.items() if n not in points})
            object.__setattr__(self, "_points", points)
            self.__dict__["_tl_aliases"] = {**tl_aliases(arch), **tl_point_aliases(arch, extra)}

    @property
    def arch(self) -> Decoder | None:
        """The resolved decoder layout (:mod:`hooked.lm.names.layouts`); ``None`` for an unknown one."""
        return backend_of(self).decoder

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The transformers model's forward (logits out), taking TransformerLens's arguments too: a
        text or list of texts, ``return_type``, ``loss_per_token``, ``prepend_bos``, ``padding_side``,
        ``stop_at_layer`` (the residual stream entering that block is returned)."""
        args, kwargs, tl = self._tl_forward_args(args, kwargs)
        stop = tl.pop("stop_at_layer", None)
        if stop is not None:
            return self._tl_run_until(stop, lambda: self._forward_padded(args, kwargs, tl))
        return self._forward_padded(args, kwargs, tl)

    def _forward_padded(self, args: tuple, kwargs: dict, tl: dict) -> Any:
        if tl.pop("_right_padded", False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnmaskedPaddingWarning)
                out = self._forward(args, kwargs)
        else:
            out = self._forward(args, kwargs)
        return self._tl_output(out, args, kwargs, tl) if tl else out

    def _forward(self, args: tuple, kwargs: dict) -> Any:
        ids = args[0] if args else kwargs.get("input_ids")
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        warn_if_padded_without_mask(self, ids, mask, stacklevel=5)
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
        """:meth:`hooked.HookedModule.run_with_cache`, taking TransformerLens names too; the cache
        also answers them, and has TransformerLens's cache methods
        (:mod:`hooked.lm.toolkit.cache_methods`)."""
        if self._tl_aliases:
            if kwargs.get("names_filter") is None:
                # each hook point once, by its module path; as TransformerLens, a cache of everything
                # holds the per-head results (a [batch, pos, head, d_model] tensor per layer) only
                # after set_use_attn_result(True)
                keep = self._tl_use_attn_result
                kwargs["names_filter"] = [n for n in self._points if keep or not n.endswith(".hook_result")]
            else:
                kwargs["names_filter"] = self._wrap_names(kwargs["names_filter"])
            if isinstance(kwargs.get("stop_at"), str):
                kwargs["stop_at"] = self._wrap_name(kwargs["stop_at"])
        out, cache = super().run_with_cache(*args, **kwargs)
        methods = cache_methods(self) if self.arch is not None else None
        if methods is not None:
            cache = cache.with_methods(methods)
        return out, cache.with_aliases(self._tl_aliases)

    def list_hooks(self, name_filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        """:meth:`hooked.HookedModule.list_hooks`, taking TransformerLens names too (the result is
        keyed by the hook points' names, each point once)."""
        if self._tl_aliases:
            name_filter = list(self._points) if name_filter is None else self._wrap_names(name_filter)
        return super().list_hooks(name_filter, *args, **kwargs)

    def remove_all_hook_fns(
        self, direction: Directions = "both", including_permanent: bool = False, level: int | None = None
    ) -> None:
        for hp in self._points.values():  # each point once (hook_dict holds some under two names)
            hp.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def clear_contexts(self) -> None:
        for hp in self._points.values():
            hp.clear_context()

    # ------------------------------------------------------------------ TransformerLens names
    @property
    def hook_dict(self) -> dict[str, Any]:
        """Every hook point by its module path (its ``name``), in module order, then by each
        TransformerLens name it also has (the same object under another key, as on the bridge)."""
        points = super().hook_dict
        if self._tl_aliases:
            points.update({alias: points[target] for alias, target in self._alias_keys()})
        return points

    def _alias_keys(self) -> list[tuple[str, str]]:
        """``(TransformerLens name, module path)`` of the names :attr:`hook_dict` adds: those whose
        point this model has (kept until its points change, as ``unwrap`` changes them)."""
        points = self._points
        known = self.__dict__.get("_tl_alias_keys")
        if known is None or known[0] is not points:
            pairs = [(a, t) for a, t in self._tl_aliases.items() if t in points and a not in points]
            known = self.__dict__["_tl_alias_keys"] = (points, pairs)
        return known[1]

    @property
    def mod_dict(self) -> dict[str, Any]:
        """Every submodule of the transformers model by module path, and every hook point by each
        key of :attr:`hook_dict` (TransformerLens's names too), as the bridge's ``mod_dict``."""
        return {**super().mod_dict, **self.hook_dict}

    @property
    def hook_name_aliases(self) -> dict[str, str]:
        """TransformerLens name -> hook point name, for every name this model also takes."""
        return dict(self._tl_aliases)

    def _attach(self, specs: Any, dir: Any, *args: Any, **kwargs: Any) -> Any:
        """:meth:`hooked.HookedModule._attach`, with TransformerLens names turned into hook points'
        names and the hook shown the name it was attached by."""
        if self._tl_aliases:
            specs = [s for spec in specs for s in self._wrap_spec(spec)]
        return super()._attach(specs, dir, *args, **kwargs)

    def _wrap_name(self, name: str) -> str:
        return self._tl_aliases.get(name, name) if name not in self._points else name

    def _wrap_names(self, spec: Any) -> Any:
        if isinstance(spec, str):
            return self._wrap_name(spec)
        if callable(spec):  # the points whose name or TransformerLens name it takes, each once
            return [name for name, _ in self._filter_matches(cast(Callable[[str], bool], spec))]
        if isinstance(spec, (list, tuple)):
            return [self._wrap_name(n) if isinstance(n, str) else n for n in spec]
        return spec

    def _wrap_spec(self, spec: Any) -> list[Any]:
        """One ``(names, fn)`` spec as specs of hook points' names (malformed specs pass through,
        for the caller's own error)."""
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and callable(spec[1])):
            return [spec]
        names, fn = spec
        if isinstance(names, str):
            return [(self._wrap_name(names), seen_as(fn, names) if names not in self._points else fn)]
        if callable(names):
            matches = self._filter_matches(names)
            return [(name, fn if seen == name else seen_as(fn, seen)) for name, seen in matches]
        if isinstance(names, (list, tuple)):
            return [s for n in names for s in self._wrap_spec((n, fn))] if names else [spec]
        return [spec]

    def _filter_matches(self, accept: Callable[[str], object]) -> list[tuple[str, str]]:
        """``(module path, name matched)`` of each hook point ``accept`` takes by some name, once
        per point: the first name it takes in :attr:`hook_dict`'s order (TransformerLens's rule for
        a filter, which visits ``hook_dict`` and skips a point seen already)."""
        out, taken = [], set()
        for name in self._points:
            if accept(name):
                out.append((name, name))
                taken.add(name)
        for alias, target in self._tl_aliases.items():
            if target not in taken and target in self._points and alias not in self._points and accept(alias):
                out.append((target, alias))
                taken.add(target)
        order = {name: i for i, name in enumerate(self._points)}
        return sorted(out, key=lambda m: order[m[0]])


def wrap_lm(hf_model: Any, tokenizer: Any = None) -> WrappedLM:
    """``hooked.wrap`` of a transformers causal LM that returns logits (hook points on inputs too),
    with per-head hook points and padded batches (:class:`hooked.lm.backends.wrapped.WrappedLM`)."""
    if tokenizer is not None:
        hf_model.tokenizer = tokenizer
    return WrappedLM(hf_model, output=logits_of)
