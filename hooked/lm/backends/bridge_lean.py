"""Lean copies of TransformerLens 4.3's block and rotary-attention ``forward``: the same tensor
operations in the same order, calling the same hook points, without the Python that changes nothing.

TransformerLens's ``PositionEmbeddingsAttentionBridge.forward`` (Llama, Gemma 2, Qwen2, Mistral, ...)
handles a dozen architectures in one function: on every call it looks up about fifteen optional
attributes (most absent, each a raised and caught ``AttributeError``), imports two functions, and
reads the config and its rope parameters through transformers' ``__getattribute__``. Its
``BlockBridge.forward`` re-wires its capture hooks, imports ``AttentionBridge`` twice and clears
the attention's captured residual through ``GeneralizedComponent.__setattr__``. Together that is
a few hundred microseconds per layer and per forward, when the tensors are small (generation).

:func:`attention_forward` and :func:`block_forward` do what those functions do on the path that
SmolLM2 / Llama / Gemma 2 / Qwen2 take, and hand every other path to TransformerLens's own
``forward`` (checked on every call, so a flag switched on later, such as ``use_attn_result`` for
``hook_result``, takes TransformerLens's code at once): a split or per-head attention input,
query / key norms, a key multiplier, clipped q / k / v, a gated query, Llama-4 query scaling,
attention sinks, a gate projection, another rotary convention, an overridden output seam, a block
at its ``stop_at_layer`` / ``start_at_layer``. Every hook point TransformerLens calls on the lean
path is called here, in the same order, so a hook on any of them runs as before.
:mod:`hooked.lm.backends.bridge_hot_path` installs them on its quiet classes; the tests compare
them bit for bit (``torch.equal``) with TransformerLens's classes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
from transformer_lens.model_bridge.generalized_components.block import BlockBridge
from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
    PositionEmbeddingsAttentionBridge,
)
from transformer_lens.utilities.hf_utils import get_rotary_pct_from_config
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

_MISSING = object()


def module_attr(module: torch.nn.Module, name: str) -> Any:
    """``getattr(module, name, None)`` for an ``nn.Module`` without the raised and caught
    ``AttributeError`` of an absent name: the instance's own attribute, then its parameter,
    buffer or submodule, then the class's."""
    d = module.__dict__
    value = d.get(name, _MISSING)
    if value is not _MISSING:
        return value
    for slot in ("_parameters", "_buffers", "_modules"):
        table = d.get(slot)
        if table is not None and name in table:
            return table[name]
    return getattr(type(module), name, None)


# attributes of the transformers attention module whose presence sends TransformerLens's forward
# down another path (key multiplier: Falcon-H1; sinks: GPT-OSS)
_HF_EXTRAS = ("key_multiplier", "sinks")
# config flags (TransformerLens's config) whose truth sends it down another path
_CONFIG_EXTRAS = (
    "use_split_qkv_input",
    "use_attn_in",
    "use_attn_result",
    "gated_q_proj",
    "rotary_interleaved_cos_sin",
    "rotary_adjacent_pairs",
    "qk_norm_after_rope",
)


def _lean_attention(self: Any, hf_attn: Any, config: Any, kwargs: dict[str, Any]) -> bool:
    """Whether ``self`` (a ``PositionEmbeddingsAttentionBridge`` with TransformerLens's own
    ``forward``) takes the path :func:`attention_forward` copies, for this call."""
    if config is None or hf_attn is None or module_attr(hf_attn, "head_dim") is None:
        return False
    if "o" not in self.__dict__["_modules"]:
        return False
    if (  # a rotary model without its cos / sin: TransformerLens warns
        kwargs.get("position_embeddings") is None
        and not self.rope_optional
        and getattr(config, "positional_embedding_type", None) == "rotary"
    ):
        return False
    for name in _CONFIG_EXTRAS:
        if getattr(config, name, False):
            return False
    submodules = self.__dict__.get("submodules") or {}
    if "q_norm" in submodules or "k_norm" in submodules:
        return False
    if "gate" in self.__dict__["_modules"]:
        return False
    for name in _HF_EXTRAS:
        if module_attr(hf_attn, name) is not None:
            return False
    hf_config = module_attr(hf_attn, "config")
    if hf_config is not None:
        if getattr(hf_config, "clip_qkv", None) is not None:
            return False
        rope = getattr(hf_config, "rope_parameters", None)
        if isinstance(rope, dict) and rope.get("llama_4_scaling_beta") is not None:
            return False
    return True


