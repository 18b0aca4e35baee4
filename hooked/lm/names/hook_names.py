"""Hook names of a language model's residual stream and heads on each backend.

* :class:`LMNames` gives the hook name of each part of a decoder on one backend: TransformerLens
  names on the bridge, module paths on ``hooked.wrap`` (``model.layers.3.hook_in``). The
  residual-stream toolkit reads activations through it, so it runs on both backends.
* :func:`tl_aliases` maps TransformerLens names to a wrapped model's module paths; caches of a
  wrapped LM carry it, so ``cache["blocks.3.hook_resid_pre"]`` and ``cache["resid_pre", 3]`` work
  there too (the shorthand itself is the core's :func:`hooked.names.act_name`).
  :func:`tl_point_aliases` does the same for the hook points that ``wrap`` adds inside attention
  and the norms (:data:`ATTN_POINTS`, :data:`NORM_POINTS`: TransformerLens's names, which are
  also the suffixes of the wrap names), for those a model has.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from hooked.lm.names.layouts import Decoder


class LMNames:
    """The hook name of each part of a decoder on one backend (``bridge=True``: TransformerLens names).

    Residual parts: ``resid_pre(l)``, ``resid_mid(l)`` (``None`` for a parallel block; it is the
    second norm's input, on both backends: read it, but an edit there reaches only the MLP branch,
    not the residual stream that skips the MLP), ``resid_post(l)``, ``attn_out(l)`` /
    ``mlp_out(l)`` (what attention / the MLP add to the residual stream), ``z(l)``, ``pattern(l)``,
    ``embed``, ``pos_embed`` (``None`` without learned positions), ``final_in`` (the final norm's
    input: the last residual stream); :meth:`residual` lists the residual stream.

    Made from a resolved layout (:meth:`of`); a family with no layout yet knows only its stack of
    layers (``layers``, ``n_layers``, ``dec=None``): the residual stream's names, nothing else.
    """

    def __init__(self, layers: str, n_layers: int, *, bridge: bool, dec: Decoder | None = None):
        self.layers = layers  # the stack's module path (names on wrap are under it)
        self._n_layers = n_layers
        self.bridge = bridge
        self.dec = dec

    @classmethod
    def of(cls, dec: Decoder, *, bridge: bool) -> LMNames:
        """The names of every part of a decoder whose layout is known."""
        return cls(dec.layout.layers, dec.n_layers, bridge=bridge, dec=dec)

    @property
    def n_layers(self) -> int:
        return self._n_layers

    def layer(self, layer: int) -> int:
        """``layer`` with negative values counted from the end; an IndexError when out of range."""
        n = self._n_layers
        if not -n <= layer < n:
            raise IndexError(f"layer {layer} is out of range for a model with {n} layers")
        return layer % n

    def _block(self, layer: int, tl: str, wrap: str) -> str:
        layer = self.layer(layer)
        return f"blocks.{layer}.{tl}" if self.bridge else f"{self.layers}.{layer}.{wrap}"

    def _layout(self, part: str) -> Decoder:
        if self.dec is None:
            raise ValueError(
                f"{part}: this model's family has no known layout (hooked.lm.names.layouts.LAYOUTS), "
                "so only its residual stream is named; add a Layout for it "
                "(docs/developing/adding-an-lm-family.md)"
            )
        return self.dec

    @property
    def embed(self) -> str:
        if self.bridge:
            return "hook_embed"
        root = self._layout("embed").root
        return f"{_path_of(root, root.get_input_embeddings())}.hook_out"

    @property
    def pos_embed(self) -> str | None:
        lay = self._layout("pos_embed").layout
        if not lay.pos_embed:
            return None
        return "hook_pos_embed" if self.bridge else f"{lay.pos_embed}.hook_out"

    def resid_pre(self, layer: int) -> str:
        return self._block(layer, "hook_resid_pre", "hook_in")

    def resid_post(self, layer: int) -> str:
        return self._block(layer, "hook_resid_post", "hook_out")

    def residual(self) -> list[str]:
        """The residual stream entering each layer, then leaving the last one (``n_layers + 1``)."""
        n = self._n_layers
        return [self.resid_pre(i) for i in range(n)] + [self.resid_post(n - 1)]

    def resid_mid(self, layer: int) -> str | None:
        dec = self._layout("resid_mid")
        if dec.parallel:
            return None
        return self._block(layer, "hook_resid_mid", f"{dec.layout.ln2}.hook_in")

    def attn_out(self, layer: int) -> str:
        lay = self._layout("attn_out").layout
        return self._block(layer, lay.tl_attn_out, f"{lay.attn_out}.hook_out")

    def mlp_out(self, layer: int) -> str:
        lay = self._layout("mlp_out").layout
        return self._block(layer, lay.tl_mlp_out, f"{lay.mlp_out}.hook_out")

    def z(self, layer: int) -> str:
        return self._block(layer, "attn.hook_z", f"{self._layout('z').layout.attn}.hook_z")

    def pattern(self, layer: int) -> str:
        return self._block(layer, "attn.hook_pattern", f"{self._layout('pattern').layout.attn}.hook_pattern")

    @property
    def final_in(self) -> str:
        return self.resid_post(-1)


def tl_aliases(dec: Decoder) -> dict[str, str]:
    """TransformerLens name -> ``hooked.wrap`` name, for the parts :class:`LMNames` knows."""
    wrap = LMNames.of(dec, bridge=False)
    lay = dec.layout
    aliases = {"hook_embed": wrap.embed}
    if wrap.pos_embed:
        aliases["hook_pos_embed"] = wrap.pos_embed
    aliases["ln_final.hook_in"] = f"{lay.final_norm}.hook_in"
    aliases["ln_final.hook_out"] = f"{lay.final_norm}.hook_out"
    for i in range(dec.n_layers):
        block = f"{lay.layers}.{i}"
        aliases[f"blocks.{i}.hook_resid_pre"] = wrap.resid_pre(i)
        aliases[f"blocks.{i}.hook_in"] = wrap.resid_pre(i)  # the block's input and output, as the bridge
        aliases[f"blocks.{i}.hook_out"] = wrap.resid_post(i)
        mid = wrap.resid_mid(i)
        if mid is not None:
            aliases[f"blocks.{i}.hook_resid_mid"] = mid
        aliases[f"blocks.{i}.hook_attn_out"] = f"{block}.{lay.attn}.hook_out"  # TL: attention's output
        aliases[f"blocks.{i}.hook_mlp_out"] = f"{block}.{lay.mlp}.hook_out"
        aliases[f"blocks.{i}.hook_resid_post"] = wrap.resid_post(i)
        aliases[f"blocks.{i}.attn.hook_z"] = wrap.z(i)
        aliases[f"blocks.{i}.attn.hook_pattern"] = wrap.pattern(i)
        for tl, part in (("ln1", "ln1"), ("ln2", "ln2")):
            aliases[f"blocks.{i}.{tl}.hook_in"] = f"{block}.{getattr(lay, part)}.hook_in"
            aliases[f"blocks.{i}.{tl}.hook_out"] = f"{block}.{getattr(lay, part)}.hook_out"
        # the MLP's pre-activation (gate), linear branch and post-activation: module hook points
        for tl, part, where in (
            ("hook_pre", lay.mlp_pre, "hook_out"),
            ("hook_pre_linear", lay.mlp_pre_linear, "hook_out"),
            ("hook_post", lay.mlp_post, "hook_in"),
        ):
            if part is not None and _has(dec, f"{block}.{part}"):
                aliases[f"blocks.{i}.mlp.{tl}"] = f"{block}.{part}.{where}"
    return aliases


# Hook points the wrap backend adds on each attention module ``P`` (``P.<suffix>``) and on each norm
# ``N`` (``N.<suffix>``); the suffix is TransformerLens's own name under ``blocks.L.attn`` /
# ``blocks.L.ln1`` / ``blocks.L.ln2`` / ``ln_final``. Built by hooked.lm.backends (heads,
# head_inputs, projections, norms).
ATTN_POINTS = (
    "hook_q_input",
    "hook_k_input",
    "hook_v_input",
    "hook_q",
    "hook_k",
    "hook_v",
    "hook_rot_q",
    "hook_rot_k",
    "hook_attn_scores",
    "hook_result",
)
NORM_POINTS = ("hook_scale", "hook_normalized")
HEAD_INPUT_POINTS = ATTN_POINTS[:3]  # also named blocks.L.hook_q_input ... (TransformerLens's own names)


def tl_point_aliases(dec: Decoder, names: Collection[str]) -> dict[str, str]:
    """TransformerLens name -> wrap name of the :data:`ATTN_POINTS` / :data:`NORM_POINTS` hook points
    among ``names`` (a model has only those its architecture has: no ``hook_rot_q`` without rotary
    positions, no ``hook_q`` for projections not understood)."""
    lay = dec.layout
    pairs = []
    for i in range(dec.n_layers):
        pairs += [(f"blocks.{i}.attn.{p}", f"{dec.path(i, 'attn')}.{p}") for p in ATTN_POINTS]
        # TransformerLens's own names of the per-head inputs sit on the block (get_act_name("q_input", L))
        pairs += [(f"blocks.{i}.{p}", f"{dec.path(i, 'attn')}.{p}") for p in HEAD_INPUT_POINTS]
        for tl, part in (("ln1", "ln1"), ("ln2", "ln2")):
            pairs += [(f"blocks.{i}.{tl}.{p}", f"{dec.path(i, part)}.{p}") for p in NORM_POINTS]
    pairs += [(f"ln_final.{p}", f"{lay.final_norm}.{p}") for p in NORM_POINTS]
    return {tl: wrap for tl, wrap in pairs if wrap in names}


def residual_labels(n_layers: int) -> list[str]:
    """Labels for :meth:`LMNames.residual`'s names: ``pre 0`` ... ``pre L-1``, ``post L-1``."""
    return [f"pre {i}" for i in range(n_layers)] + [f"post {n_layers - 1}"]


def _has(dec: Decoder, path: str) -> bool:
    try:
        dec.module(path)
    except AttributeError:
        return False
    return True


def _path_of(root: Any, module: Any) -> str:
    for name, m in root.named_modules():
        if m is module:
            return name
    raise ValueError(f"{type(module).__name__} is not a submodule of {type(root).__name__}")


__all__ = ["ATTN_POINTS", "NORM_POINTS", "LMNames", "residual_labels", "tl_aliases", "tl_point_aliases"]
