"""Where the parts of a transformers decoder-only language model are, read from the model.

A :class:`Layout` names, by module path, the parts that per-head hook points and the
residual-stream toolkit need: the stack of decoder layers, and in each layer the attention module,
its output projection (whose input is every head's output, head-major: head ``h`` is columns
``h*d_head:(h+1)*d_head``), the two norms, the MLP, and the modules whose outputs attention and the
MLP add to the residual stream; then the final norm. Four layouts cover the decoder families
transformers ships most (:data:`LAYOUTS`): Llama-style (Llama, SmolLM2, Mistral, Qwen2/3, Gemma,
Phi-3, OLMo, ...), Gemma-2-style (norms after attention and MLP too), GPT-2 and GPT-NeoX (Pythia;
parallel attention and MLP when ``config.use_parallel_residual``). A model is matched by its
structure, not its class name, so a family not listed with one of these layouts works as well.

:func:`decoder` resolves a layout against a model: number of layers and heads, whether the block is
parallel, and the modules themselves. It also works on a model that TransformerLens's bridge has
booted, whose submodules are bridge components holding the originals as ``_original_component``
(:func:`original`). :func:`decoder_layers` finds the stack of decoder layers: the layout's, else
(a family with no layout yet) the model's one ``nn.ModuleList`` of ``num_hidden_layers`` modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Layout:
    """Module paths of a decoder family's parts; ``layers`` is from the model's root, the others
    (but ``final_norm`` and ``pos_embed``) from one decoder layer."""

    name: str
    layers: str  # the ModuleList of decoder layers
    attn: str  # attention module
    o_proj: str  # attention's output projection; its input is the heads' outputs, head-major
    ln1: str  # norm before attention
    ln2: str  # norm before the MLP
    mlp: str
    attn_out: str  # the module whose output attention adds to the residual stream
    mlp_out: str  # the module whose output the MLP adds to the residual stream
    final_norm: str
    pos_embed: str | None = None  # learned position embedding (absolute positions), if any
    # TransformerLens bridge names (block-relative) of what attention / the MLP add to the residual
    tl_attn_out: str = "hook_attn_out"
    tl_mlp_out: str = "hook_mlp_out"
    # the MLP's projections (from one decoder layer): TransformerLens's ``mlp.hook_pre`` is the output
    # of ``mlp_pre`` (before the activation function; the gate of a gated MLP), ``hook_pre_linear``
    # the output of ``mlp_pre_linear`` (a gated MLP's linear branch; None for a plain MLP), and
    # ``hook_post`` the input of ``mlp_post`` (after the activation, and the gating)
    mlp_pre: str | None = None
    mlp_pre_linear: str | None = None
    mlp_post: str | None = None


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "gemma2",
        layers="model.layers",
        attn="self_attn",
        o_proj="self_attn.o_proj",
        ln1="input_layernorm",
        ln2="pre_feedforward_layernorm",
        mlp="mlp",
        attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
        final_norm="model.norm",
        tl_attn_out="ln1_post.hook_out",
        tl_mlp_out="ln2_post.hook_out",
        mlp_pre="mlp.gate_proj",
        mlp_pre_linear="mlp.up_proj",
        mlp_post="mlp.down_proj",
    ),
    Layout(
        "llama",
        layers="model.layers",
        attn="self_attn",
        o_proj="self_attn.o_proj",
        ln1="input_layernorm",
        ln2="post_attention_layernorm",
        mlp="mlp",
        attn_out="self_attn",
        mlp_out="mlp",
        final_norm="model.norm",
        mlp_pre="mlp.gate_proj",
        mlp_pre_linear="mlp.up_proj",
        mlp_post="mlp.down_proj",
    ),
    Layout(
        "gpt2",
        layers="transformer.h",
        attn="attn",
        o_proj="attn.c_proj",
        ln1="ln_1",
        ln2="ln_2",
        mlp="mlp",
        attn_out="attn",
        mlp_out="mlp",
        final_norm="transformer.ln_f",
        pos_embed="transformer.wpe",
        mlp_pre="mlp.c_fc",
        mlp_post="mlp.c_proj",
    ),
    Layout(
        "gpt_neox",
        layers="gpt_neox.layers",
        attn="attention",
        o_proj="attention.dense",
        ln1="input_layernorm",
        ln2="post_attention_layernorm",
        mlp="mlp",
        attn_out="attention",
        mlp_out="mlp",
        final_norm="gpt_neox.final_layer_norm",
        mlp_pre="mlp.dense_h_to_4h",
        mlp_post="mlp.dense_4h_to_h",
    ),
)


@dataclass(frozen=True)
class Decoder:
    """A :class:`Layout` resolved against one model."""

    layout: Layout
    n_layers: int
    n_heads: int
    parallel: bool  # attention and MLP both read the layer's input (no resid_mid)
    root: Any  # the transformers model (a PreTrainedModel: config, get_input_embeddings, ...)

    def path(self, layer: int, part: str) -> str:
        """Module path of ``part`` (a Layout field name: ``"attn"``, ``"o_proj"``, ...) in ``layer``."""
        return f"{self.layout.layers}.{layer}.{getattr(self.layout, part)}"

    def module(self, path: str) -> nn.Module:
        """The original transformers module at ``path`` (unwrapping TransformerLens bridge components)."""
        return _get(self.root, path)

    def part(self, layer: int, part: str) -> nn.Module:
        return self.module(self.path(layer, part))

    @property
    def layers(self) -> nn.ModuleList:
        """The ``nn.ModuleList`` of decoder layers (the one the model's forward runs through)."""
        layers = self.module(self.layout.layers)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(
                f"{self.layout.layers} of {type(self.root).__name__} is a {type(layers).__name__}, "
                f"not the nn.ModuleList of decoder layers that layout {self.layout.name!r} expects"
            )
        return layers


def decoder(hf_model: nn.Module, layouts: Sequence[Layout] | None = None) -> Decoder | None:
    """The layout of a transformers decoder-only LM, resolved; ``None`` when no layout matches.

    ``layouts``: the layouts to try, in order (default :data:`LAYOUTS`, first match wins); pass a
    new one to check it against a model before adding it to the table.
    """
    config = getattr(hf_model, "config", None)
    n_heads = getattr(config, "num_attention_heads", None)
    for layout in LAYOUTS if layouts is None else layouts:
        try:
            layers = _get(hf_model, layout.layers)
            _get(hf_model, layout.final_norm)
        except AttributeError:
            continue
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            continue
        try:
            for part in ("attn", "o_proj", "ln1", "ln2", "mlp", "attn_out", "mlp_out"):
                _get(layers[0], getattr(layout, part))
        except AttributeError:
            continue
        if not isinstance(n_heads, int):
            return None
        parallel = bool(getattr(config, "use_parallel_residual", False)) and layout.name == "gpt_neox"
        return Decoder(layout, len(layers), n_heads, parallel, hf_model)
    return None


def decoder_layers(hf_model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """``(path, layers)``: the stack of decoder layers of a transformers model; ``None`` where it
    cannot be told.

    A known layout's (:func:`decoder`) where one matches; else, for a family with no layout yet,
    the one ``nn.ModuleList`` of the model holding ``num_hidden_layers`` modules (``None`` where
    there is not exactly one).
    """
    found = decoder(hf_model)
    if found is not None:
        return found.layout.layers, found.layers
    config = getattr(hf_model, "config", None)
    get_text_config = getattr(config, "get_text_config", None)
    text = get_text_config() if callable(get_text_config) else config
    n = getattr(text, "num_hidden_layers", None)
    if not n:
        return None
    lists = [(p, m) for p, m in hf_model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    return lists[0] if len(lists) == 1 else None


def require_decoder(hf_model: nn.Module, what: str) -> Decoder:
    """:func:`decoder`, or a ValueError saying which layouts are known."""
    found = decoder(hf_model)
    if found is None:
        known = "; ".join(f"{lay.name} ({lay.layers}.N.{lay.o_proj})" for lay in LAYOUTS)
        raise ValueError(
            f"{what} needs a decoder-only LM with a known layout; {type(hf_model).__name__} matches none "
            f"of: {known}"
        )
    return found


def _get(root: Any, path: str) -> Any:
    """``root.get_submodule(path)``, stepping into ``_original_component`` of bridge components."""
    module = original(root)
    for part in path.split(".") if path else ():
        child = module._modules.get(part) if isinstance(module, nn.Module) else None
        if child is None:
            raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (path {path!r})")
        module = original(child)
    return module


def original(module: Any) -> Any:
    """The transformers module behind a TransformerLens bridge component (its
    ``_original_component``, unwrapped as often as it is wrapped); any other module as it is."""
    while isinstance(module, nn.Module) and "_original_component" in module._modules:
        module = module._modules["_original_component"]
    return module
