"""What a loaded language model is, asked in one place: :class:`LMBackend`.

A language model reaches ``hooked.lm`` in one of three forms (the backends of
:func:`hooked.lm.load`): TransformerLens 4's ``TransformerBridge`` (``"bridge"``), a
:func:`hooked.wrap` of the transformers model (``"wrap"``: :class:`hooked.lm.WrappedLM`, or a plain
``hooked.wrap`` made elsewhere), or the transformers model itself (``"hf"``). :func:`backend_of`
gives the one :class:`LMBackend` of a model (made on first use and kept on the model): which
backend it is, its transformers model, its decoder layout and stack of layers
(:mod:`hooked.lm.names.layouts`), and the hook name of each part on that backend
(:class:`~hooked.lm.names.hook_names.LMNames`). Code in ``hooked.lm`` that needs any of these asks
the backend; nothing else tells the backends apart.

The per-model naming functions of ``hooked.lm`` are here too, each a question to the backend:
:func:`lm_names`, :func:`act_name` (TransformerLens's shorthand on this backend),
:func:`residual_hooks` (the residual stream) and :func:`stream_hooks` (what the toolkit reads):
both lists come from the same :class:`~hooked.lm.names.hook_names.LMNames`, hence from the layout.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Literal

from torch import nn

from hooked.lm.names.hook_names import LMNames, tl_aliases
from hooked.lm.names.layouts import Decoder, decoder, decoder_layers, require_decoder
from hooked.names import act_name as tl_act_name
from hooked.wrapping import Wrapped

Backend = Literal["bridge", "wrap", "hf"]
BACKENDS: tuple[Backend, ...] = ("bridge", "wrap", "hf")

_ATTRIBUTE = "_hooked_lm_backend"  # where a model keeps its backend (in its __dict__)

# TransformerLens's cache methods, handed to the caches of run_with_cache on both backends: set by
# the room that has them (hooked.lm.toolkit.cache_methods, imported by ``import hooked.lm``) so
# that this room does not import it; a class taking the model
CACHE_METHODS: dict[str, Any] = {"class": None}


def cache_methods(model: Any) -> Any:
    """TransformerLens's cache methods for ``model``'s caches (None before they are registered)."""
    cls = CACHE_METHODS["class"]
    return None if cls is None else cls(model)


class LMBackend:
    """The backend of one loaded language model (see the module docstring); from :func:`backend_of`.

    Attributes:
        kind: ``"bridge"``, ``"wrap"`` or ``"hf"``.
        hf: the transformers model (the bridge's ``original_model``, the wrapped module, or the
            model itself).
    """

    def __init__(self, kind: Backend, hf: nn.Module, decoder: Decoder | None = None):
        self.kind = kind
        self.hf = hf
        if decoder is not None:
            self.__dict__["decoder"] = decoder  # already resolved (the wrap backend needs it first)

    @property
    def is_bridge(self) -> bool:
        return self.kind == "bridge"

    @functools.cached_property
    def decoder(self) -> Decoder | None:
        """The decoder's layout resolved against :attr:`hf`; ``None`` for a family with no layout."""
        return decoder(self.hf)

    @functools.cached_property
    def layers(self) -> tuple[str, nn.ModuleList] | None:
        """``(path, layers)``: the stack of decoder layers
        (:func:`hooked.lm.names.layouts.decoder_layers`); ``None`` where it cannot be told."""
        return decoder_layers(self.hf)

    @functools.cached_property
    def names(self) -> LMNames | None:
        """The hook name of each part on this backend (only the residual stream's for a family
        with no layout); ``None`` where not even the stack of layers is known."""
        if self.decoder is not None:
            return LMNames.of(self.decoder, bridge=self.is_bridge)
        if self.layers is None:
            return None
        path, layers = self.layers
        return LMNames(path, len(layers), bridge=self.is_bridge)

    def __repr__(self) -> str:
        layout = self.decoder.layout.name if self.decoder is not None else "no known layout"
        return f"LMBackend({self.kind!r}, {type(self.hf).__name__}, {layout})"


def backend_of(model: Any, what: str = "this") -> LMBackend:
    """The :class:`LMBackend` of ``model``: a model from :func:`hooked.lm.load`, or a
    ``TransformerBridge``, a ``hooked.wrap`` or a transformers model made elsewhere, or a wrapper
    of one of these that sets ``__wrapped__``; a TypeError naming ``what`` for anything else."""
    kept = getattr(model, "__dict__", {}).get(_ATTRIBUTE)
    if isinstance(kept, LMBackend):
        return kept
    found = _kind_and_hf(model)
    inner = getattr(model, "__dict__", {}).get("__wrapped__")
    if found is None and inner is not None:
        # a wrapper that runs a language model with more hooks (hooked.sae's spliced models) sets
        # ``__wrapped__`` (the functools convention) and has that model's backend
        return backend_of(inner, what)
    if found is None:
        raise TypeError(
            f"{what} needs a language model from hooked.lm.load (backend 'bridge', 'wrap' or 'hf'), "
            f"got {type(model).__name__}"
        )
    return attach(model, LMBackend(*found))


