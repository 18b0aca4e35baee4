"""The Spotlight Resonance Method (SRM) on activation tensors: planes, counts, the isotropic reference.

For activations ``A`` ([n, d], or any shape [..., d]) and a privileged basis (rows ``b_k``), each
*plane* is a pair ``(i, j)`` of basis vectors, orthonormalised to ``(u, v)``. A spotlight of half
angle ``arccos(epsilon)`` rotates in the plane, ``s(theta) = cos(theta) u - sin(theta) v`` (the
generator ``G = u v^T - v u^T`` applied to ``b_i``, ``docs/methods/spotlight.md``), and

    SRM(theta) = (1/n) sum_a 1[a_hat . s(theta) >= epsilon]

counts the unit activations inside the cone; the signed variant subtracts those with
``a_hat . s(theta) <= -epsilon``. Angles are ``theta_k = 2 pi k / R`` for ``k = 0 .. R-1``.

How it is computed. Only the coordinates of ``a_hat`` in the plane matter:
``x = a_hat . u`` and ``y = a_hat . v``, read off the projections onto the basis (one matmul,
[n, K]). With ``x + i y = r e^{i phi}``, ``a_hat . s(theta) = r cos(theta + phi)``, so a sample is
inside the spotlight on one arc of angles, ``|theta + phi| <= arccos(epsilon / r)`` (mod 2 pi).
``method="arcs"`` (the default) turns each (sample, plane) into the integer range of grid angles
on its arc and counts all arcs at once with two ``bincount`` calls and a cumulative sum: O(n P)
work instead of O(n P R), exact on the angle grid (up to floating-point ties at arc ends).
``method="dense"`` evaluates the [n, P, R] tensor of dot products directly. Both run on the
activations' device, vectorised over samples, planes and angles, in chunks of at most
``chunk`` (sample, plane) pairs. :func:`naive_spotlight` is the definition written as a loop over
planes with explicit d x d rotation matrices: the reference for tests and benchmarks.

:class:`SpotlightCounter` accumulates integer counts per plane and angle over any number of
``add`` calls (streaming: a dataset's activations need not be held at once);
:class:`SpotlightResult` holds them with what is needed to read them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from hooked.typecheck import Float, Int, Shaped, typechecked

PlaneKind = Literal["perm", "comb"]
Method = Literal["arcs", "dense"]
Zeros = Literal["error", "skip"]

DEFAULT_CHUNK = 1 << 20  # (sample, plane) pairs per block: bounds temporary memory (~100 MB)
DEGENERATE = 1e-9  # planes whose two basis vectors have |cos| > 1 - this are undefined


# ---------------------------------------------------------------------- planes
def n_planes(n_basis: int, kind: PlaneKind = "perm") -> int:
    """How many planes ``n_basis`` vectors give: ordered pairs ("perm") or unordered ("comb")."""
    _check_kind(kind)
    return n_basis * (n_basis - 1) // (2 if kind == "comb" else 1)


def make_planes(
    n_basis: int,
    kind: PlaneKind = "perm",
    max_planes: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Int[Tensor, "planes 2"]:
    """Index pairs ``(i, j)`` of basis vectors, in itertools order (permutations or combinations).

    With ``max_planes`` below the total, a uniform random subset of that size (without
    replacement, reproducible from ``seed``), kept in the same order.
    """
    _check_kind(kind)
    if n_basis < 2:
        raise ValueError(f"make_planes: a plane needs two basis vectors, got n_basis={n_basis}")
    total = n_planes(n_basis, kind)
    if max_planes is not None and max_planes < 1:
        raise ValueError(f"make_planes: max_planes must be >= 1 or None, got {max_planes}")
    if max_planes is None or max_planes >= total:
        index = torch.arange(total, device=device)
    else:
        index = _sample_without_replacement(total, max_planes, seed).to(device)
    return _decode_planes(index, n_basis, kind)


def _sample_without_replacement(total: int, m: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if total <= 1 << 24:
        return torch.randperm(total, generator=g)[:m].sort().values
    picked = torch.empty(0, dtype=torch.long)
    while picked.numel() < m:  # m << total here, so one or two rounds
        more = torch.randint(total, (m + m // 10 + 16,), generator=g)
        picked = torch.cat([picked, more]).unique()
    keep = torch.randperm(picked.numel(), generator=g)[:m]
    return picked[keep].sort().values


def _decode_planes(index: Tensor, k: int, kind: str) -> Tensor:
    """Linear index -> (i, j) in itertools order."""
    if kind == "perm":
        i = index // (k - 1)
        r = index % (k - 1)
        j = r + (r >= i).long()
        return torch.stack([i, j], dim=1)

    # combinations: row i starts at start(i) = i k - i (i + 1) / 2
    def start(i: Tensor) -> Tensor:
        return i * k - i * (i + 1) // 2

    b = 2 * k - 1
    i = torch.floor((b - torch.sqrt((b * b - 8 * index).double())) / 2).long().clamp(0, k - 2)
    for _ in range(2):  # correct the float estimate by at most one row either way
        i = i + (start(i + 1) <= index).long()
        i = i - (start(i) > index).long()
    j = index - start(i) + i + 1
    return torch.stack([i, j], dim=1)


def _check_kind(kind: str) -> None:
    if kind not in ("perm", "comb"):
        raise ValueError(f"planes must be 'perm' (ordered pairs) or 'comb' (unordered pairs), got {kind!r}")


# ---------------------------------------------------------------------- the reference curve
def isotropic_reference(dim: int, epsilon: float, signed: bool = False) -> float:
    """SRM of isotropic data in ``dim`` dimensions: the fraction of the unit sphere in one cone.

    ``(1/2) I_{1 - eps^2}((dim - 1) / 2, 1/2)`` for ``epsilon >= 0`` (I: the regularised
    incomplete beta function), one minus that for ``epsilon < 0``; 0 for the signed variant.
    The same at every angle and in every plane, whatever the basis.
    """
    _check_dim(dim)
    _check_epsilon(epsilon)
    if signed:
        return 0.0
    from scipy.special import betainc

    cap = 0.5 * float(betainc((dim - 1) / 2.0, 0.5, 1.0 - epsilon * epsilon))
    return cap if epsilon >= 0 else 1.0 - cap


def angles(n_angles: int, dtype: torch.dtype = torch.float64, device: Any = None) -> Float[Tensor, angles]:
    """The angle grid ``2 pi k / n_angles``, ``k = 0 .. n_angles - 1``."""
    if n_angles < 1:
        raise ValueError(f"n_angles must be >= 1, got {n_angles}")
    return torch.arange(n_angles, dtype=dtype, device=device) * (2 * math.pi / n_angles)


# ---------------------------------------------------------------------- counting kernels
def arc_counts(x: Tensor, y: Tensor, epsilon: float, n_angles: int) -> Tensor:
    """Counts [planes, angles] of samples with ``r cos(theta + phi) >= epsilon``; x, y: [n, planes].

    Each (sample, plane) covers one arc of grid angles; arcs are added as +1/-1 at their ends on
    a doubled grid (so that arcs crossing 2 pi need no special case), cumulated and folded.
    """
    n, p = x.shape
    R = n_angles
    scale = R / (2 * math.pi)
    r = torch.hypot(x, y)
    t = torch.div(epsilon, r)
    h = t.clamp(-1.0, 1.0).arccos_().mul_(scale)  # half width of the arc, in grid steps
    c = torch.atan2(y, x).mul_(-scale)  # its centre, -phi, in grid steps
    lo = torch.sub(c, h).ceil_()
    length = c.add_(h).floor_().sub_(lo).add_(1).clamp_(0, R)
    length.masked_fill_(t > 1, 0)
    zero = r == 0
    if bool(zero.any()):
        length.masked_fill_(zero, float(R) if epsilon <= 0 else 0.0)
        lo.masked_fill_(zero, 0.0)
    start = lo.remainder_(R).long()
    width = 2 * R + 1
    start += torch.arange(0, p * width, width, device=x.device)
    last = length.long().add_(start)
    size = p * width
    diff = torch.bincount(start.view(-1), minlength=size).sub_(torch.bincount(last.view(-1), minlength=size))
    total = diff.view(p, width).cumsum_(1)
    return total[:, :R] + total[:, R : 2 * R]


def dense_counts(x: Tensor, y: Tensor, epsilon: float, n_angles: int) -> Tensor:
    """The same counts from the full [n, planes, angles] tensor of dot products."""
    theta = angles(n_angles, x.dtype, x.device)
    dots = x[..., None] * torch.cos(theta) - y[..., None] * torch.sin(theta)
    return (dots >= epsilon).sum(0)


_KERNELS = {"arcs": arc_counts, "dense": dense_counts}


# ---------------------------------------------------------------------- inputs
def _check_dim(dim: int) -> None:
    if dim < 2:
        raise ValueError(
            "spotlight resonance needs activations of dimension d >= 2 (planes need two directions), "
            f"got d={dim}"
        )


def _check_epsilon(epsilon: float) -> None:
    if not (-1.0 <= epsilon <= 1.0) or math.isnan(epsilon):
        raise ValueError(
            f"epsilon must be in [-1, 1] (the cosine of the spotlight's half angle), got {epsilon}"
        )


def unit_rows(
    acts: Tensor, zeros: Zeros = "error", dtype: torch.dtype = torch.float64, argument: str = "activations"
) -> tuple[Tensor, Tensor]:
    """``acts`` flattened to [rows, d] and scaled to unit length; also the mask of rows kept.

    Zero rows have no direction: they raise (``zeros="error"``) or are left out (``"skip"``).
    """
    if not isinstance(acts, Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor, got {type(acts).__name__}")
    if acts.dim() < 1:
        raise ValueError(f"{argument} must have a feature axis ([..., d]), got a 0-d tensor")
    if not (
        acts.is_floating_point()
        or acts.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    ):
        raise TypeError(f"{argument} must be real-valued, got dtype {acts.dtype}")
    _check_dim(acts.shape[-1])
    rows = acts.detach().reshape(-1, acts.shape[-1]).to(dtype)
    if not bool(torch.isfinite(rows).all()):
        raise ValueError(f"{argument} contain NaN or infinite values")
    norms = rows.norm(dim=1)
    keep = norms > 0
    n_zero = int((~keep).sum())
    if n_zero:
        if zeros == "error":
            raise ValueError(
                f"{argument}: {n_zero} of {rows.shape[0]} rows are zero vectors, which have no direction; "
                "remove them or pass zeros='skip' (--zeros skip) to leave them out of the counts"
            )
        if zeros != "skip":
            raise ValueError(f"zeros must be 'error' or 'skip', got {zeros!r}")
        rows, norms = rows[keep], norms[keep]
    return rows / norms[:, None], keep


def unit_basis(basis: Tensor, dim: int, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
    """Basis rows scaled to unit length, checked against the activations' dimension."""
    if not isinstance(basis, Tensor) or basis.dim() != 2:
        got = tuple(basis.shape) if isinstance(basis, Tensor) else type(basis).__name__
        raise ValueError(f"basis must be a [n_basis, d] tensor of direction rows, got {got}")
    if basis.shape[1] != dim:
        raise ValueError(f"basis has vectors of dimension {basis.shape[1]}, but the activations have d={dim}")
    if basis.shape[0] < 2:
        raise ValueError(f"basis needs at least two vectors to span a plane, got {basis.shape[0]}")
    b = basis.detach().to(device=device, dtype=dtype)
    norms = b.norm(dim=1)
    if not bool((norms > 0).all()) or not bool(torch.isfinite(b).all()):
        bad = torch.nonzero(~(norms > 0) | ~torch.isfinite(norms)).flatten().tolist()
        raise ValueError(f"basis rows {bad[:10]} are zero or not finite")
    return b / norms[:, None]


