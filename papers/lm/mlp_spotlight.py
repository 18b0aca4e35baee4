"""Spotlight resonance on a language model: MLP neurons (a privileged basis) vs the residual stream.

The MLP hidden activations of a Llama-style block, ``act(gate(x)) * up(x)``, are computed neuron by
neuron, so the standard basis is privileged there; the residual stream is only ever read and
written through dense matrices, so no basis is privileged by the architecture (RMSNorm's
per-dimension gain and the optimiser can still single some out). :func:`side_by_side` runs the
same spotlight analysis, :func:`analyses.spotlight.spotlight_model`, on both at chosen layers,
streaming the model over a text set through the hook protocol (any backend), with the verdict
against random rotations of the basis (:mod:`analyses.spotlight.alignment`).

Resolution. In d = 576 or 1536 dimensions a unit activation has, typically, an in-plane norm
of about ``sqrt(2 / d)`` in the plane of two basis vectors (0.04-0.06): cones of the paper's size
(epsilon 0.8-0.9) hold only activations concentrated on one or two coordinates, and in a random
rotation of the basis they hold nothing at all, so the null has zero variance and z is infinite
as soon as one sample is counted. Two resolutions are therefore reported side by side:

* ``epsilon`` (default 0.9): the paper's cones; what falls in them are grandmother-like tokens
  (one neuron, or one residual dimension, carries >= 81% of the squared norm);
* ``scale * sqrt(2 / d)`` (default scale 2, "dimension-scaled"): the cone's edge at twice the
  typical in-plane norm of an isotropic vector, so that random rotations also count samples and
  z is finite. Its half angle is far above pi/4, so the verdict says only whether the basis is
  preferred over random rotations ("basis-locked") or not ("isotropic"), not its sign.

* :func:`mlp_hidden_hooks`: the MLP hidden activations' hook names on the bridge or ``hooked.wrap``.
* :func:`side_by_side`, :class:`SideBySide` (rows of numbers, the SRM results, the tokens in the
  fullest cones), :func:`plot_side_by_side`.

It sits with the language-model reproduction (``hooked repro lm``'s ``spotlight`` stage) because it
reads the residual stream through :mod:`hooked.lm` (formerly ``analyses/lm_spotlight.py``; the
model-agnostic analysis is :mod:`analyses.spotlight`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from analyses.spotlight import SpotlightResult, spotlight_model
from hooked.protocol import Hookable, hook_names

DOWN_PROJECTIONS = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out", "w2")


def mlp_hidden_hooks(model: Any) -> list[str]:
    """The MLP hidden activations (the neurons, after the nonlinearity and gating) of every layer.

    ``blocks.{i}.mlp.hook_post`` on TransformerLens's bridge; on ``hooked.wrap`` (with inputs) the
    input of each layer's down projection, ``<layers>.{i}.mlp.down_proj.hook_in`` (also ``c_proj``,
    ``fc2``, ``dense_4h_to_h``, ``fc_out``, ``w2``).
    """
    names = hook_names(model)  # each hook point once, by its own name (wrap: module paths)
    if "blocks.0.mlp.hook_post" in names:
        n = 1 + max(
            int(m.group(1)) for k in names if (m := re.fullmatch(r"blocks\.(\d+)\.mlp\.hook_post", k))
        )
        return [f"blocks.{i}.mlp.hook_post" for i in range(n)]
    pattern = re.compile(
        r"(.+)\.(\d+)\.(mlp|feed_forward|ffn)\.(" + "|".join(DOWN_PROJECTIONS) + r")\.hook_in"
    )
    found: dict[tuple[str, str, str], dict[int, str]] = {}
    for k in names:
        m = pattern.fullmatch(k)
        if m:
            found.setdefault((m.group(1), m.group(3), m.group(4)), {})[int(m.group(2))] = k
    found = {key: v for key, v in found.items() if set(v) == set(range(len(v)))}
    if not found:
        raise ValueError(
            f"cannot find the MLP hidden activations of {type(model).__name__}: expected TransformerLens "
            "names (blocks.N.mlp.hook_post) or layers wrapped with inputs (hooked.wrap(m, inputs=True)) "
            f"whose MLP has a down projection named one of {', '.join(DOWN_PROJECTIONS)}"
        )
    layers = max(found.values(), key=len)
    return [layers[i] for i in range(len(layers))]


def scaled_epsilon(d: int, scale: float = 2.0) -> float:
    """``scale * sqrt(2 / d)``: ``scale`` times the typical in-plane norm of an isotropic unit vector."""
    return min(1.0, scale * math.sqrt(2.0 / d))


@dataclass
class SideBySide:
    """Spotlight resonance of MLP neurons and the residual stream at a few layers."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # one per (layer, kind, resolution)
    results: dict[tuple[int, str, str], SpotlightResult] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.info, "rows": self.rows}