def attach(model: Any, backend: LMBackend) -> LMBackend:
    """Keep ``backend`` as ``model``'s (what :func:`backend_of` returns from then on)."""
    model.__dict__[_ATTRIBUTE] = backend
    return backend


def _kind_and_hf(model: Any) -> tuple[Backend, nn.Module] | None:
    """Which backend ``model`` is and its transformers model, without importing TransformerLens
    or transformers (a model of theirs exists only once they are imported)."""
    bridges = sys.modules.get("transformer_lens.model_bridge")
    if bridges is not None and isinstance(model, bridges.TransformerBridge):
        return "bridge", model.original_model
    if isinstance(model, Wrapped):
        return "wrap", model.module
    transformers = sys.modules.get("transformers")
    if transformers is not None and isinstance(model, transformers.PreTrainedModel):
        return "hf", model
    return None


# ---------------------------------------------------------------------- names on this backend
def lm_names(model: Any, what: str = "this") -> LMNames:
    """:class:`LMNames` of a model loaded by :func:`hooked.lm.load` (bridge or wrap backend)."""
    try:
        backend = backend_of(model, what)
    except TypeError:
        backend = None
    if backend is None or backend.kind == "hf":
        raise TypeError(
            f"{what} needs a language model from hooked.lm.load (backend 'bridge' or 'wrap'), "
            f"got {type(model).__name__}"
        )
    names = backend.names
    if names is None or names.dec is None:
        require_decoder(backend.hf, what)  # raises, naming the known layouts
        raise TypeError(f"{what}: the names of this {type(model).__name__} were made without its layout")
    return names


def act_name(model: Any, name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """TransformerLens's ``get_act_name`` for ``model``'s backend; negative layers count from the end.

    ``act_name(model, "resid_pre", 3)`` is ``blocks.3.hook_resid_pre`` on the bridge and
    ``model.layers.3.hook_in`` on ``wrap`` (SmolLM2); ``("z", -1)`` is the last layer's ``hook_z``.
    """
    names = lm_names(model, "act_name")
    if isinstance(layer, int):
        layer = names.layer(layer)
    full = tl_act_name(name, layer, layer_type)
    if names.bridge:
        return full
    assert names.dec is not None  # lm_names gives names with a layout
    known = getattr(model, "hook_name_aliases", None)  # a WrappedLM's: its hook points inside modules too
    wrap = (known if isinstance(known, dict) else tl_aliases(names.dec)).get(full)
    if wrap is None:
        raise KeyError(
            f"act_name: the wrap backend has no name for {full!r}; known TransformerLens names are "
            "resid_pre/mid/post, attn_out, mlp_out, z, pattern, q, k, v, rot_q, rot_k, attn_scores, "
            "result, pre, post, scale, normalized, embed, pos_embed, ln1/ln2 in/out (where the model "
            "has them)"
        )
    return wrap


def residual_hooks(model: Any) -> list[str]:
    """The residual stream's hook names: entering each layer, then leaving the last one.

    ``n_layers + 1`` names: ``blocks.{i}.hook_resid_pre`` ... ``blocks.{L-1}.hook_resid_post``
    on the bridge; ``<layers>.{i}.hook_in`` ... ``<layers>.{L-1}.hook_out`` on ``hooked.wrap``
    (the decoder layers' inputs and last output). Labels: :func:`hooked.lm.residual_labels`.
    """
    try:
        backend = backend_of(model, "residual_hooks")
    except TypeError:
        backend = None
    names = backend.names if backend is not None and backend.kind != "hf" else None
    hooks = names.residual() if names is not None else []
    if not hooks or any(h not in model.hook_dict for h in hooks):
        raise ValueError(
            f"cannot find the residual stream of {type(model).__name__}: expected TransformerLens names "
            "(blocks.N.hook_resid_pre) or a stack of layers wrapped with inputs (hooked.wrap(m, inputs=True))"
        )
    return hooks


def stream_hooks(model: Any, *, heads: bool = True) -> list[str]:
    """The hook names the toolkit reads: embeddings, every layer's residual stream (pre, mid, post),
    attention and MLP outputs, and (``heads``) every layer's ``hook_z``."""
    names = lm_names(model, "stream_hooks")
    out = [names.embed] + ([names.pos_embed] if names.pos_embed else [])
    for i in range(names.n_layers):
        out += [names.resid_pre(i), names.attn_out(i)]
        mid = names.resid_mid(i)
        out += [mid] if mid else []
        out += [names.mlp_out(i), names.resid_post(i)]
        out += [names.z(i)] if heads else []
    return out
