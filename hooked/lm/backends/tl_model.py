"""TransformerLens's model API on a ``hooked.wrap`` language model: :class:`TLModelAPI`.

What TransformerLens's tutorials call on ``model`` besides hooks, written once over the decoder
layout that :mod:`hooked.lm.names.layouts` resolves, so every family with a layout gets it:

* tokens, with TransformerLens's defaults: :meth:`~TLModelAPI.to_tokens` (prepends BOS unless
  ``prepend_bos=False``; a list of texts is padded on the right), :meth:`~TLModelAPI.to_str_tokens`,
  :meth:`~TLModelAPI.to_string`, :meth:`~TLModelAPI.to_single_token`,
  :meth:`~TLModelAPI.get_token_position`;
* ``model.cfg`` (:class:`TLConfig`: ``n_layers``, ``n_heads``, ``d_model``, ``d_head``, ``d_vocab``,
  ``n_ctx``, ``device``, ...);
* weights by TransformerLens's names, stacked per layer and head as TransformerLens 4's bridge stacks
  them: ``W_E``, ``W_pos`` (learned positions only), ``W_U``, ``b_U``, ``W_Q`` ``[layer, head,
  d_model, d_head]``, ``W_K`` / ``W_V`` ``[layer, kv_head, d_model, d_head]`` (grouped-query
  attention keeps its key-value heads), ``W_O`` ``[layer, head, d_head, d_model]``, their biases
  where the model has them, and the factored circuits ``OV`` / ``QK`` ``[layer, head, d_model,
  d_model]`` (TransformerLens's ``FactoredMatrix``; key-value heads repeated per query head). The
  weights are the model's own: no folding of norms, no centring (see
  :meth:`~TLModelAPI.enable_compatibility_mode`);
* ``model.blocks[i]`` / ``model.embed`` / ``model.unembed`` / ``model.ln_final``: views whose
  attributes are the hook points by TransformerLens name (``model.blocks[0].attn.hook_z``) and
  the weights of that block (``model.blocks[3].attn.W_Q``, ``model.unembed.b_U``);
* the forward's TransformerLens arguments: a text or a list of texts instead of ids,
  ``return_type="logits" | "loss" | "both" | None``, ``loss_per_token``, ``prepend_bos``,
  ``padding_side``, ``stop_at_layer`` (:meth:`~TLModelAPI._tl_run_until`);
  :meth:`~TLModelAPI.loss_fn`; :meth:`~TLModelAPI.generate` on a text;
* :meth:`~TLModelAPI.tl_parameters` / :meth:`~TLModelAPI.tl_named_parameters`: every weight by
  its TransformerLens name (``blocks.0.attn.W_Q``, ``blocks.0.mlp.W_in``, ``ln_final.w``, ...),
  the keys and shapes of TransformerLens 4's bridge.

Numbers are those of the transformers model, which TransformerLens's bridge also runs: ids, weights
and losses equal the bridge's (``tests/lm/test_tl_model.py``). Only the bridge's
``enable_compatibility_mode`` processing (folded norms, centred unembedding) is not done here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from hooked.hook_point import HookPoint
from hooked.lm.names.layouts import Decoder
from hooked.protocol import model_device

ReturnType = Literal["logits", "loss", "both"] | None
TL_FORWARD_KWARGS = ("return_type", "loss_per_token", "prepend_bos", "padding_side", "stop_at_layer")


@dataclass
class TLConfig:
    """The part of TransformerLens's ``HookedTransformerConfig`` that tutorials read."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    d_vocab_out: int
    n_ctx: int | None  # None where the config names no context length
    d_mlp: int | None
    n_key_value_heads: int
    device: str
    dtype: torch.dtype
    act_fn: str | None
    normalization_type: str
    positional_embedding_type: str
    model_name: str
    default_prepend_bos: bool = True
    tokenizer_prepends_bos: bool = False
    original_architecture: str | None = None
    attn_only: bool = False  # every decoder layout of the LM layer has MLPs
    use_attn_result: bool = False  # set_use_attn_result: full caches hold blocks.L.attn.hook_result


