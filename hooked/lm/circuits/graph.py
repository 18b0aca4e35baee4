"""The circuit graph of a transformers decoder on ``hooked.wrap`` or TransformerLens's bridge
(:class:`hooked.circuit_graph.Graph`).

Nodes and their hook points (``P`` the attention module of layer ``L`` on wrap, see
:mod:`hooked.lm.names.layouts` for the paths of each family; on the bridge TransformerLens's names,
in brackets):

* ``embed`` (sender): the residual stream entering layer 0 (``<layers>.0.hook_in``;
  ``blocks.0.hook_resid_pre``): token and, where the family has them, position embeddings, after
  any scaling;
* ``a{L}.h{H}`` (sender): head ``H``'s output written to the residual stream, ``hook_z[..., H, :]``
  (``P.hook_z``; ``blocks.L.attn.hook_z``) times that head's columns of the output projection (the
  projection's bias is no head's and is the same in every run); receivers ``a{L}.h{H}<q>``, and
  ``<k>`` / ``<v>`` on the key-value heads (``a{L}.kv{G}<k>``, node ``a{L}.kv{G}``, where
  grouped-query attention shares them): the per-head copies of the residual stream before the norm,
  ``P.hook_{q,k,v}_input[..., H, :]`` (:mod:`hooked.lm.backends.head_inputs`) on wrap,
  ``blocks.L.attn.hook_{q,k,v}_input`` on the bridge (TransformerLens's ``use_split_qkv_input``
  path, which the bridge backend switches on for the calls that hook them);
* ``m{L}``: the MLP; sender: its output (the layout's ``mlp_out`` module's ``hook_out``;
  ``blocks.L.hook_mlp_out``); receiver: its input before its norm (the ``ln2`` module's ``hook_in``;
  ``blocks.L.ln2.hook_in``);
* ``logits`` (receiver): the input of the final norm (``ln_final.hook_in``).

Full graph (heads with q/k/v inputs): Llama-style layouts (Llama, SmolLM2, Mistral, Qwen2/3,
Gemma, ...), GPT-2 and GPT-NeoX (parallel attention and MLP: no edges between the attention and the
MLP of one layer). Residual-level graph (each layer's attention as one node, ``a{L}``, read at its
norm's input, written at ``attn_out``): Gemma 2, whose norm after attention makes a head's output
not a sum of per-head terms, any layout whose projections per-head inputs do not understand, and
on the bridge any attention component that does not fork its per-head inputs before its norm.
Both backends give the same nodes, ranks and edges for the same model (tested).
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor, nn

from hooked.circuit_graph import Graph, Receiver, Sender, register_graph_provider
from hooked.lm.backends.backend import backend_of
from hooked.lm.names.hook_names import LMNames
from hooked.lm.names.layouts import Decoder


def lm_graph(model: Any) -> Graph | None:
    """The graph of ``model`` when it is ``hooked.wrap`` of a transformers decoder of a known layout,
    or TransformerLens's bridge of one (the same nodes and edges, TransformerLens's hook names)."""
    try:
        backend = backend_of(model)
    except TypeError:
        return None
    dec = backend.decoder
    if backend.kind not in ("wrap", "bridge") or dec is None:
        return None
    at = _Points(dec, bridge=backend.is_bridge)
    names = set(model.hook_dict)
    heads = (
        dec.layout.name != "gemma2"
        and all(
            at.head_input(L, k) in names and at.z(L) in names
            for L in range(dec.n_layers)
            for k in ("q", "k", "v")
        )
        and (not backend.is_bridge or _bridge_splits_heads(model))
    )
    n_kv = _kv_heads(model, dec, at) if heads else 0
    senders = [Sender("embed", at.embed, 0)]
    receivers: list[Receiver] = []
    for L in range(dec.n_layers):
        attn, mlp = 2 * L + 1, 2 * L + (1 if dec.parallel else 2)
        if heads:
            senders += _head_senders(dec, at, L, attn)
            receivers += _head_receivers(dec, at, L, attn, n_kv)
        else:
            senders.append(Sender(f"a{L}", at.attn_out(L), attn))
            receivers.append(Receiver(f"a{L}", at.attn_in(L), attn, f"a{L}"))
        senders.append(Sender(f"m{L}", at.mlp_out(L), mlp))
        receivers.append(Receiver(f"m{L}", at.mlp_in(L), mlp, f"m{L}"))
    receivers.append(Receiver("logits", at.final_in, 2 * dec.n_layers + 1, "logits"))
    note = "heads with query, key and value inputs" if heads else "residual level: attention layers as nodes"
    where = "TransformerLens bridge" if backend.is_bridge else "wrap"
    return Graph(tuple(senders), tuple(receivers), f"{dec.layout.name} ({where}): {note}")


class _Points:
    """The hook point of each node on one backend: module paths on wrap, TransformerLens names on
    the bridge (the same places). The residual stream, attention and MLP outputs and ``hook_z`` are
    :class:`~hooked.lm.names.hook_names.LMNames`'s; the inputs only one node reads (the per-head
    copies, each norm's input) are named here."""

    def __init__(self, dec: Decoder, *, bridge: bool):
        self.dec, self.bridge = dec, bridge
        self.names = LMNames.of(dec, bridge=bridge)
        self.embed = self.names.resid_pre(0)
        self.final_in = "ln_final.hook_in" if bridge else f"{dec.layout.final_norm}.hook_in"

    def _at(self, L: int, tl: str, part: str, hook: str) -> str:
        return f"blocks.{L}.{tl}" if self.bridge else f"{self.dec.path(L, part)}.{hook}"

    def z(self, L: int) -> str:
        return self.names.z(L)

    def attn_out(self, L: int) -> str:
        return self.names.attn_out(L)

    def mlp_out(self, L: int) -> str:
        return self.names.mlp_out(L)

    def head_input(self, L: int, kind: str) -> str:
        return self._at(L, f"attn.hook_{kind}_input", "attn", f"hook_{kind}_input")

    def attn_in(self, L: int) -> str:  # the first norm's input (only the attention reads it)
        return self._at(L, "ln1.hook_in", "ln1", "hook_in")

    def mlp_in(self, L: int) -> str:  # the MLP's norm's input (only the MLP reads it)
        return self._at(L, "ln2.hook_in", "ln2", "hook_in")