def side_by_side(
    model: Hookable,
    tokens: Tensor,
    layers: Sequence[int],
    *,
    epsilon: float = 0.9,
    scale: float = 2.0,
    max_planes: int = 2000,
    null_bases: int = 8,
    n_angles: int = 100,
    batch_size: int = 32,
    top_directions: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> SideBySide:
    """SRM and the alignment verdict of the MLP hidden activations and of the residual stream
    (after the same block) at each of ``layers``, at two resolutions (see the module's docstring).

    Args:
        tokens: [n, pos] token rows; every position of every row is a sample.
        layers: block indices.
        epsilon: the paper-scale cone (cosine of its half angle).
        scale: the dimension-scaled cone is ``scale * sqrt(2 / d)``.
        max_planes: random (ordered) planes of basis vectors to count (out of d (d - 1)).
        null_bases: random rotations of the basis for the verdict.
        top_directions: for the fullest cones, the tokens closest to their axis are listed.
    """
    from hooked.lm import residual_hooks

    mlp, resid = mlp_hidden_hooks(model), residual_hooks(model)
    bad = [l for l in layers if not 0 <= l < len(mlp)]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {len(mlp)} layers")
    batches = tokens.split(batch_size)
    out = SideBySide(
        info={
            "n_texts": int(tokens.shape[0]),
            "tokens_per_text": int(tokens.shape[1]),
            "samples": int(tokens.numel()),
            "epsilon": epsilon,
            "scale": scale,
            "max_planes": max_planes,
            "null_bases": null_bases,
            "n_angles": n_angles,
            "layers": list(layers),
        }
    )
    tokenizer = getattr(model, "tokenizer", None)
    for layer in layers:
        for kind, hook in (("mlp", mlp[layer]), ("resid", resid[layer + 1])):
            d = 0
            for resolution in ("paper", "scaled"):  # the paper's cone first: it tells d
                eps = epsilon if resolution == "paper" else scaled_epsilon(d, scale)
                started = time.perf_counter()
                found = spotlight_model(
                    model,
                    hook,
                    batches,
                    epsilon=eps,
                    max_planes=max_planes,
                    null_bases=null_bases,
                    n_angles=n_angles,
                    seed=seed,
                    progress=f"SRM {kind} {layer} eps={eps:.3g}" if progress else False,
                )
                d = found.result.dim
                out.results[(layer, kind, resolution)] = found.result
                out.rows.append(
                    _row(layer, kind, hook, resolution, found, tokens, tokenizer, top_directions)
                    | {"seconds": time.perf_counter() - started}
                )
    return out


def _row(
    layer: int, kind: str, hook: str, resolution: str, found: Any, tokens: Tensor, tokenizer: Any, top: int
) -> dict[str, Any]:
    r, a, g = found.result, found.alignment, found.grandmother
    in_cone = int(g.counts.sum())
    row: dict[str, Any] = {
        "layer": layer,
        "kind": kind,
        "hook": hook,
        "resolution": resolution,
        "d": r.dim,
        "epsilon": r.epsilon,
        "n": r.n,
        "planes": int(r.planes.shape[0]),
        "verdict": a.get("verdict"),
        "z": a.get("z"),
        "h4": a.get("h4"),
        "null_mean": a.get("null_mean"),
        "null_std": a.get("null_std"),
        # no random rotation of the basis put a single sample in a cone: z is +-inf or 0, the verdict
        # rests on the raw counts
        "null_empty": bool(found.null) and all(int(n.counts.abs().sum()) == 0 for n in found.null),
        "srm_mean_max": float(r.mean.max()) if r.n else None,
        "isotropic_reference": r.reference,
        "planes_with_counts": int((r.counts.abs().sum(1) > 0).sum()),
        # summed over the 2d cones: a sample can be in several when epsilon < 0.707
        "axis_cone_hits": in_cone,
        "nonempty_directions": int((g.counts > 0).sum()),
    }
    order = torch.argsort(g.counts, descending=True)[:top]
    fullest = []
    for k in order.tolist():
        if int(g.counts[k]) == 0:
            break
        rows = [i for i in g.top_rows[k].tolist() if i >= 0]
        fullest.append(
            {
                "direction": g.names[k],
                "count": int(g.counts[k]),
                "tokens": _tokens_at(tokens, rows, tokenizer),
            }
        )
    row["fullest_cones"] = fullest
    return row


def _tokens_at(tokens: Tensor, rows: list[int], tokenizer: Any) -> list[str]:
    """The sample rows of a streamed [n, pos] token set as ``text#position:token``."""
    pos = tokens.shape[1]
    out = []
    for i in rows:
        t, p = divmod(i, pos)
        tok = int(tokens[t, p])
        piece = tokenizer.decode([tok]) if tokenizer is not None else str(tok)
        out.append(f"{t}#{p}:{piece!r}")
    return out


def plot_side_by_side(result: SideBySide, title: str = "") -> Any:
    """Mean +- std SRM over planes: a row per layer; MLP and residual at both resolutions side by side."""
    from analyses.spotlight.plots import spotlight_grid

    grid: dict[str, dict[str, SpotlightResult]] = {}
    notes: dict[str, dict[str, str]] = {}
    by_key = {(r["layer"], r["kind"], r["resolution"]): r for r in result.rows}
    for (layer, kind, resolution), res in result.results.items():
        row = by_key[(layer, kind, resolution)]
        col = f"{'MLP neurons' if kind == 'mlp' else 'residual'} ({resolution}, d={row['d']})"
        name = f"layer {layer}"
        grid.setdefault(name, {})[col] = res
        z = row["z"]
        z_text = (
            "" if z is None else (f" z={z:+.1f}" if math.isfinite(z) else f" z={'+' if z > 0 else '-'}inf")
        )
        empty = " (null empty)" if row["null_empty"] else ""
        notes.setdefault(name, {})[col] = (
            f"ε={row['epsilon']:.3g}: {row['verdict']}{z_text}{empty}, {row['axis_cone_hits']} axis-cone hits"
        )
    return spotlight_grid(grid, notes, title or "spotlight resonance: MLP neurons vs residual stream")