def attention_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``PositionEmbeddingsAttentionBridge.forward`` on its common path (see the module
    docstring); any other path runs TransformerLens's ``forward``."""
    modules = self.__dict__["_modules"]
    hf_attn = modules.get("_original_component")
    config = self.__dict__.get("config")
    if not _lean_attention(self, hf_attn, config, kwargs):
        return PositionEmbeddingsAttentionBridge.forward(self, *args, **kwargs)

    if "hidden_states" in kwargs:
        hidden_states = kwargs.pop("hidden_states")
    elif args and isinstance(args[0], torch.Tensor):
        hidden_states = args[0]
    else:
        raise ValueError("Could not find hidden_states in args or kwargs")
    position_embeddings = kwargs.pop("position_embeddings", None)
    attention_mask = kwargs.pop("attention_mask", None)

    hidden_states = modules["hook_in"](hidden_states)
    input_shape = hidden_states.shape[:-1]
    head_dim = module_attr(hf_attn, "head_dim")
    hidden_shape = (*input_shape, -1, head_dim)

    query_states = modules["q"](hidden_states)
    key_states = modules["k"](hidden_states)
    value_states = modules["v"](hidden_states)
    query_states = query_states.view(hidden_shape).transpose(1, 2)
    key_states = key_states.view(hidden_shape).transpose(1, 2)
    value_states = value_states.view(hidden_shape).transpose(1, 2)

    if position_embeddings is not None:
        position_embeddings = self._apply_position_embedding_hooks(position_embeddings)
        cos, sin = position_embeddings
        rotary_dim = cos.shape[-1]
        if rotary_dim * 2 == head_dim and get_rotary_pct_from_config(config) == 1.0:
            cos = torch.cat([cos, cos], dim=-1)
            sin = torch.cat([sin, sin], dim=-1)
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        elif rotary_dim < head_dim:
            q_rot, q_pass = query_states[..., :rotary_dim], query_states[..., rotary_dim:]
            k_rot, k_pass = key_states[..., :rotary_dim], key_states[..., rotary_dim:]
            q_rot, k_rot = apply_rotary_pos_emb(q_rot, k_rot, cos, sin)
            query_states = torch.cat([q_rot, q_pass], dim=-1)
            key_states = torch.cat([k_rot, k_pass], dim=-1)
        else:
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

    rot_q, rot_k = modules.get("hook_rot_q"), modules.get("hook_rot_k")
    if rot_q is not None:
        query_states = rot_q(query_states)
    if rot_k is not None:
        key_states = rot_k(key_states)

    key_states, value_states = self._update_kv_cache(key_states, value_states, **kwargs)

    groups = module_attr(hf_attn, "num_key_value_groups")
    if groups is None:
        groups = 1
    if groups > 1:
        key_states = repeat_kv(key_states, groups)
        value_states = repeat_kv(value_states, groups)

    scaling = module_attr(hf_attn, "scaling")
    if scaling is None:
        scaling = head_dim**-0.5
    attn_scores = torch.matmul(query_states, key_states.transpose(-2, -1)) * scaling
    softcap = module_attr(hf_attn, "attn_logit_softcapping")
    if softcap is not None:
        attn_scores = attn_scores / softcap
        attn_scores = torch.tanh(attn_scores)
        attn_scores = attn_scores * softcap
    attn_scores = self._apply_reconstruct_attention_mask(
        attn_scores=attn_scores,
        attention_mask=attention_mask,
        seq_len=key_states.shape[-2],
        q_seq_len=query_states.shape[-2],
    )
    attn_scores = modules["hook_attn_scores"](attn_scores)
    attn_weights = self._masked_softmax(attn_scores, dtype=torch.float32).to(query_states.dtype)
    attn_weights = self._scrub_compatibility_pattern_nans(attn_weights)
    dropout = module_attr(hf_attn, "attention_dropout")
    if dropout is None:
        dropout = 0.0
    if self.training and dropout > 0.0:
        attn_weights = torch.nn.functional.dropout(attn_weights, p=dropout, training=True)
    attn_weights = modules["hook_pattern"](attn_weights)

    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    attn_output = attn_output.reshape(*input_shape, -1)
    attn_output = self._pre_output_projection(attn_output)

    o = modules["o"]  # present: the lean path is only taken with an output projection
    o_original = o.__dict__["_modules"].get("_original_component")
    o_weight = module_attr(o_original, "weight") if o_original is not None else None
    if (
        isinstance(o_weight, torch.Tensor)
        and o_weight.dtype.is_floating_point
        and attn_output.is_floating_point()
        and attn_output.dtype != o_weight.dtype
    ):
        attn_output = attn_output.to(dtype=o_weight.dtype)
    attn_output = modules["hook_out"](o(attn_output))
    return attn_output, attn_weights


