"""The circuit graph of a wrapped transformers decoder (:class:`hooked.circuit_graph.Graph`).

Nodes and their hook points (``P`` the attention module of layer ``L``, see
:mod:`hooked.lm.names.layouts` for the paths of each family):

* ``embed`` (sender): the residual stream entering layer 0 (``<layers>.0.hook_in``: token and,
  where the family has them, position embeddings, after any scaling);
* ``a{L}.h{H}`` (sender): head ``H``'s output written to the residual stream, ``P.hook_z[..., H, :]``
  times that head's columns of the output projection (the projection's bias is no head's and is
  the same in every run); receivers ``a{L}.h{H}<q>``, and ``<k>`` / ``<v>`` on the key-value
  heads (``a{L}.kv{G}<k>``, node ``a{L}.kv{G}``, where grouped-query attention shares them),
  ``P.hook_{q,k,v}_input[..., H, :]`` (:mod:`hooked.lm.backends.head_inputs`);
* ``m{L}``: the MLP; sender: its output (the layout's ``mlp_out`` module's ``hook_out``); receiver:
  its input before its norm (the ``ln2`` module's ``hook_in``);
* ``logits`` (receiver): the input of the final norm.

Full graph (heads with q/k/v inputs): Llama-style layouts (Llama, SmolLM2, Mistral, Qwen2/3,
Gemma, ...), GPT-2 and GPT-NeoX (parallel attention and MLP: no edges between the attention and the
MLP of one layer). Residual-level graph (each layer's attention as one node, ``a{L}``, read at its
norm's input, written at ``attn_out``): Gemma 2, whose norm after attention makes a head's output
not a sum of per-head terms, and any layout whose projections per-head inputs do not understand.
TransformerLens's bridge gets no graph yet (``None``: a clear error from ``graph_of``).
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor, nn

from hooked.circuit_graph import Graph, Receiver, Sender, register_graph_provider
from hooked.lm.backends.backend import backend_of
from hooked.lm.names.layouts import Decoder


def lm_graph(model: Any) -> Graph | None:
    """The graph of ``model`` when it is ``hooked.wrap`` of a transformers decoder of a known layout."""
    try:
        backend = backend_of(model)
    except TypeError:
        return None
    dec = backend.decoder
    if backend.kind != "wrap" or dec is None:
        return None
    names = set(model.hook_dict)
    heads = dec.layout.name != "gemma2" and all(
        f"{dec.path(L, 'attn')}.hook_{k}_input" in names and f"{dec.path(L, 'attn')}.hook_z" in names
        for L in range(dec.n_layers)
        for k in ("q", "k", "v")
    )
    senders = [Sender("embed", f"{dec.layout.layers}.0.hook_in", 0)]
    receivers: list[Receiver] = []
    for L in range(dec.n_layers):
        attn, mlp = 2 * L + 1, 2 * L + (1 if dec.parallel else 2)
        if heads:
            senders += _head_senders(model, dec, L, attn)
            receivers += _head_receivers(model, dec, L, attn)
        else:
            senders.append(Sender(f"a{L}", f"{dec.path(L, 'attn_out')}.hook_out", attn))
            receivers.append(Receiver(f"a{L}", f"{dec.path(L, 'ln1')}.hook_in", attn, f"a{L}"))
        senders.append(Sender(f"m{L}", f"{dec.path(L, 'mlp_out')}.hook_out", mlp))
        receivers.append(Receiver(f"m{L}", f"{dec.path(L, 'ln2')}.hook_in", mlp, f"m{L}"))
    receivers.append(Receiver("logits", f"{dec.layout.final_norm}.hook_in", 2 * dec.n_layers + 1, "logits"))
    note = "heads with query, key and value inputs" if heads else "residual level: attention layers as nodes"
    return Graph(tuple(senders), tuple(receivers), f"{dec.layout.name}: {note}")


def _head_senders(model: Any, dec: Decoder, L: int, rank: int) -> list[Sender]:
    proj = dec.part(L, "o_proj")
    d_head = _output_columns(proj).shape[1] // dec.n_heads
    hook = f"{dec.path(L, 'attn')}.hook_z"
    return [
        Sender(f"a{L}.h{h}", hook, rank, (h,), _Project(proj, slice(h * d_head, (h + 1) * d_head)))
        for h in range(dec.n_heads)
    ]


def _head_receivers(model: Any, dec: Decoder, L: int, rank: int) -> list[Receiver]:
    path = dec.path(L, "attn")
    n_kv = _units(model, f"{path}.hook_k_input")
    out = [
        Receiver(f"a{L}.h{h}<q>", f"{path}.hook_q_input", rank, f"a{L}.h{h}", (h,))
        for h in range(dec.n_heads)
    ]
    for kind in ("k", "v"):
        for g in range(n_kv):
            node = f"a{L}.h{g}" if n_kv == dec.n_heads else f"a{L}.kv{g}"
            out.append(Receiver(f"{node}<{kind}>", f"{path}.hook_{kind}_input", rank, node, (g,)))
    return out


def _units(model: Any, name: str) -> int:
    return model.hook_dict[name].units


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
