"""The computational graph of a hooked model, as circuit discovery sees it, and the seam that makes one.

A :class:`Graph` lists *senders* (nodes that add something to a residual stream: the embeddings,
each attention head, each MLP) and *receivers* (the inputs that nodes read from it: each head's
query, key and value input, each MLP's input, the logits' input), both as hook points. An edge is a
(sender, receiver) pair with ``sender.rank < receiver.rank``: the receiver's input is the sum of
what every such sender wrote (plus terms that do not depend on the input, such as biases), which is
what lets :mod:`interventions.circuits` patch one edge by adding the difference of one sender's
output to one receiver's input, and score every edge from one backward pass.

How a node is read from its hook point: the activation ``act`` of ``hook`` is sliced as
``act[..., *index, :]`` (no slicing for ``index=()``), and a sender's slice is mapped into the
residual stream by ``project`` (``None``: it already is a residual-stream vector; for a head, its
rows of the output projection). Slices of a sender (after ``project``) and of a receiver have the
same shape, ``[batch, ..., d_model]``.

Where graphs come from (:func:`graph_of`): a model with a ``circuit_graph()`` method (a
:class:`~hooked.hooked_module.HookedModule` whose author declares its nodes) gives its own; else
each *provider* is asked in turn, ``provider(model) -> Graph | None``: those of the entry-point
group ``hooked.circuit_graphs`` of every installed package (loaded on first use) and those
registered in this process with :func:`register_graph_provider`. The core knows no provider by
name: the language-model layer declares its own (``lm = "hooked.lm.circuits.graph:lm_graph"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from hooked._plugins import Plugins

ENTRY_POINT_GROUP = "hooked.circuit_graphs"


@dataclass(frozen=True)
class Sender:
    """A node that writes to the residual stream: ``project(act(hook)[..., *index, :])``."""

    name: str
    hook: str
    rank: int
    index: tuple[int, ...] = ()
    project: Callable[[Tensor], Tensor] | None = field(default=None, compare=False, repr=False)

    def read(self, act: Tensor) -> Tensor:
        part = take(act, self.index)
        return part if self.project is None else self.project(part)


@dataclass(frozen=True)
class Receiver:
    """An input a node reads from the residual stream: ``act(hook)[..., *index, :]``, editable.

    ``node`` is the node it belongs to (a head has three receivers, ``q``, ``k`` and ``v``)."""

    name: str
    hook: str
    rank: int
    node: str
    index: tuple[int, ...] = ()


@dataclass(frozen=True)
class Graph:
    """Senders and receivers of a model; edges go from every sender to every receiver of higher rank.

    ``note`` says what the graph covers (for example that a family only gets residual-level nodes).
    """

    senders: tuple[Sender, ...]
    receivers: tuple[Receiver, ...]
    note: str = ""

    def __post_init__(self) -> None:
        for kind, items in (("sender", self.senders), ("receiver", self.receivers)):
            names = [x.name for x in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"circuit graph: {kind} names must be unique, repeated: {dup[:5]}")

    def edges(self) -> list[tuple[str, str]]:
        """Every edge as ``(sender name, receiver name)``, receivers in order, then senders."""
        return [(s.name, r.name) for r in self.receivers for s in self.senders if s.rank < r.rank]

    def sender(self, name: str) -> Sender:
        for s in self.senders:
            if s.name == name:
                return s
        raise KeyError(
            f"circuit graph has no sender {name!r}; senders: {_some(s.name for s in self.senders)}"
        )

    def receiver(self, name: str) -> Receiver:
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(
            f"circuit graph has no receiver {name!r}; receivers: {_some(r.name for r in self.receivers)}"
        )


def take(act: Tensor, index: tuple[int, ...]) -> Tensor:
    """``act[..., *index, :]``."""
    if not index:
        return act
    return act[(Ellipsis, *index, slice(None))]


GraphProvider = Callable[[Any], "Graph | None"]

_PROVIDERS: Plugins[GraphProvider] = Plugins(ENTRY_POINT_GROUP, "circuit graph provider", "provider(model)")


def register_graph_provider(provider: GraphProvider) -> GraphProvider:
    """Add ``provider`` to those :func:`graph_of` asks (once; usable as a decorator)."""
    return _PROVIDERS.register(provider)


def graph_of(model: Any) -> Graph:
    """The circuit graph of ``model``: its own ``circuit_graph()``, else the first provider's."""
    own = getattr(model, "circuit_graph", None)
    if callable(own):
        graph = own()
        if not isinstance(graph, Graph):
            raise TypeError(
                f"{type(model).__name__}.circuit_graph() returned {type(graph).__name__}, expected a Graph"
            )
        return graph
    for provider in _PROVIDERS.all():
        graph = provider(model)
        if graph is not None:
            return graph
    raise ValueError(
        f"no circuit graph for {type(model).__name__}: give it a circuit_graph() method returning "
        "hooked.circuit_graph.Graph, register a provider with register_graph_provider, or pass graph="
    )


def _some(names: Any, n: int = 8) -> str:
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > n else ""
    return ", ".join(names[:n]) + more