def tl_config(dec: Decoder, model: nn.Module) -> TLConfig:
    """:class:`TLConfig` of a transformers decoder of known layout."""
    config = dec.root.config
    d_model = config.hidden_size
    d_head = getattr(config, "head_dim", None) or d_model // dec.n_heads
    norm = dec.module(dec.layout.final_norm)
    lay = dec.layout
    param = next(dec.root.parameters())
    return TLConfig(
        n_layers=dec.n_layers,
        n_heads=dec.n_heads,
        d_model=d_model,
        d_head=d_head,
        d_vocab=config.vocab_size,
        d_vocab_out=dec.root.get_output_embeddings().weight.shape[0],
        n_ctx=getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None),
        d_mlp=getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model,
        n_key_value_heads=getattr(config, "num_key_value_heads", None) or dec.n_heads,
        device=str(model_device(model)),
        dtype=param.dtype,
        act_fn=getattr(config, "hidden_act", None) or getattr(config, "activation_function", None),
        normalization_type="LN" if isinstance(norm, nn.LayerNorm) else "RMS",
        positional_embedding_type="standard" if lay.pos_embed else "rotary",
        model_name=getattr(config, "_name_or_path", "") or type(dec.root).__name__,
        original_architecture=(getattr(config, "architectures", None) or [type(dec.root).__name__])[0],
    )


# ---------------------------------------------------------------------- attention weights per family
def _heads(w: Tensor, n: int) -> Tensor:
    """``[d_model, n * d_head]`` (input-major) -> ``[n, d_model, d_head]``."""
    return w.unflatten(1, (n, -1)).permute(1, 0, 2)


def attention_weights(dec: Decoder, layer: int) -> dict[str, Tensor | None]:
    """``W_Q, W_K, W_V, W_O, b_Q, b_K, b_V, b_O`` of one layer, shaped as TransformerLens's bridge
    shapes them (``b_*`` is None where the projection has no bias)."""
    # Any: transformers modules, whose projections each family names its own way (below)
    attn: Any = dec.part(layer, "attn")
    o_proj: Any = dec.part(layer, "o_proj")
    cfg = dec.root.config
    n, n_kv = dec.n_heads, getattr(cfg, "num_key_value_heads", None) or dec.n_heads
    name = dec.layout.name

    def bias(module: nn.Module, n_heads: int) -> Tensor | None:
        b = getattr(module, "bias", None)
        return None if b is None else b.unflatten(0, (n_heads, -1))

    out: dict[str, Tensor | None]
    if name in ("llama", "gemma2") and all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj")):
        out = {
            "W_Q": _heads(attn.q_proj.weight.T, n),
            "W_K": _heads(attn.k_proj.weight.T, n_kv),
            "W_V": _heads(attn.v_proj.weight.T, n_kv),
            "b_Q": bias(attn.q_proj, n),
            "b_K": bias(attn.k_proj, n_kv),
            "b_V": bias(attn.v_proj, n_kv),
        }
        w_o = o_proj.weight.T  # nn.Linear: [out, in]
    elif name == "gpt2":  # Conv1D: weight [in, out]; c_attn holds q, k, v side by side
        q, k, v = attn.c_attn.weight.chunk(3, dim=1)
        bq, bk, bv = attn.c_attn.bias.chunk(3)
        out = {"W_Q": _heads(q, n), "W_K": _heads(k, n), "W_V": _heads(v, n)}
        out.update(b_Q=bq.unflatten(0, (n, -1)), b_K=bk.unflatten(0, (n, -1)), b_V=bv.unflatten(0, (n, -1)))
        w_o = o_proj.weight
    elif name == "gpt_neox":  # query_key_value: [n_heads * (q, k, v) * d_head, d_model]
        w = attn.query_key_value.weight.unflatten(0, (n, 3, -1))  # [head, 3, d_head, d_model]
        b = attn.query_key_value.bias.unflatten(0, (n, 3, -1))
        out = {k: w[:, i].transpose(1, 2) for i, k in enumerate(("W_Q", "W_K", "W_V"))}
        out.update({k: b[:, i] for i, k in enumerate(("b_Q", "b_K", "b_V"))})
        w_o = o_proj.weight.T
    else:
        raise NotImplementedError(
            f"TransformerLens weights: {type(attn).__name__} ({name} layout) has no separate q/k/v "
            "projections that this reads; read the transformers module's weights directly"
        )
    out["W_O"] = w_o.unflatten(0, (n, -1))  # [head, d_head, d_model]
    out["b_O"] = getattr(o_proj, "bias", None)
    return out


def _stack(dec: Decoder, key: str) -> Tensor:
    parts = [attention_weights(dec, i)[key] for i in range(dec.n_layers)]
    present = [p for p in parts if p is not None]
    if len(present) < len(parts):
        raise AttributeError(
            f"{key}: this model's attention projections have no bias (TransformerLens's bridge has "
            "none either); use zeros if an analysis needs one"
        )
    return torch.stack(present)