def _bridge_splits_heads(bridge: Any) -> bool:
    """Whether every attention component of a TransformerLens 4.3 bridge forks the residual stream
    *before* its norm for ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` (its
    ``use_split_qkv_input`` path: the layer's norm wired into the attention and applied per head;
    without it the copies would be the normed stream, which no sender writes to directly), and
    has no gated query projection (where TransformerLens refuses the split)."""
    if getattr(bridge.cfg, "gated_q_proj", False):
        return False
    for block in getattr(bridge, "blocks", ()):
        subs = getattr(block, "submodules", None) or {}
        ln1, attn = subs.get("ln1"), subs.get("attn")
        if not (
            ln1 is not None
            and getattr(ln1, "original_component", None) is not None
            and getattr(attn, "supports_split_qkv_fork", False)
        ):
            return False
    return bool(getattr(bridge, "blocks", ()))


def _kv_heads(model: Any, dec: Decoder, at: _Points) -> int:
    """Key-value heads per layer: the wrap point's own count, the bridge's config on the bridge."""
    if at.bridge:
        return int(getattr(model.cfg, "n_key_value_heads", None) or dec.n_heads)
    return model.hook_dict[at.head_input(0, "k")].units


def _head_senders(dec: Decoder, at: _Points, L: int, rank: int) -> list[Sender]:
    proj = dec.part(L, "o_proj")
    d_head = _output_columns(proj).shape[1] // dec.n_heads
    hook = at.z(L)
    return [
        Sender(f"a{L}.h{h}", hook, rank, (h,), _Project(proj, slice(h * d_head, (h + 1) * d_head)))
        for h in range(dec.n_heads)
    ]


def _head_receivers(dec: Decoder, at: _Points, L: int, rank: int, n_kv: int) -> list[Receiver]:
    out = [
        Receiver(f"a{L}.h{h}<q>", at.head_input(L, "q"), rank, f"a{L}.h{h}", (h,)) for h in range(dec.n_heads)
    ]
    for kind in ("k", "v"):
        for g in range(n_kv):
            node = f"a{L}.h{g}" if n_kv == dec.n_heads else f"a{L}.kv{g}"
            out.append(Receiver(f"{node}<{kind}>", at.head_input(L, kind), rank, node, (g,)))
    return out


class _Project:
    """``z_h -> z_h @ W_O[:, h].T`` with the weight read at call time (a model moved or retrained
    after the graph was made is projected with its current weight)."""

    def __init__(self, proj: nn.Module, columns: slice):
        self.proj = proj
        self.columns = columns

    def __call__(self, z: Tensor) -> Tensor:
        return z @ _output_columns(self.proj)[:, self.columns].t().to(z.dtype)


def _output_columns(proj: nn.Module) -> Tensor:
    """The output projection's weight as ``[d_model, heads * d_head]``."""
    if isinstance(proj, nn.Linear):
        return proj.weight
    if type(proj).__name__ == "Conv1D":  # GPT-2: weight is [in, out]
        return cast(Tensor, proj.weight).t()
    raise TypeError(f"circuit graph: {type(proj).__name__} is neither a Linear nor GPT-2's Conv1D")


register_graph_provider(lm_graph)