# ---------------------------------------------------------------------- the result
@dataclass
class SpotlightResult:
    """SRM counts per plane and angle, with what is needed to read them.

    ``values = counts / n`` is the SRM ([planes, angles]); ``mean`` / ``std`` are over planes.
    """

    counts: Tensor  # [planes, angles] int64 (signed: positive minus negative cone)
    n: int  # samples counted (zero rows left out)
    angles: Tensor  # [angles]
    planes: Tensor  # [planes, 2] basis indices (i, j)
    epsilon: float
    signed: bool
    dim: int
    n_basis: int
    plane_kind: str
    n_zero: int = 0  # zero rows left out
    dropped_planes: int = 0  # planes of (anti)parallel basis pairs, which span no plane
    extra: dict = field(default_factory=dict)

    @property
    def reference(self) -> float:
        """The isotropic reference (:func:`isotropic_reference`)."""
        return isotropic_reference(self.dim, self.epsilon, self.signed)

    @property
    def values(self) -> Tensor:
        if self.n == 0:
            raise ValueError("no samples were counted (every row was a zero vector, or nothing was added)")
        return self.counts.double() / self.n

    @property
    def mean(self) -> Tensor:
        return self.values.mean(0)

    @property
    def std(self) -> Tensor:
        return self.values.std(0, correction=0)

    def merge(self, other: SpotlightResult) -> SpotlightResult:
        """The result of both sample sets together (counts add)."""
        for name in ("epsilon", "signed", "dim", "n_basis", "plane_kind"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(
                    f"cannot merge SRM results with different {name}: {getattr(self, name)} "
                    f"vs {getattr(other, name)}"
                )
        if self.counts.shape != other.counts.shape or not torch.equal(self.planes.cpu(), other.planes.cpu()):
            raise ValueError("cannot merge SRM results over different planes or angle grids")
        return SpotlightResult(
            self.counts + other.counts.to(self.counts.device),
            self.n + other.n,
            self.angles,
            self.planes,
            self.epsilon,
            self.signed,
            self.dim,
            self.n_basis,
            self.plane_kind,
            self.n_zero + other.n_zero,
            self.dropped_planes,
            dict(self.extra),
        )

    def tensors(self) -> dict[str, Tensor]:
        """Everything as tensors (for ``RunDir.tensors``: safetensors, not JSON)."""
        return {
            "counts": self.counts,
            "angles": self.angles,
            "planes": self.planes,
            "mean": self.mean,
            "std": self.std,
        }

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: settings, the mean +- std curve over planes, the reference."""
        out = {
            "n": self.n,
            "n_zero": self.n_zero,
            "dim": self.dim,
            "n_basis": self.n_basis,
            "planes": self.plane_kind,
            "n_planes": int(self.planes.shape[0]),
            "dropped_planes": self.dropped_planes,
            "epsilon": self.epsilon,
            "signed": self.signed,
            "n_angles": int(self.angles.numel()),
            "isotropic_reference": self.reference,
        }
        if self.n:
            out["mean"] = [round(v, 6) for v in self.mean.tolist()]
            out["std"] = [round(v, 6) for v in self.std.tolist()]
        return out | self.extra

    to_json = summary


# ---------------------------------------------------------------------- accumulating counts
class SpotlightCounter:
    """Accumulates SRM counts over batches of activations (streaming).

    Args:
        basis: privileged directions as rows [n_basis, d] (orthonormal or overcomplete; rows
            are scaled to unit length). A list of bases of one shape counts the same planes in
            each of them in one pass (e.g. a basis and random rotations of it); then
            :meth:`results` gives one result per basis.
        epsilon: cosine of the spotlight's half angle, in [-1, 1].
        n_angles: angles on [0, 2 pi).
        planes: "perm" (ordered pairs), "comb" (unordered pairs) or a [planes, 2] index tensor.
        max_planes: keep a random subset of this many planes (seeded by ``seed``).
        seed: seed of the plane subset.
        signed: the signed variant (inside the cone +1, inside the opposite cone -1).
        zeros: zero activation vectors raise ("error") or are left out ("skip").
        method: "arcs" (O(n P), default) or "dense" (O(n P R)).
        chunk: (sample, plane) pairs per block, to bound memory.
    """

    def __init__(
        self,
        basis: Tensor | Sequence[Tensor],
        *,
        epsilon: float = 0.9,
        n_angles: int = 100,
        planes: PlaneKind | Tensor = "perm",
        max_planes: int | None = None,
        seed: int = 0,
        signed: bool = False,
        zeros: Zeros = "error",
        method: Method = "arcs",
        chunk: int = DEFAULT_CHUNK,
        dtype: torch.dtype = torch.float64,
    ):
        _check_epsilon(epsilon)
        bases = [basis] if isinstance(basis, Tensor) else list(basis)
        if not bases or any(not isinstance(b, Tensor) or b.dim() != 2 for b in bases):
            got = [tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__ for b in bases]
            raise ValueError(f"basis must be a [n_basis, d] tensor (or a list of them), got {got}")
        if any(b.shape != bases[0].shape for b in bases):
            raise ValueError(
                f"bases counted together must have one shape, got {[tuple(b.shape) for b in bases]}"
            )
        _check_dim(bases[0].shape[1])
        if method not in _KERNELS:
            raise ValueError(f"method must be one of {tuple(_KERNELS)}, got {method!r}")
        if zeros not in ("error", "skip"):
            raise ValueError(f"zeros must be 'error' or 'skip', got {zeros!r}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.dim = bases[0].shape[1]
        self.dtype = dtype
        self.blocks = len(bases)
        units = [unit_basis(b, self.dim, dtype, bases[0].device) for b in bases]
        k = units[0].shape[0]
        self.n_basis = k
        if isinstance(planes, Tensor):
            idx = planes.long().cpu()
            if idx.dim() != 2 or idx.shape[1] != 2 or idx.numel() == 0:
                raise ValueError(
                    f"planes tensor must be [planes, 2] basis indices, got {tuple(planes.shape)}"
                )
            if int(idx.min()) < 0 or int(idx.max()) >= k:
                raise ValueError(f"planes index basis vectors outside 0..{k - 1}")
            if bool((idx[:, 0] == idx[:, 1]).any()):
                raise ValueError("planes must join two different basis vectors")
            self.plane_kind = "custom"
        else:
            idx = make_planes(k, planes, max_planes, seed)
            self.plane_kind = planes
        # a plane is dropped (from every basis) where its two vectors are (anti)parallel in any basis
        cos = torch.stack(
            [(u[idx[:, 0].to(u.device)] * u[idx[:, 1].to(u.device)]).sum(1).cpu() for u in units]
        )
        ok = ((1 - cos.abs()) > DEGENERATE).all(0)
        self.dropped_planes = int((~ok).sum())
        if self.dropped_planes:
            warnings.warn(
                f"spotlight: {self.dropped_planes} planes join parallel or antiparallel basis vectors "
                "and span no plane; left out",
                stacklevel=2,
            )
            idx, cos = idx[ok], cos[:, ok]
        if idx.shape[0] == 0:
            raise ValueError("spotlight: no plane left (every pair of basis vectors is parallel)")
        self.block_planes = idx  # [planes, 2] indices within one basis
        offsets = torch.arange(self.blocks)[:, None, None] * k
        self.basis = torch.cat(units)  # [blocks * k, d]
        self.planes = (idx[None] + offsets).reshape(-1, 2).to(self.basis.device)
        cos = cos.reshape(-1).to(self.basis.device, dtype)
        self._cos = cos
        self._sin = torch.sqrt(1 - cos * cos)
        self._orthonormal = bool((cos.abs() < 1e-12).all())
        self.epsilon = float(epsilon)
        self.n_angles = int(n_angles)
        angles(self.n_angles)  # validates
        self.signed = bool(signed)
        self.zeros = zeros
        self.method = method
        self.chunk = int(chunk)
        self.counts = torch.zeros(
            self.planes.shape[0], self.n_angles, dtype=torch.long, device=self.basis.device
        )
        self.n = 0
        self.n_zero = 0

    def _to(self, device: torch.device) -> None:
        if self.counts.device != device:
            self.basis, self.planes = self.basis.to(device), self.planes.to(device)
            self._cos, self._sin, self.counts = (
                self._cos.to(device),
                self._sin.to(device),
                self.counts.to(device),
            )

    @typechecked
    def add(self, acts: Shaped[Tensor, "*batch d"]) -> SpotlightCounter:
        """Count one batch of activations (any shape [..., d]; all leading axes are samples)."""
        if acts.dim() >= 1 and acts.shape[-1] != self.dim:
            _check_dim(acts.shape[-1])
            raise ValueError(
                f"activations have d={acts.shape[-1]}, but the basis has vectors of dimension {self.dim}"
            )
        self._to(acts.device)
        unit, keep = unit_rows(acts, self.zeros, self.dtype)
        self.n_zero += int(keep.numel() - unit.shape[0])
        self._count(unit @ self.basis.T)
        return self

    def _count(self, proj: Tensor) -> None:
        """Count samples given their unit activations' projections onto the basis ([n, n_basis])."""
        n = proj.shape[0]
        if n == 0:
            return
        kernel = _KERNELS[self.method]
        per_pair = self.n_angles if self.method == "dense" else 1
        rows = max(1, min(n, self.chunk // per_pair))
        cols = max(1, self.chunk // (rows * per_pair))
        P = self.planes.shape[0]
        for s0 in range(0, n, rows):
            block = proj[s0 : s0 + rows]
            for p0 in range(0, P, cols):
                i, j = self.planes[p0 : p0 + cols].unbind(1)
                x = block[:, i]
                y = block[:, j]
                if not self._orthonormal:
                    y = (y - self._cos[p0 : p0 + cols] * x) / self._sin[p0 : p0 + cols]
                c = kernel(x, y, self.epsilon, self.n_angles)
                if self.signed:
                    c = c - kernel(-x, -y, self.epsilon, self.n_angles)
                self.counts[p0 : p0 + cols] += c
        self.n += n

    def results(self) -> list[SpotlightResult]:
        """One result per basis (in the order given)."""
        theta = angles(self.n_angles, torch.float64, self.counts.device)
        per = self.block_planes.shape[0]
        return [
            SpotlightResult(
                counts=self.counts[b * per : (b + 1) * per].clone(),
                n=self.n,
                angles=theta,
                planes=self.block_planes.clone(),
                epsilon=self.epsilon,
                signed=self.signed,
                dim=self.dim,
                n_basis=self.n_basis,
                plane_kind=self.plane_kind,
                n_zero=self.n_zero,
                dropped_planes=self.dropped_planes,
            )
            for b in range(self.blocks)
        ]

    def result(self) -> SpotlightResult:
        """The result (of the first basis, when several are counted)."""
        return self.results()[0]

    def basis_block(self, b: int = 0) -> Tensor:
        """The unit-row basis number ``b``."""
        return self.basis[b * self.n_basis : (b + 1) * self.n_basis]


# ---------------------------------------------------------------------- one call
@typechecked
def spotlight(
    acts: Shaped[Tensor, "*batch d"],
    basis: Float[Tensor, "k d_basis"]
    | str
    | None = None,  # d_basis must equal d (checked with a clear message)
    *,
    epsilon: float = 0.9,
    n_angles: int = 100,
    planes: PlaneKind | Int[Tensor, "p 2"] = "perm",
    max_planes: int | None = None,
    seed: int = 0,
    signed: bool = False,
    zeros: Zeros = "error",
    method: Method = "arcs",
    chunk: int = DEFAULT_CHUNK,
) -> SpotlightResult:
    """The Spotlight Resonance Method on activations ``acts`` ([n, d], or [..., d] flattened).

    ``basis``: rows [n_basis, d], or a name ("standard", "random[:SEED]", "thomson:N",
    see :func:`analyses.spotlight.basis.resolve_basis`); default the standard basis. Other
    arguments as :class:`SpotlightCounter`.
    """
    from analyses.spotlight.basis import resolve_basis

    if acts.dim() < 1:
        raise ValueError("activations must have a feature axis ([..., d]), got a 0-d tensor")
    _check_dim(acts.shape[-1])
    b = resolve_basis(basis, acts.shape[-1], device=acts.device)
    counter = SpotlightCounter(
        b,
        epsilon=epsilon,
        n_angles=n_angles,
        planes=planes,
        max_planes=max_planes,
        seed=seed,
        signed=signed,
        zeros=zeros,
        method=method,
        chunk=chunk,
    )
    return counter.add(acts).result()


def naive_spotlight(
    acts: Tensor,
    basis: Tensor,
    planes: Sequence[tuple[int, int]] | Tensor,
    *,
    epsilon: float = 0.9,
    n_angles: int = 100,
    signed: bool = False,
) -> Tensor:
    """SRM [planes, angles] straight from the definition: a loop over planes, d x d rotations.

    For each plane: ``G = u v^T - v u^T``, ``R(theta) = I + sin(theta) G + (1 - cos(theta)) G^2``,
    spotlight ``R(theta) b_i``. Slow; the reference that tests and benchmarks compare against.
    """
    a = acts.reshape(-1, acts.shape[-1]).double()
    a = a / a.norm(dim=1, keepdim=True)
    b = basis.double() / basis.double().norm(dim=1, keepdim=True)
    d = a.shape[1]
    theta = angles(n_angles)
    eye = torch.eye(d, dtype=torch.float64)
    out = []
    for i, j in [tuple(int(v) for v in p) for p in planes]:
        u = b[i]
        v = b[j] - (b[j] @ u) * u
        v = v / v.norm()
        G = torch.outer(u, v) - torch.outer(v, u)
        rot = eye + torch.sin(theta)[:, None, None] * G + (1 - torch.cos(theta))[:, None, None] * (G @ G)
        spot = rot @ u  # [angles, d]
        dots = a @ spot.T  # [n, angles]
        srm = (dots >= epsilon).double().mean(0)
        if signed:
            srm = srm - (dots <= -epsilon).double().mean(0)
        out.append(srm)
    return torch.stack(out)
