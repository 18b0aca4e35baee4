"""Starting a causal language model's forward at a later layer, on the base run's residual stream.

A patch at a hook point inside decoder layer ``l`` changes nothing that layers ``0 .. l-1``
compute, so a patched run can skip them: their output is the base run's. The stack of decoder
layers is the one :func:`hooked.lm.names.layouts.decoder_layers` finds; :func:`layer_of` says in
which layer a hook point of ``hooked.wrap`` (``model.layers.3.mlp.hook_out``) or of the bridge
(``blocks.3.hook_resid_pre``) fires, :func:`layer_outputs` records every layer's output in one
forward, and :func:`skipping` runs a forward in which layers ``0 .. n-1`` are stand-ins that
hand the recorded output of layer ``n-1`` to layer ``n``.

The stand-ins take the layers' places in their ``nn.ModuleList`` for the ``with`` block only, so
the model's own loop (its masks, positions and per-layer settings, which it indexes by layer) runs
unchanged; the skipped layers add nothing to a key-value cache.

:func:`ragged` goes further for a batch whose rows start at different layers (patches at several
layers in one forward): each layer from the earliest one on runs only the rows that have started
by then, a prefix of the batch that grows with the layer index (the rows joining at layer ``l``
enter with the base run's output of layer ``l-1``), so a row patched at layer ``l`` costs the
layers ``l ..`` only. The layer's other batched arguments (attention mask, rotary position
embeddings, position ids: every tensor argument of two or more axes whose first axis is the
batch) are cut to those rows, and its key-value cache must hold as many rows
(:func:`hooked.lm.backends.forward.prefix_cache`'s ``layer_rows``). The last layer runs every row.
Used by :mod:`hooked.lm.sweeps.prefix_reuse`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn


def layer_of(hook: str, path: str) -> int:
    """The decoder layer in which hook point ``hook`` fires: ``i`` for names under ``<path>.i.``
    (``hooked.wrap``) or ``blocks.i.`` (the bridge); 0 (no layer skipped) for any other name."""
    m = re.match(rf"(?:blocks|{re.escape(path)})\.(\d+)\.", hook)
    return int(m.group(1)) if m else 0


@contextlib.contextmanager
def layer_outputs(layers: nn.ModuleList) -> Iterator[dict[str, Any]]:
    """Record, during the ``with`` block, each layer's output tensor (``outputs[i]``) and how the
    layers return it (``tuple_len``: ``None`` for a bare tensor, else the tuple's length)."""
    record: dict[str, Any] = {"outputs": {}, "tuple_len": None}

    def keep(i: int):
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, (tuple, list)):
                record["tuple_len"] = len(out)
                out = out[0]
            record["outputs"][i] = out.detach()

        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def skipping(layers: nn.ModuleList, n: int, given: Tensor, tuple_len: int | None = None) -> Iterator[None]:
    """Run layers ``0 .. n-1`` as stand-ins during the ``with`` block: they pass their input on,
    the last one returns ``given`` (the input of layer ``n``, ``[batch, positions, d_model]`` of the
    rows and positions the forward computes). ``n == 0`` changes nothing."""
    if not 0 <= n <= len(layers):
        raise ValueError(f"skipping: n={n}, expected 0..{len(layers)}")
    keys = list(layers._modules)[:n]
    saved = [layers._modules[k] for k in keys]
    try:
        for i, k in enumerate(keys):
            layers._modules[k] = _Skipped(given if i == n - 1 else None, tuple_len)
        yield
    finally:
        for k, module in zip(keys, saved, strict=True):
            layers._modules[k] = module


