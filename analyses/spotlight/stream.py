"""SRM at a hook point of any hooked model, streamed over batches; the ``spotlight`` command.

:class:`SpotlightAccumulator` takes one batch of activations at a time (``add(activations,
labels)``) and keeps only counts: per plane and angle for the basis or bases (SRM), for their
null model (random orthonormal bases, counted on the same planes or on unordered ones), and per
basis direction (the grandmother cones); ``result()`` / ``results()`` give :class:`ModelSpotlight`
with the alignment verdict of :mod:`analyses.spotlight.alignment`. Activations of any shape count
every leading position as a sample ([batch, d], [batch, pos, d], per-step [batch, time, d], ...).
Callers that read the activations themselves feed it directly, e.g. one accumulator per member of
a batched model (``acc.add(a[:, k])``) from one pass of :func:`hooked.protocol.iter_activations`.

:func:`spotlight_model` is the loop over a model's batches: it runs the model through
``run_with_cache`` (via :func:`hooked.protocol.iter_activations`) and feeds the activations at
``hook`` to one accumulator; ``step`` picks one step of a per-step hook point. With
``null_bases`` > 0 the same activations are also counted in that many random rotations of the
basis, which gives the verdict.

``python -m hooked run spotlight --model M --hook H [--basis thomson:32 --epsilon 0.8 ...]``
writes ``spotlight.png`` (ensemble and mean +- std), ``srm.safetensors`` (counts per plane and
angle, planes, basis) and ``result.json`` into the run folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from analyses.spotlight.alignment import axis_harmonic, is_orthonormal, verdict
from analyses.spotlight.basis import random_orthonormal, resolve_basis
from analyses.spotlight.core import (
    DEFAULT_CHUNK,
    Method,
    PlaneKind,
    SpotlightCounter,
    SpotlightResult,
    Zeros,
    unit_basis,
)
from analyses.spotlight.grandmother import ConeCounter, GrandmotherResult
from hooked.protocol import Batch, Hookable, hook_point, iter_activations


@dataclass
class ModelSpotlight:
    """What :func:`spotlight_model` (a :class:`SpotlightAccumulator`) found at one hook, in one basis."""

    hook: str
    result: SpotlightResult
    basis: Tensor
    grandmother: GrandmotherResult
    null: list[SpotlightResult] = field(default_factory=list)
    alignment: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] = ()  # one batch's activation shape at the hook
    seconds: float = 0.0
    top: int = 5  # directions the summary lists
    min_count: int = 10  # samples a direction's cone needs to be ranked

    def summary(self, top: int | None = None, min_count: int | None = None) -> dict[str, Any]:
        top = self.top if top is None else top
        min_count = self.min_count if min_count is None else min_count
        return {
            "hook": self.hook,
            "activation_shape": list(self.shape),
            "srm": self.result.summary(),
            "alignment": self.alignment,
            "grandmother": self.grandmother.summary(top, min_count),
            "seconds": self.seconds,
        }

    def to_json(self) -> dict[str, Any]:
        return self.summary()

    def report(self) -> str:
        """A few lines for a person: settings, the verdict, the peaks, the most selective directions."""
        r = self.result
        lines = [
            f"spotlight resonance at {self.hook}: activations {list(self.shape)} -> "
            f"{r.n} samples of d={r.dim}" + (f" ({r.n_zero} zero vectors skipped)" if r.n_zero else ""),
            f"basis: {r.n_basis} directions, {r.planes.shape[0]} {r.plane_kind} planes"
            + (f" ({r.dropped_planes} degenerate dropped)" if r.dropped_planes else "")
            + f", epsilon={r.epsilon:g}, {r.angles.numel()} angles"
            + (", signed" if r.signed else ""),
        ]
        if not r.n:
            return "\n".join(lines + ["no non-zero activations: nothing counted"])
        mean = r.mean
        lines.append(
            f"SRM mean over planes: min {float(mean.min()):.4g}, max {float(mean.max()):.4g}, "
            f"isotropic reference {r.reference:.4g}"
        )
        a = self.alignment
        if "h4" in a:
            lines.append(
                f"axis harmonic h4={a['h4']:+.3g} (shape c4={a['c4']:+.3f}; "
                f"peak mod pi/2 at {a['phase']:+.3f} rad; "
                f"argmax {a['peak_angle']:.3f} rad, {a['peak_offset']:.3f} rad from the nearest axis)"
            )
        if a.get("verdict"):
            lines.append(
                f"verdict: {a['verdict'].upper()}  (z={a['z']:+.2f} against {a['n_null']} "
                "random rotations of the basis, "
                f"rank p={a['p_rank']:.3f})"
            )
        elif a.get("why_no_verdict"):
            lines.append(f"no verdict: {a['why_no_verdict']}")
        g = self.grandmother.summary(self.top, self.min_count)
        lines.append(
            f"cones of the {g['n_directions']} directions (+-b_k): {g['nonempty_directions']} non-empty; "
            f"most selective by {g['ranked_by']}:"
        )
        for d in g["most_selective"]:
            extra = (
                f"purity {d['purity']:.2f} (label {d['label']})"
                if "purity" in d
                else f"enrichment {d['enrichment']:.2f}x"
            )
            lines.append(
                f"  {d['direction']:>5}: {d['count']} samples ({100 * d['fraction']:.1f}%), {extra}, "
                f"top rows {d['top_rows'][:5]}"
            )
        return "\n".join(lines)


class SpotlightAccumulator:
    """SRM, cone membership and the alignment verdict of one stream of activations, fed batch by batch.

    The reusable part of :func:`spotlight_model`, for callers that read the activations
    themselves (one member of a batched model, ``acc.add(a[:, k])``; several accumulators fed
    from one pass over the data). ``add`` counts a batch of any shape [..., d] (every leading
    position is a sample); :meth:`result` / :meth:`results` give :class:`ModelSpotlight`. The
    counters are made at the first ``add``, when d and the device are known.

    Args:
        basis: [n_basis, d] rows or a spec (as :func:`~analyses.spotlight.basis.resolve_basis`;
            default the standard basis), or a dict of named bases of one shape: all are counted
            on the same planes and judged against one shared null model.
        null_bases: the null model of the verdict: a number M of random rotations of the (first)
            basis (seeds :func:`null_seed`), or the null bases themselves (a list of tensors of
            the basis' shape; e.g. Haar-random orthonormal bases shared by several accumulators).
        null_planes: plane kind of the null ("perm" or "comb"; default ``planes``). With a number
            of angles divisible by 4, h4 (so the verdict) is the same on both, and "comb" counts
            half the planes; a null on other planes than the basis is counted apart from it.
        n_labels: number of label values, for the cones' purity (default: from the first labels).
        top: samples kept per basis direction's cone (closest to its axis).
        hook: the hook name the results carry.
        Other arguments as :class:`analyses.spotlight.core.SpotlightCounter`.
    """

    def __init__(
        self,
        basis: Tensor | str | None | Mapping[str, Tensor | str] = None,
        *,
        epsilon: float = 0.9,
        n_angles: int = 100,
        planes: PlaneKind = "perm",
        max_planes: int | None = None,
        seed: int = 0,
        signed: bool = False,
        zeros: Zeros = "skip",
        null_bases: int | Sequence[Tensor] = 0,
        null_planes: PlaneKind | None = None,
        n_labels: int | None = None,
        top: int = 8,
        method: Method = "arcs",
        chunk: int = DEFAULT_CHUNK,
        hook: str = "activations",
    ):
        if isinstance(null_bases, int) and null_bases < 0:
            raise ValueError(f"null_bases must be >= 0, got {null_bases}")
        if isinstance(basis, Mapping):
            if not basis:
                raise ValueError("basis: an empty dict of bases")
            self._specs = dict(basis)
        else:
            self._specs = {_basis_name(basis): basis}
        self._null = null_bases if isinstance(null_bases, int) else list(null_bases)
        self._n_null = null_bases if isinstance(null_bases, int) else len(self._null)
        self._null_planes = planes if null_planes is None else null_planes
        self.n_labels = n_labels
        self.hook = hook
        self._counting = dict(
            epsilon=epsilon,
            n_angles=n_angles,
            max_planes=max_planes,
            seed=seed,
            signed=signed,
            zeros=zeros,
            method=method,
            chunk=chunk,
        )
        self._planes, self.epsilon, self.n_angles, self._seed = planes, epsilon, n_angles, seed
        self._top, self._zeros = top, zeros
        self.bases: dict[str, Tensor] = {}
        self.shape: tuple[int, ...] = ()  # the first batch's activation shape
        self.n_batches = 0
        self._counter: SpotlightCounter | None = None  # the bases (and the null, on the same planes)
        self._null_counter: SpotlightCounter | None = None  # the null, on other planes
        self._cones: dict[str, ConeCounter] = {}
        self._started = time.perf_counter()

    def _start(self, a: Tensor, labels: Tensor | None) -> None:
        self.shape = tuple(a.shape)
        d = a.shape[-1] if a.dim() else 0
        if d < 2:
            raise ValueError(
                f"hook {self.hook!r}: activations of shape {self.shape} have d={d} features; "
                "spotlight resonance needs d >= 2"
            )
        self.bases = {name: resolve_basis(spec, d, device=a.device) for name, spec in self._specs.items()}
        first = next(iter(self.bases.values()))
        if isinstance(self._null, int):
            # random rigid rotations of the basis, fixed by the seed and independent of the data
            unit_b = unit_basis(first, d, device=a.device)
            null = [
                unit_b @ random_orthonormal(d, seed=null_seed(self._seed, r), device=a.device).T
                for r in range(self._null)
            ]
        else:
            null = [b.to(a.device) for b in self._null]
        blocks = list(self.bases.values())
        if null and self._null_planes != self._planes:
            self._null_counter = SpotlightCounter(null, planes=self._null_planes, **self._counting)
        else:
            blocks += null  # counted in one pass with the bases
        self._counter = SpotlightCounter(blocks, planes=self._planes, **self._counting)
        if self.n_labels is None and labels is not None:
            self.n_labels = int(torch.as_tensor(labels).max()) + 1
        self._cones = {
            name: ConeCounter(
                b, epsilon=self.epsilon, top=self._top, n_labels=self.n_labels, zeros=self._zeros
            )
            for name, b in self.bases.items()
        }

    def add(self, activations: Tensor, labels: Tensor | None = None) -> SpotlightAccumulator:
        """Count one batch ([..., d]); ``labels`` (integers) match its leading axes, for the cones."""
        if self._counter is None:
            self._start(activations, labels)
        self._counter.add(activations)
        if self._null_counter is not None:
            self._null_counter.add(activations)
        for cones in self._cones.values():
            cones.add(activations, labels)
        self.n_batches += 1
        return self

    def results(self) -> dict[str, ModelSpotlight]:
        """One :class:`ModelSpotlight` per basis (by name), all judged against the same null results."""
        if self._counter is None:
            raise ValueError("SpotlightAccumulator: no activations were added")
        counted = self._counter.results()
        k = len(self.bases)
        found, null = counted[:k], counted[k:]
        if self._null_counter is not None:
            null = self._null_counter.results()
        seconds = time.perf_counter() - self._started
        return {
            name: ModelSpotlight(
                self.hook,
                res,
                self.bases[name],
                self._cones[name].result(),
                null,
                self._alignment(res, j, null),
                self.shape,
                seconds,
            )
            for j, (name, res) in enumerate(zip(self.bases, found))
        }

    def result(self) -> ModelSpotlight:
        """The :class:`ModelSpotlight` of the (first) basis."""
        return next(iter(self.results().values()))

    def _alignment(self, res: SpotlightResult, j: int, null: list[SpotlightResult]) -> dict[str, Any]:
        """The verdict against the null, or the axis harmonic alone with the reason why there is none."""
        if not (res.n and self.n_angles >= 8):
            return {}
        ortho = is_orthonormal(self._counter.basis_block(j))
        if len(null) >= 2 and ortho:
            return verdict(res, null)
        alignment = axis_harmonic(res)
        if self._n_null:
            alignment["verdict"] = None
            alignment["why_no_verdict"] = (
                "the basis is not orthonormal" if not ortho else "needs null_bases >= 2"
            )
        return alignment


def spotlight_model(
    model: Hookable,
    hook: str,
    batches: Iterable[Batch],
    *,
    basis: Tensor | str | None = None,
    epsilon: float = 0.9,
    n_angles: int = 100,
    planes: PlaneKind = "perm",
    max_planes: int | None = None,
    seed: int = 0,
    signed: bool = False,
    zeros: Zeros = "skip",
    step: int | None = None,
    null_bases: int = 0,
    labels: Iterable[Tensor] | None = None,
    top: int = 8,
    method: Method = "arcs",
    chunk: int = DEFAULT_CHUNK,
    device: torch.device | str | None = None,
    progress: bool | str = False,
) -> ModelSpotlight:
    """SRM, cone membership and (with ``null_bases``) the alignment verdict at ``hook``.

    One :class:`SpotlightAccumulator` fed with the activations at ``hook``, batch by batch.

    Args:
        batches: an iterable of batches (tensor, tuple of args or dict of kwargs), read once.
        basis: [n_basis, d] rows, or a spec ("standard", "random:SEED", "thomson:N", a
            .safetensors path); default the standard basis.
        step: for a per-step hook point, count only this step (default: every step).
        null_bases: also count in this many random rotations of the basis (for the verdict).
        labels: one integer label tensor per batch (its leading axes), for grandmother purity.
        top: samples kept per basis direction (closest to its axis).
        device: move activations there before counting (default: where the model put them).
        Other arguments as :class:`analyses.spotlight.core.SpotlightCounter`.
    """
    hp = hook_point(model, hook)
    acc = SpotlightAccumulator(
        basis,
        epsilon=epsilon,
        n_angles=n_angles,
        planes=planes,
        max_planes=max_planes,
        seed=seed,
        signed=signed,
        zeros=zeros,
        null_bases=null_bases,
        n_labels=_n_labels(labels),
        top=top,
        method=method,
        chunk=chunk,
        hook=hook,
    )
    label_iter = iter(labels) if labels is not None else None
    stream = iter_activations(model, batches, [hook], device=device, progress=progress, with_mask=True)
    for acts, mask in stream:
        a = acts[hook]
        if not isinstance(a, Tensor):
            raise TypeError(f"hook {hook!r} produced {type(a).__name__}, not a tensor")
        if step is not None:
            a = _select_step(hp, hook, a, step)
        lab = next(label_iter) if label_iter is not None else None
        if mask is not None and a.dim() >= 3 and tuple(a.shape[:2]) == tuple(mask.shape):
            real = mask.to(device=a.device, dtype=torch.bool)  # a padded batch: count real tokens only
            a = a[real]
            lab = (
                lab[real.to(lab.device)]
                if lab is not None and tuple(lab.shape[:2]) == tuple(mask.shape)
                else lab
            )
        acc.add(a, lab)
    if not acc.n_batches:
        raise ValueError("spotlight_model: no batches were given")
    return acc.result()


def null_seed(seed: int, r: int) -> int:
    """Seed of the r-th random rotation of the null model (fixed, independent of the data)."""
    return 10_000 + 1_000 * seed + r


def _n_labels(labels: Any) -> int | None:
    """Number of label values, from all label tensors if they are at hand (None: from the first batch's)."""
    if isinstance(labels, Tensor):
        return int(labels.max()) + 1
    if isinstance(labels, Sequence) and labels:
        return int(max(int(torch.as_tensor(t).max()) for t in labels)) + 1
    return None


def _basis_name(basis: Tensor | str | None) -> str:
    """The name a single basis goes by in :meth:`SpotlightAccumulator.results`."""
    if basis is None:
        return "standard"
    return basis if isinstance(basis, str) else "basis"


def _select_step(hp: Any, hook: str, a: Tensor, step: int) -> Tensor:
    if not getattr(hp, "recurrent", False):
        raise ValueError(f"step={step} given, but hook {hook!r} is not a per-step (recurrent) hook point")
    dim = getattr(hp, "time_dim", 1)
    steps = a.shape[dim]
    if not -steps <= step < steps:
        raise ValueError(f"step={step} is out of range: hook {hook!r} ran {steps} steps")
    return a.select(dim, step)


def split_data(data: Any, batch_size: int | None) -> list[Batch]:
    """The CLI's ``data`` (one batch or a list of batches) as a list, split into ``batch_size`` rows."""
    batches = list(data) if isinstance(data, list) else [data]
    if batch_size is None:
        return batches
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    for b in batches:
        if isinstance(b, Tensor):
            out.extend(b.split(batch_size))
        elif isinstance(b, tuple) and all(isinstance(t, Tensor) for t in b):
            out.extend(zip(*(t.split(batch_size) for t in b)))
        elif isinstance(b, dict) and all(isinstance(t, Tensor) for t in b.values()):
            parts = {k: v.split(batch_size) for k, v in b.items()}
            out.extend(dict(zip(parts, vals)) for vals in zip(*parts.values()))
        else:
            raise ValueError(
                "batch_size works on batches made of tensors only (a tensor, a tuple or a dict of tensors)"
            )
    return out


def spotlight_analysis(
    model: Hookable,
    hook: str,
    data: Any,
    *,
    basis: str = "standard",
    epsilon: float = 0.9,
    n_angles: int = 100,
    planes: Literal["perm", "comb"] = "perm",
    max_planes: int | None = None,
    seed: int = 0,
    signed: bool = False,
    step: int | None = None,
    zeros: Literal["skip", "error"] = "skip",
    null_bases: int = 16,
    top: int = 5,
    batch_size: int | None = None,
    run_dir: Any = None,
) -> ModelSpotlight:
    """Spotlight resonance: how activations at a hook align with a privileged basis.

    Args:
        basis: privileged basis: standard, random:SEED, thomson:N[:SEED] (N points on the sphere),
            or a .safetensors file with a tensor 'basis' [n, d].
        epsilon: cosine of the spotlight cone's half angle, in [-1, 1].
        n_angles: angles on [0, 2 pi).
        planes: perm (ordered pairs of basis vectors) or comb (unordered pairs).
        max_planes: count only a random subset of this many planes.
        seed: seed of the plane subset.
        signed: signed variant (+1 in the cone, -1 in the opposite cone).
        step: for a per-step hook point, use only this step (default all steps).
        zeros: zero activation vectors are skipped or raise an error.
        null_bases: random rotations of the basis to compare against (the alignment verdict; 0 = none).
        top: most selective basis directions to report.
        batch_size: split the model's data into batches of this many rows (streaming).
    """
    batches = split_data(data, batch_size)
    found = spotlight_model(
        model,
        hook,
        batches,
        basis=basis,
        epsilon=epsilon,
        n_angles=n_angles,
        planes=planes,
        max_planes=max_planes,
        seed=seed,
        signed=signed,
        zeros=zeros,
        step=step,
        null_bases=null_bases,
        top=max(top, 8),
        progress=len(batches) > 10,
    )
    found.top, found.min_count = top, 1
    if run_dir is not None:
        from analyses.spotlight.plots import spotlight_figure

        res = found.result
        if res.n:
            v = found.alignment.get("verdict")
            title = f"{hook}: d={res.dim}, {res.n} samples, basis {basis}" + (
                f", verdict {v} (z={found.alignment['z']:.1f})" if v else ""
            )
            run_dir.figure("spotlight.png", spotlight_figure(res, title))
        run_dir.tensors("srm.safetensors", res.tensors() | {"basis": found.basis.double()})
    return found


# a padded text batch (``hooked run --data``) is counted over its real tokens only
spotlight_analysis.masks_padding = True  # type: ignore[attr-defined]


def _report_figures(folder: Any) -> dict:
    from analyses.spotlight.views import report_figures

    return report_figures(folder)


spotlight_analysis.report_figures = _report_figures  # type: ignore[attr-defined]  # hooked.views.report
