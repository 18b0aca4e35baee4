"""Encoders of RNN weights (Herrmann, Faccio & Schmidhuber 2024; ``docs/methods/weight-space.md``),
each a hooked model.

Mechanistic encoders read the weights: :class:`FlatEncoder`, :class:`StatsEncoder`,
:class:`TransformerEncoder`, :class:`DWSEncoder` (permutation-equivariant layers for LSTMs).
Functionalist encoders run the network: :class:`ProbingEncoder` (non-interactive or
interactive). All map ``{ZooLSTM key: [M, ...]}`` to [M, 16] unit vectors read at ``hook_embed``
and train with the emulation objective (:func:`train_emulation`).

:func:`build_encoder` makes one by name at the paper's sizes (``size="paper"``) or at the small
sizes the CPU reproduction uses (``size="small"``). Each is registered as a model
(``hooked hooks ws-dws`` lists its hook points on a random zoo batch).
"""

from __future__ import annotations

import torch

from papers.weight_space.encoders.base import HookedMLP, WeightEncoder
from papers.weight_space.encoders.dws import DWSEncoder, DWSLayer, tensor_specs
from papers.weight_space.encoders.emulation import (
    EmulationRun,
    Emulator,
    embed_zoo,
    emulation_error,
    total_variation,
    train_emulation,
)
from papers.weight_space.encoders.mechanistic import (
    FlatEncoder,
    StatsEncoder,
    TransformerEncoder,
    layer_statistics,
)
from papers.weight_space.encoders.probing import ProbingEncoder
from papers.weight_space.zoo.lstm import LSTMLayout, init_params

ENCODERS = ("flat", "stats", "transformer", "dws", "noninteractive", "interactive")
MECHANISTIC = ("flat", "stats", "transformer", "dws")
FUNCTIONALIST = ("noninteractive", "interactive")

# Sizes per encoder: the paper's (and its authors' configs; ``docs/methods/weight-space.md``) and the CPU
# defaults.
SIZES = {
    "paper": {
        "flat": dict(hidden=(128, 128, 128)),
        "stats": dict(hidden=(768, 768, 768)),
        "transformer": dict(d_model=128, n_layers=6, heads=2),
        "dws": dict(channels=(48, 48, 48, 48), hidden=(128,)),
        "probing": dict(core=256, core_layers=2, hidden=128, probes=1),
        "emulator": dict(emulator_hidden=256, emulator_layers=2),
    },
    "small": {
        "flat": dict(hidden=(128, 128, 128)),
        "stats": dict(hidden=(256, 256, 256)),
        "transformer": dict(d_model=64, n_layers=2, heads=2),
        "dws": dict(channels=(32, 32, 32), hidden=(128,)),
        "probing": dict(core=64, core_layers=2, hidden=64, probes=1),
        "emulator": dict(emulator_hidden=64, emulator_layers=2),
    },
}


def build_encoder(
    name: str,
    layout: LSTMLayout,
    *,
    size: str = "small",
    probe_steps: int = 22,
    probe_input: str = "softmax",
    probe_range: tuple[float, float] = (0.0, 1.0),
    embed_dim: int = 16,
    **overrides,
) -> WeightEncoder:
    """An encoder by name (one of :data:`ENCODERS`) at ``size`` "small" or "paper"."""
    if size not in SIZES:
        raise ValueError(f"build_encoder: size must be one of {list(SIZES)}, got {size!r}")
    if name not in ENCODERS:
        raise ValueError(f"build_encoder: unknown encoder {name!r}; choose from {ENCODERS}")
    sizes = SIZES[size]
    if name in FUNCTIONALIST:
        kw = dict(
            sizes["probing"],
            interactive=name == "interactive",
            probe_steps=probe_steps,
            probe_input=probe_input,
            probe_range=probe_range,
        )
        return ProbingEncoder(layout, embed_dim=embed_dim, **{**kw, **overrides})
    cls = {"flat": FlatEncoder, "stats": StatsEncoder, "transformer": TransformerEncoder, "dws": DWSEncoder}[
        name
    ]
    return cls(layout, embed_dim=embed_dim, **{**sizes[name], **overrides})


def _example(name: str):
    """The registered model ``ws-NAME``: encoder ``name`` (untrained) and a batch of random members."""

    def example(*, size: str = "small", members: int = 4, seed: int = 0):
        from hooked.checks import positive
        from hooked.errors import OptionError

        positive(members=members)
        if size not in SIZES:
            raise OptionError("size", f"must be one of {', '.join(SIZES)}, got {size!r}")
        layout = LSTMLayout(6, 6, 32, 2)
        enc = build_encoder(name, layout, size=size)
        return enc, (init_params(members, layout, torch.Generator().manual_seed(seed)),)

    summary = f"The {name} encoder of RNN weights (untrained), on random formal-language zoo members."
    example.__doc__ = f"""{summary}

    Args:
        size: "small" (CPU defaults) or "paper" (the paper's sizes, docs/methods/weight-space.md).
        members: zoo members in the example batch.
        seed: seed of the example parameters.
    """
    example.__name__ = example.__qualname__ = f"ws_{name}"
    return example


# one registered model per encoder (entry points ``ws-flat`` ... in pyproject.toml)
ws_flat, ws_stats, ws_transformer, ws_dws, ws_noninteractive, ws_interactive = (_example(n) for n in ENCODERS)

__all__ = [
    "DWSEncoder",
    "DWSLayer",
    "ENCODERS",
    "EmulationRun",
    "Emulator",
    "FUNCTIONALIST",
    "FlatEncoder",
    "HookedMLP",
    "MECHANISTIC",
    "ProbingEncoder",
    "SIZES",
    "StatsEncoder",
    "TransformerEncoder",
    "WeightEncoder",
    "build_encoder",
    "embed_zoo",
    "emulation_error",
    "layer_statistics",
    "tensor_specs",
    "total_variation",
    "train_emulation",
]