class _Skipped(nn.Module):
    """A decoder layer's stand-in: returns ``given`` (or its input), shaped as the layer's output."""

    def __init__(self, given: Tensor | None, tuple_len: int | None):
        super().__init__()
        self.given, self.tuple_len = given, tuple_len

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.given is not None:
            if self.given.shape != hidden.shape:
                raise ValueError(
                    f"skipping: the given residual stream is {tuple(self.given.shape)}, "
                    f"the forward's is {tuple(hidden.shape)}"
                )
            hidden = self.given.to(hidden.device, hidden.dtype)
        return hidden if self.tuple_len is None else (hidden,) + (None,) * (self.tuple_len - 1)


@contextlib.contextmanager
def ragged(
    layers: nn.ModuleList,
    first: int,
    active: Sequence[int],
    joining: Sequence[Tensor | None],
    batch: int,
) -> Iterator[None]:
    """Run a forward of ``batch`` rows in which layer ``l`` (``first <= l``) computes only the
    first ``active[l - first]`` rows, during the ``with`` block.

    Layers ``0 .. first-1`` pass their input on untouched (their output is not used). Layer
    ``first`` runs on ``joining[0]`` (its input for its active rows, the base run's output of layer
    ``first - 1``) or, where ``first == 0``, on the first rows of the embedding's output; a later
    layer ``l`` runs on the rows the layer before it computed, then ``joining[l - first]`` (``None``:
    no row joins there). ``active`` never decreases, and the last layer computes all ``batch`` rows.
    """
    n = len(layers)
    if not 0 <= first < n or len(active) != n - first or len(joining) != n - first:
        raise ValueError(f"ragged: first={first}, {len(active)} row counts for {n} layers")
    if list(active) != sorted(active) or active[-1] != batch:
        raise ValueError(
            f"ragged: row counts {list(active)} must grow to the batch ({batch}) at the last layer"
        )
    keys = list(layers._modules)
    saved = {k: layers._modules[k] for k in keys}
    try:
        for k in keys[:first]:
            layers._modules[k] = _Skipped(None, None)
        for i, k in enumerate(keys[first:]):
            kept = active[i - 1] if i else (active[0] if first == 0 else 0)
            layers._modules[k] = _Ragged(saved[k], kept, joining[i], active[i], batch)
        yield
    finally:
        for k, module in saved.items():
            layers._modules[k] = module


class _Ragged(nn.Module):
    """A decoder layer run on the first ``rows`` rows of a ``batch``-row forward: ``kept`` rows of
    its input, then ``join`` (rows that start here), its other batched arguments cut to match."""

    def __init__(self, layer: nn.Module, kept: int, join: Tensor | None, rows: int, batch: int):
        super().__init__()
        self.layer, self.kept, self.join, self.rows, self.batch = layer, kept, join, rows, batch

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:  # a model's loop reading a layer's setting (its attention type)
            return getattr(super().__getattr__("layer"), name)

    def cut(self, x: Any) -> Any:
        if isinstance(x, Tensor) and x.dim() >= 2 and x.shape[0] == self.batch:
            return x[: self.rows]
        if isinstance(x, tuple) and any(isinstance(t, Tensor) for t in x):
            return tuple(self.cut(t) for t in x)
        return x

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        hidden = hidden[: self.kept]
        if self.join is not None:
            hidden = torch.cat([hidden, self.join.to(hidden.device, hidden.dtype)])
        if hidden.shape[0] != self.rows:
            raise ValueError(f"ragged: a layer got {hidden.shape[0]} rows, expected {self.rows}")
        rest = tuple(self.cut(a) for a in args[1:])
        kwargs = {k: self.cut(v) for k, v in kwargs.items()}
        return self.layer(hidden, *rest, **kwargs)


def head_share(hf: nn.Module, layers: nn.ModuleList) -> float:
    """How many decoder layers' worth of work the output head does per token (its weights against a
    layer's): about 8 on SmolLM2-135M (a 49k-token vocabulary), under 1 on large models."""
    get_head = getattr(hf, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    per_layer = sum(p.numel() for p in layers[0].parameters()) or 1
    return float(head.weight.numel() / per_layer) if isinstance(head, nn.Linear) else 1.0