def block_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``BlockBridge.forward`` while the block is at neither its ``stop_at_layer`` nor its
    ``start_at_layer`` and its capture hooks are wired as TransformerLens left them; otherwise
    TransformerLens's ``forward``."""
    d = self.__dict__
    modules = d["_modules"]
    original = modules.get("_original_component")
    attn = _wired_attention(self)
    if (
        original is None
        or attn is _MISSING
        or d.get("_stop_at_layer_idx", _MISSING) is not None
        or d.get("_start_at_layer_idx", _MISSING) is not None
    ):
        return BlockBridge.forward(self, *args, **kwargs)

    if attn is not None:
        _set_plain(attn, "_captured_pre_ln_residual", None)
    hook_in = modules["hook_in"]
    if args and isinstance(args[0], torch.Tensor):
        args = (hook_in(args[0]), *args[1:])
    elif "hidden_states" in kwargs and isinstance(kwargs["hidden_states"], torch.Tensor):
        kwargs["hidden_states"] = hook_in(kwargs["hidden_states"])
    filtered = self._filter_kwargs_for_forward(kwargs, len(args))
    try:
        output = original(*args, **filtered)
    finally:
        if attn is not None:
            _set_plain(attn, "_captured_pre_ln_residual", None)
    standalone = self._is_standalone_hidden_state_call(args, filtered)
    return self._apply_output_hook(output, force_tuple_for_bare_tensor=standalone)


def _wired_attention(block: Any) -> Any:
    """The block's attention component whose captured residual the block clears (``None`` when it
    has none), once its capture hooks and its ``ln1`` reference are wired as
    ``BlockBridge._maybe_wire_capture_hooks`` would leave them; ``_MISSING`` when they are not
    (TransformerLens's ``forward`` then wires them)."""
    d = block.__dict__
    if not d.get("_capture_hooks_wired"):
        return _MISSING
    submodules = d.get("submodules")
    attn = submodules.get("attn") if submodules else None
    if not isinstance(attn, AttentionBridge):
        return None
    ln1 = submodules.get("ln1")
    ln1_original = ln1.__dict__["_modules"].get("_original_component") if ln1 is not None else None
    want = ln1_original if getattr(attn, "supports_split_qkv_fork", False) else None
    ad = attn.__dict__
    if "_ln1_module" in ad["_modules"] or ad.get("_ln1_module", _MISSING) is not want:
        return _MISSING
    return attn


def _set_plain(module: torch.nn.Module, name: str, value: Any) -> None:
    """``module.name = value`` for a name that is no parameter, buffer or submodule (where
    ``GeneralizedComponent.__setattr__`` and ``nn.Module.__setattr__`` store it in the
    instance dictionary); anything else through ``setattr``."""
    d = module.__dict__
    if name in d["_parameters"] or name in d["_buffers"] or name in d["_modules"]:
        setattr(module, name, value)
    else:
        d[name] = value