def _repeat_kv(w: Tensor, n_heads: int) -> Tensor:
    """Key-value heads ``[..., n_kv, ...]`` (dim -3) repeated for each query head that shares them."""
    groups = n_heads // w.shape[-3]
    return w.repeat_interleave(groups, dim=-3) if groups > 1 else w


def _factored(a: Tensor, b: Tensor) -> Any:
    try:
        from transformer_lens import FactoredMatrix
    except ImportError as e:  # pragma: no cover - transformer_lens is a dependency here
        raise ImportError("OV / QK are TransformerLens FactoredMatrix objects: install it") from e
    return FactoredMatrix(a, b)


class _Stopped(Exception):
    """Raised by the ``stop_at_layer`` pre-hook, carrying the residual stream it stopped at."""

    def __init__(self, resid: Any):
        super().__init__("stop_at_layer")
        self.resid = resid


def _in_out(module: Any) -> Tensor:
    """A projection's weight as ``[in, out]`` (a Linear's transposed; GPT-2's Conv1D as it is)."""
    return module.weight if type(module).__name__ == "Conv1D" else module.weight.T


def _bias(module: Any, zeros: Tensor) -> Tensor:
    b = getattr(module, "bias", None)
    return zeros if b is None else b


def _attention_params(dec: Decoder, i: int, n_heads: int, d_head: int, zeros: Any) -> dict[str, Tensor]:
    """``blocks.i.attn.*`` of :meth:`TLModelAPI.tl_parameters` (key-value heads repeated)."""
    try:
        w = attention_weights(dec, i)
    except NotImplementedError:
        return {}
    out = {f"blocks.{i}.attn.{k}": _repeat_kv(cast(Tensor, w[k]), n_heads) for k in ("W_Q", "W_K", "W_V")}
    out[f"blocks.{i}.attn.W_O"] = cast(Tensor, w["W_O"])
    for k in ("b_Q", "b_K", "b_V"):
        b = w[k]
        out[f"blocks.{i}.attn.{k}"] = (
            zeros(n_heads, d_head) if b is None else b.repeat_interleave(n_heads // b.shape[0], dim=0)
        )
    b_o = w["b_O"]
    out[f"blocks.{i}.attn.b_O"] = b_o if b_o is not None else zeros(cast(Tensor, w["W_O"]).shape[-1])
    return out


def _mlp_params(dec: Decoder, i: int, d_model: int, zeros: Any) -> dict[str, Tensor]:
    """``blocks.i.mlp.*`` of :meth:`TLModelAPI.tl_parameters`: ``W_in`` is a gated MLP's linear
    branch (its gate is ``W_gate``), else the projection before the activation."""
    lay = dec.layout
    gated = lay.mlp_pre_linear is not None
    mlp_in = lay.mlp_pre_linear if gated else lay.mlp_pre
    if mlp_in is None or lay.mlp_post is None:
        return {}
    try:
        up = dec.module(f"{lay.layers}.{i}.{mlp_in}")
        down = dec.module(f"{lay.layers}.{i}.{lay.mlp_post}")
        gate = dec.module(f"{lay.layers}.{i}.{lay.mlp_pre}") if gated and lay.mlp_pre else None
    except AttributeError:
        return {}
    w_in = _in_out(up)
    out = {f"blocks.{i}.mlp.W_in": w_in, f"blocks.{i}.mlp.W_out": _in_out(down)}
    out[f"blocks.{i}.mlp.b_in"] = _bias(up, zeros(w_in.shape[1]))
    out[f"blocks.{i}.mlp.b_out"] = _bias(down, zeros(d_model))
    if gate is not None:
        out[f"blocks.{i}.mlp.W_gate"] = _in_out(gate)
        b_gate = getattr(gate, "bias", None)
        if isinstance(b_gate, Tensor):
            out[f"blocks.{i}.mlp.b_gate"] = b_gate
    return out


def _norm_params(prefix: str, norm: Any) -> dict[str, Tensor]:
    out = {}
    if isinstance(getattr(norm, "weight", None), Tensor):
        out[f"{prefix}.w"] = norm.weight
    if isinstance(getattr(norm, "bias", None), Tensor):
        out[f"{prefix}.b"] = norm.bias
    return out


_TL_GENERATE = ("verbose", "use_past_kv_cache", "prepend_bos", "return_type", "stop_at_eos")


def _rows(tokens: Tensor, mask: Tensor | None) -> list[list[int]]:
    """Each row's ids without its padding."""
    if mask is None:
        return tokens.tolist()
    return [row[m.bool()].tolist() for row, m in zip(tokens, mask)]


# ---------------------------------------------------------------------- views: model.blocks[i] & co.
class TLView:
    """``model.blocks[i]``, ``model.blocks[i].attn``, ``model.unembed``, ...: attributes are hook
    points by TransformerLens name under this prefix, then the weights TransformerLens puts there."""

    def __init__(self, model: Any, prefix: str, weights: dict[str, Any] | None = None):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_weights", weights or {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        full = f"{self._prefix}.{name}"
        aliases = self._model.hook_name_aliases
        if full in aliases:
            return self._model.hook_dict[aliases[full]]
        if name in self._weights:
            return self._weights[name]()
        if name in ("attn", "mlp", "ln1", "ln2") and any(a.startswith(full + ".") for a in aliases):
            return TLView(self._model, full, _block_weights(self._model, self._prefix, name))
        raise AttributeError(
            f"{self._prefix}.{name}: not a TransformerLens hook point or weight this wrap model has "
            f"(hook points here: {sorted(a for a in aliases if a.startswith(self._prefix + '.'))[:8]} ...)"
        )

    def __repr__(self) -> str:
        return f"TLView({self._prefix!r})"


def _block_weights(model: Any, prefix: str, part: str) -> dict[str, Any]:
    if part != "attn" or not prefix.startswith("blocks."):
        return {}
    layer = int(prefix.split(".")[1])
    keys = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
    return {k: (lambda k=k: attention_weights(model.arch, layer)[k]) for k in keys}


class TLBlocks:
    """``model.blocks``: ``len``, indexing (negative too) and iteration over per-block views."""

    def __init__(self, model: Any, n_layers: int):
        self._model, self._n = model, n_layers

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> TLView:
        if not -self._n <= i < self._n:
            raise IndexError(f"blocks[{i}]: the model has {self._n} blocks")
        return TLView(self._model, f"blocks.{i % self._n}")

    def __iter__(self) -> Any:
        return (self[i] for i in range(self._n))


# ---------------------------------------------------------------------- the API
class TLModelAPI:
    """TransformerLens's model methods for :class:`hooked.lm.WrappedLM` (see the module docstring).

    Needs ``self.tokenizer``, ``self.arch`` (the resolved :class:`Decoder`), ``self.module`` (the
    transformers model) and ``self.hook_name_aliases``.
    """

    # what the class this is mixed into (WrappedLM) has; declared here for type checkers
    arch: Decoder | None
    module: Any  # the transformers model (config, generate, get_output_embeddings, ...)
    hook_dict: dict[str, HookPoint]
    hook_name_aliases: dict[str, str]

    # ------------------------------------------------------------------ layout
    def _tl_arch(self, what: str) -> Decoder:
        arch = self.arch
        if arch is None:
            raise AttributeError(
                f"{what}: {type(self.module).__name__} has no known decoder layout "
                "(hooked.lm.names.layouts.LAYOUTS), so TransformerLens's model API is not available on it"
            )
        return arch

    @property
    def cfg(self) -> TLConfig:
        """TransformerLens's config fields of this model (a fresh :class:`TLConfig` each time)."""
        cfg = tl_config(self._tl_arch("cfg"), cast(nn.Module, self))  # mixed into WrappedLM, a module
        cfg.use_attn_result = self._tl_use_attn_result
        return cfg

    @property
    def _tl_use_attn_result(self) -> bool:
        return bool(self.__dict__.get("_tl_attn_result", False))

    # ------------------------------------------------------------------ tokens
    def _tl_tokenizer(self) -> Any:
        tokenizer = getattr(self, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"{type(self.module).__name__} has no tokenizer (load it with hooked.lm.load)")
        return tokenizer

    def to_tokens(
        self,
        input: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Tensor:
        """Token ids ``[batch, pos]`` as TransformerLens's ``to_tokens``: BOS prepended unless
        ``prepend_bos=False``; a list of texts padded on ``padding_side`` (default right) with the
        pad token (else EOS); cut at ``n_ctx`` when ``truncate``."""
        return self._tl_tokens(input, prepend_bos, padding_side, truncate, move_to_device)[0]

    def _tl_tokens(
        self,
        input: Any,
        prepend_bos: bool | None,
        padding_side: str | None,
        truncate: bool = True,
        move: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """``(ids, attention mask or None when nothing is padded)``."""
        tokenizer = self._tl_tokenizer()
        if isinstance(input, str):
            texts = [input]
        elif isinstance(input, (list, tuple)) and all(isinstance(t, str) for t in input) and input:
            texts = list(input)
        else:
            raise TypeError(f"to_tokens: expected a text or a list of texts, got {type(input).__name__}")
        side = padding_side or "right"
        if side not in ("left", "right"):
            raise ValueError(f"to_tokens: padding_side must be 'left' or 'right', got {padding_side!r}")
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        if prepend_bos is None or prepend_bos:
            if tokenizer.bos_token_id is None:
                raise ValueError("to_tokens: prepend_bos needs a BOS token, and this tokenizer has none")
            ids = [[tokenizer.bos_token_id, *i] for i in ids]
        if truncate:
            n_ctx = self.cfg.n_ctx if self.arch is not None else None
            ids = [i[:n_ctx] for i in ids] if n_ctx else ids
        width = max(len(i) for i in ids)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        tokens = torch.full((len(ids), width), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, i in enumerate(ids):
            cols = slice(width - len(i), width) if side == "left" else slice(0, len(i))
            tokens[row, cols] = torch.tensor(i, dtype=torch.long)
            mask[row, cols] = 1
        if move:
            tokens, mask = tokens.to(model_device(self)), mask.to(model_device(self))
        return tokens, (None if bool(mask.all()) else mask)

    def to_str_tokens(self, input: Any, prepend_bos: bool | None = None, padding_side: Any = None) -> Any:
        """Each token as text: a list for a text, 1-d ids or ``[1, pos]`` ids; a list of lists for a
        list of texts."""
        tokenizer = self._tl_tokenizer()
        if isinstance(input, (list, tuple)) and input and all(isinstance(t, str) for t in input):
            return [self.to_str_tokens(t, prepend_bos, padding_side) for t in input]
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos, padding_side)[0]
        else:
            ids = torch.as_tensor(input)
            if ids.dim() == 2:
                if ids.shape[0] != 1:
                    raise ValueError(f"to_str_tokens: ids of shape {tuple(ids.shape)}; pass one row")
                ids = ids[0]
            if ids.dim() == 0:
                ids = ids[None]
        return [tokenizer.decode([int(i)]) for i in ids.tolist()]

    def to_string(self, tokens: Any) -> str | list[str]:
        """Text of ids: a string for an id or 1-d ids, a list of strings for ``[batch, pos]``."""
        tokenizer = self._tl_tokenizer()
        t = torch.as_tensor(tokens)
        if t.dim() == 0:
            t = t[None]
        if t.dim() == 1:
            return tokenizer.decode(t.tolist())
        if t.dim() == 2:
            return [tokenizer.decode(row) for row in t.tolist()]
        raise ValueError(f"to_string: expected ids of at most 2 dimensions, got shape {tuple(t.shape)}")

    def to_single_token(self, string: str) -> int:
        """The id of ``string`` when it is exactly one token (no BOS), else a ValueError."""
        ids = self.to_tokens(string, prepend_bos=False)[0]
        if ids.numel() != 1:
            raise ValueError(f"to_single_token: {string!r} is {ids.numel()} tokens {self.to_str_tokens(ids)}")
        return int(ids.item())

    def get_token_position(
        self,
        single_token: str | int,
        input: str | Tensor,
        mode: Literal["first", "last"] = "first",
        prepend_bos: bool | None = None,
        padding_side: Any = None,
    ) -> int:
        """Position of ``single_token`` in ``input`` (a text, 1-d ids or ``[1, pos]`` ids): its
        first or last occurrence; a ValueError when it does not occur."""
        if mode not in ("first", "last"):
            raise ValueError(f"get_token_position: mode must be 'first' or 'last', got {mode!r}")
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        ids = self.to_tokens(input, prepend_bos, padding_side)[0] if isinstance(input, str) else input
        ids = torch.as_tensor(ids)
        if ids.dim() == 2:
            if ids.shape[0] != 1:
                raise ValueError(f"get_token_position: ids of shape {tuple(ids.shape)}; pass one row")
            ids = ids[0]
        where = (ids == token).nonzero()
        if where.numel() == 0:
            raise ValueError(f"get_token_position: token {token} ({self.to_string(token)!r}) is not in input")
        return int(where[0 if mode == "first" else -1].item())

    # ------------------------------------------------------------------ forward
    def _tl_forward_args(self, args: tuple, kwargs: dict) -> tuple[tuple, dict, dict]:
        """Split TransformerLens's forward arguments off; texts become ids (and a mask if padded)."""
        tl = {k: kwargs.pop(k) for k in TL_FORWARD_KWARGS if k in kwargs}
        first = args[0] if args else kwargs.get("input")
        if isinstance(first, str) or (
            isinstance(first, (list, tuple)) and first and all(isinstance(t, str) for t in first)
        ):
            ids, mask = self._tl_tokens(first, tl.get("prepend_bos"), tl.get("padding_side"))
            kwargs.pop("input", None)
            args = (ids, *args[1:])
            # as TransformerLens: right padding is left unmasked (a causal model's real tokens do not
            # see it; the loss then counts the padded positions too), left padding is masked
            if mask is not None and tl.get("padding_side") == "left" and "attention_mask" not in kwargs:
                kwargs["attention_mask"] = mask
            elif mask is not None:
                tl["_right_padded"] = True  # on purpose: no warning about padding without a mask
        elif "input" in kwargs:
            args = (kwargs.pop("input"), *args)
        return args, kwargs, tl

    def _tl_output(self, logits: Any, args: tuple, kwargs: dict, tl: dict) -> Any:
        return_type = tl.get("return_type", "logits")
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        if return_type not in ("loss", "both"):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is None:
            raise ValueError(f"return_type={return_type!r} needs the token ids (input_ids) for the loss")
        loss = self.loss_fn(
            logits, ids, kwargs.get("attention_mask"), per_token=tl.get("loss_per_token", False)
        )
        return loss if return_type == "loss" else (logits, loss)

    def loss_fn(
        self, logits: Tensor, tokens: Tensor, attention_mask: Tensor | None = None, per_token: bool = False
    ) -> Tensor:
        """Next-token cross-entropy as TransformerLens computes it: ``[batch, pos - 1]`` per token,
        else the mean (over the real tokens only, where ``attention_mask`` marks padding)."""
        if tokens.device != logits.device:
            tokens = tokens.to(logits.device)
        log_probs = logits[:, :-1].log_softmax(dim=-1)
        loss = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
        if attention_mask is not None:
            keep = (
                attention_mask[:, 1:].to(loss.device).bool() & attention_mask[:, :-1].to(loss.device).bool()
            )
            if per_token:
                return loss * keep
            return loss[keep].mean()
        return loss if per_token else loss.mean()

    def generate(self, input: Any = "", max_new_tokens: int = 10, **kwargs: Any) -> Any:
        """TransformerLens's ``generate`` for a text (or list of texts): the text with its continuation
        (BOS prepended as TransformerLens does unless ``prepend_bos=False``; ``do_sample`` defaults
        to True as there; ``temperature``, ``top_k``, ``top_p``, ``stop_at_eos``, ``eos_token_id``;
        ``verbose`` and ``use_past_kv_cache`` accepted), run by :func:`hooked.lm.generate`. Ids in
        (TransformerLens's keywords too): ids out, prompt included. Anything else goes to the
        transformers model's own ``generate``, as before."""
        texts = isinstance(input, str) or (
            isinstance(input, (list, tuple)) and input and all(isinstance(t, str) for t in input)
        )
        if not texts and not any(k in kwargs for k in _TL_GENERATE):
            return self.module.generate(input, max_new_tokens=max_new_tokens, **kwargs)
        from hooked.lm.text.generate import Generation, generate

        kwargs.pop("verbose", None)
        kwargs.pop("return_type", None)
        use_cache = kwargs.pop("use_past_kv_cache", True)
        prepend_bos = kwargs.pop("prepend_bos", None)
        kwargs.setdefault("do_sample", True)
        if texts:
            ids, mask = self._tl_tokens(input, prepend_bos, "left")
            batch = ids if mask is None else {"input_ids": ids, "attention_mask": mask}
            out = generate(self, batch, max_new_tokens, use_cache=use_cache, return_tokens=True, **kwargs)
            assert isinstance(out, Generation)  # return_tokens=True
            bos = 1 if prepend_bos is None or prepend_bos else 0
            tokenizer = self._tl_tokenizer()
            text = [
                tokenizer.decode(prompt[bos:] + new.tolist()[: int(n)])
                for prompt, new, n in zip(_rows(ids, mask), out.tokens, out.lengths)
            ]
            return text[0] if isinstance(input, str) else text
        out = generate(self, input, max_new_tokens, use_cache=use_cache, return_tokens=True, **kwargs)
        assert isinstance(out, Generation)  # return_tokens=True
        return torch.cat([torch.as_tensor(input).to(out.tokens.device), out.tokens], dim=1)

    def _tl_run_until(self, stop_at_layer: int, run: Any) -> Tensor:
        """``run()`` (a forward) stopped where the residual stream enters block ``stop_at_layer``,
        which is returned ``[batch, pos, d_model]`` (after any hook on that block's input), as
        TransformerLens's ``stop_at_layer``: negative values count from the end, ``0`` gives the
        embeddings, ``n_layers`` the residual stream after the last block (the final norm's input,
        as TransformerLens's ``HookedTransformer``; its bridge runs the whole model there)."""
        dec = self._tl_arch("stop_at_layer")
        n = dec.n_layers
        if isinstance(stop_at_layer, bool) or not isinstance(stop_at_layer, int):
            raise TypeError(f"stop_at_layer must be an int, got {type(stop_at_layer).__name__}")
        if not -n <= stop_at_layer <= n:
            raise ValueError(f"stop_at_layer={stop_at_layer} is out of range for a model with {n} blocks")
        layer = stop_at_layer % n if stop_at_layer < n else n
        target = dec.layers[layer] if layer < n else dec.module(dec.layout.final_norm)

        def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
            resid = args[0] if args and isinstance(args[0], Tensor) else kwargs.get("hidden_states")
            raise _Stopped(resid)

        handle = target.register_forward_pre_hook(stop, with_kwargs=True)  # after hooks on its input
        try:
            run()
        except _Stopped as stopped:
            return cast(Tensor, stopped.resid)
        finally:
            handle.remove()
        raise RuntimeError(f"stop_at_layer={stop_at_layer}: the forward never reached block {layer}")

    def tl_parameters(self) -> dict[str, Tensor]:
        """Every weight by its TransformerLens name, with the keys and shapes of TransformerLens 4's
        bridge (``get_params``): ``embed.W_E``, ``pos_embed.W_pos`` (learned positions only),
        ``blocks.L.attn.W_Q / W_K / W_V / W_O`` (key-value heads repeated per query head, as there)
        and ``b_*`` (zeros where the model has no bias), ``blocks.L.mlp.W_in / W_out / b_in / b_out``
        (+ ``W_gate`` / ``b_gate`` for a gated MLP), ``blocks.L.ln1.w`` / ``.b`` (where the norm
        has them), ``ln2``, ``ln_final``, ``unembed.W_U`` / ``b_U``. The model's own weights (no
        folding), so a gradient step on them changes the model."""
        dec = self._tl_arch("tl_parameters")
        cfg = self.cfg
        first = self.W_E
        zeros = lambda *shape: torch.zeros(*shape, dtype=first.dtype, device=first.device)  # noqa: E731
        out: dict[str, Tensor] = {"embed.W_E": first}
        if dec.layout.pos_embed:
            out["pos_embed.W_pos"] = self.W_pos
        for i in range(dec.n_layers):
            # attention and MLP weights this does not read (fused projections of a family matched by
            # structure) are left out, as the bridge leaves out what it cannot put in its layout
            out.update(_attention_params(dec, i, cfg.n_heads, cfg.d_head, zeros))
            out.update(_mlp_params(dec, i, cfg.d_model, zeros))
            for tl in ("ln1", "ln2"):
                out.update(_norm_params(f"blocks.{i}.{tl}", dec.part(i, tl)))
        out.update(_norm_params("ln_final", dec.module(dec.layout.final_norm)))
        out["unembed.W_U"] = self.W_U
        out["unembed.b_U"] = self.b_U
        return out

    def tl_named_parameters(self) -> Any:
        """``(name, weight)`` pairs of :meth:`tl_parameters` (TransformerLens's iterator form)."""
        return iter(self.tl_parameters().items())

    def enable_compatibility_mode(self, *args: Any, **kwargs: Any) -> None:
        """Accepted so that TransformerLens code runs, but no weights are processed on ``wrap``
        (warns): norms are not folded and the unembedding is not centred, so logits differ from
        the bridge's in compatibility mode by a constant per position (logit differences and
        probabilities agree), and ``W_*`` are the model's own weights."""
        warnings.warn(
            "enable_compatibility_mode on a wrap model: weights are not processed (no folded norms, "
            "no centred unembedding); logits differ from TransformerLens's by a constant per position, "
            "logit differences and probabilities agree. Load with backend='bridge' for processed weights.",
            UserWarning,
            stacklevel=2,
        )

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """As TransformerLens: whether a cache of everything (``run_with_cache`` with no
        ``names_filter``) holds ``blocks.L.attn.hook_result`` (a ``[batch, pos, head, d_model]``
        tensor per layer). Hooks and caches that name it get it either way (its hook point
        computes the per-head outputs whenever a hook is attached there)."""
        self.__dict__["_tl_attn_result"] = bool(use_attn_result)

    # ------------------------------------------------------------------ weights
    @property
    def W_U(self) -> Tensor:
        """Unembedding ``[d_model, d_vocab]``."""
        self._tl_arch("W_U")
        return self.module.get_output_embeddings().weight.T

    @property
    def b_U(self) -> Tensor:
        """Unembedding bias ``[d_vocab]`` (zeros where the model has none, as TransformerLens)."""
        head = self.module.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            return head.bias
        return torch.zeros(head.weight.shape[0], dtype=head.weight.dtype, device=head.weight.device)

    @property
    def W_E(self) -> Tensor:
        """Token embedding ``[d_vocab, d_model]``."""
        return self.module.get_input_embeddings().weight

    @property
    def W_pos(self) -> Tensor:
        """Learned position embedding ``[n_ctx, d_model]`` (models with absolute positions only)."""
        dec = self._tl_arch("W_pos")
        lay = dec.layout
        if not lay.pos_embed:
            raise AttributeError("W_pos: this model has no learned position embedding (rotary positions)")
        return cast(Tensor, dec.module(lay.pos_embed).weight)

    W_Q = property(lambda self: _stack(self._tl_arch("W_Q"), "W_Q"), doc="``[layer, head, d_model, d_head]``")
    W_K = property(lambda self: _stack(self._tl_arch("W_K"), "W_K"), doc="``[layer, kv, d_model, d_head]``")
    W_V = property(lambda self: _stack(self._tl_arch("W_V"), "W_V"), doc="``[layer, kv, d_model, d_head]``")
    W_O = property(lambda self: _stack(self._tl_arch("W_O"), "W_O"), doc="``[layer, head, d_head, d_model]``")
    b_Q = property(lambda self: _stack(self._tl_arch("b_Q"), "b_Q"), doc="``[layer, head, d_head]``")
    b_K = property(lambda self: _stack(self._tl_arch("b_K"), "b_K"), doc="``[layer, kv_head, d_head]``")
    b_V = property(lambda self: _stack(self._tl_arch("b_V"), "b_V"), doc="``[layer, kv_head, d_head]``")
    b_O = property(lambda self: _stack(self._tl_arch("b_O"), "b_O"), doc="``[layer, d_model]``")

    @property
    def OV(self) -> Any:
        """``W_V @ W_O`` per layer and head: a TransformerLens ``FactoredMatrix``
        ``[layer, head, d_model, d_model]``."""
        return _factored(_repeat_kv(self.W_V, self._tl_arch("OV").n_heads), self.W_O)

    @property
    def QK(self) -> Any:
        """``W_Q @ W_K^T`` per layer and head, a ``FactoredMatrix`` ``[layer, head, d_model, d_model]``."""
        w_k = _repeat_kv(self.W_K, self._tl_arch("QK").n_heads)
        return _factored(self.W_Q, w_k.transpose(-2, -1))

    # ------------------------------------------------------------------ views
    @property
    def blocks(self) -> TLBlocks:
        """``model.blocks[i].attn.hook_z`` and such: hook points and weights by TransformerLens name."""
        return TLBlocks(self, self._tl_arch("blocks").n_layers)

    @property
    def embed(self) -> TLView:
        return TLView(self, "embed", {"W_E": lambda: self.W_E})

    @property
    def unembed(self) -> TLView:
        return TLView(self, "unembed", {"W_U": lambda: self.W_U, "b_U": lambda: self.b_U})

    @property
    def pos_embed(self) -> TLView:
        return TLView(self, "pos_embed", {"W_pos": lambda: self.W_pos})

    @property
    def ln_final(self) -> TLView:
        return TLView(self, "ln_final")

    @property
    def hook_embed(self) -> Any:
        return self.hook_dict[self.hook_name_aliases["hook_embed"]]
