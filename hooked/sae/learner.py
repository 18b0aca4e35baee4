"""One dictionary being trained: its parameters, optimiser state, dead-feature counts and metrics.

A :class:`Learner` trains on activations scaled to a mean squared norm of ``d_in`` per row (the
scale, one number per side, is measured on the first batch), so that the learning rate and the
sparsity coefficient mean the same on any model; :meth:`Learner.export` folds the scale back
into the weights, giving a dictionary that reads and writes the model's own activations.

What a step does (``loss`` then ``update``):

* pre-activations ``z = (x - b_dec) @ W_enc + b_enc`` (``x @ W_enc + b_enc`` for a transcoder);
* features by kind: ``topk`` (the ``k`` largest per row) and ``batchtopk`` (the ``k * rows``
  largest of the whole batch, over every rank), through the sparse kernels of
  :mod:`hooked.sae.sparse` from ``SPARSE_FROM`` features on (narrower ones densely, which costs
  no more there); ``standard`` (ReLU, L1 penalty ``l1 * sum f``) and ``jumprelu`` (L0
  penalty ``l1 * sum H(z - theta)``, straight-through gradients with a rectangle kernel of width
  ``bandwidth`` for the threshold, learned as ``log theta``) densely;
* loss: the squared error summed over the row, averaged over rows, plus the sparsity penalty,
  plus ``aux_coeff`` times the auxiliary TopK loss (Gao et al. 2024): the ``aux_k`` largest
  pre-activations among dead features (not active for ``dead_tokens`` tokens) reconstruct the
  error of the live ones, normalised by the batch's variance;
* update: gradients summed over ranks, the component of each decoder row's gradient along the
  row removed, Adam (torch's own, fused into one pass per tensor where torch has the kernel),
  decoder rows set back to unit norm; BatchTopK's inference threshold follows
  the smallest selected activation (an exponential moving average, rate 0.01, as SAELens).

Initialisation: decoder rows random unit vectors, encoder rows the same (a transcoder: its own
random unit rows), ``b_dec`` the geometric median (or mean) of the first batch's targets, and
for a transcoder ``b_enc`` centring the first batch's pre-activations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam

from hooked.sae.dictionary import SAE, Transcoder, check_shape_args
from hooked.sae.sparse import mask_bags, sparse_code, topk_bags

# Adam as torch.optim.Adam computes it, in one pass over each tensor where the build allows (fused
# kernels on the CPU since torch 2.4), else over all tensors at once
_FUSED_ADAM = torch.__version__ >= "2.4"
DEFAULT_L1 = {"standard": 1.0, "jumprelu": 1.0}
SPARSE_FROM = 1024  # TopK dictionaries at least this wide train through the sparse kernels


@dataclass
class Spec:
    """What one dictionary of a training run is (see :func:`hooked.sae.train` for the fields)."""

    hook: str
    kind: str = "topk"
    width: int = 0
    k: int | None = None
    hook_out: str | None = None
    name: str = "sae"
    l1: float | None = None
    lr: float | None = None
    aux_k: int | None = None
    aux_coeff: float = 1 / 32
    dead_tokens: int = 1_000_000
    b_dec_init: str = "median"
    bandwidth: float = 0.05
    init: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Comm:
    """Sums and extremes over the ranks of a ``torchrun`` job (nothing to do in one process)."""

    def __init__(self) -> None:
        from hooked import distributed

        self.world = distributed.world_size()
        self.rank = distributed.rank()

    def _reduce(self, t: Tensor, op: str) -> Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return t

    def sum(self, t: Tensor) -> Tensor:
        return self._reduce(t, "SUM")

    def min(self, t: Tensor) -> Tensor:
        return self._reduce(t, "MIN")

    def cat(self, t: Tensor) -> Tensor:
        """Every rank's ``t`` (the same shape everywhere), concatenated in rank order."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def sum_all(self, tensors: list[Tensor]) -> None:
        """Sum each tensor over the ranks, in place, in one collective."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.sum(flat)
        at = 0
        for t in tensors:
            t.copy_(flat[at : at + t.numel()].view_as(t))
            at += t.numel()


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - theta)``; the threshold's gradient through a rectangle kernel of width ``eps``."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        near = ((z - theta).abs() < ctx.eps / 2).to(g.dtype)
        return g * (z > theta), (-(theta / ctx.eps) * near * g).sum(0), None


class _Step(torch.autograd.Function):
    """``H(z - theta)``: no gradient to ``z``; the threshold's through the rectangle kernel."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[None, Tensor, None]:
        z, theta = ctx.saved_tensors
        near = ((z - theta).abs() < ctx.eps / 2).to(g.dtype)
        return None, (-(1.0 / ctx.eps) * near * g).sum(0), None


def _unit_rows(n: int, d: int, g: torch.Generator) -> Tensor:
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (w / w.norm(dim=1, keepdim=True)).float()


WINDOW = ("steps", "sq_err", "variance", "active", "aux", "rows")


class Learner:
    """One dictionary in training (parameters in the scaled space, ``enc`` as ``[width, d_in]``)."""

    def __init__(self, spec: Spec, d_in: int, d_out: int, seed: int, device: torch.device | str = "cpu"):
        check_shape_args(d_in=d_in, width=spec.width, d_out=d_out, kind=spec.kind, k=spec.k)
        self.spec, self.d_in, self.d_out = spec, d_in, d_out
        self.transcoder = spec.hook_out is not None
        self.l1 = spec.l1 if spec.l1 is not None else DEFAULT_L1.get(spec.kind, 0.0)
        self.lr = spec.lr if spec.lr is not None else 2e-4 / math.sqrt(spec.width / 2**14)
        self.aux_k = spec.aux_k if spec.aux_k is not None else max(1, d_out // 2)
        g = torch.Generator().manual_seed(seed)
        M = spec.width
        dec = _unit_rows(M, d_out, g)
        enc = _unit_rows(M, d_in, g) if self.transcoder else dec.clone()
        p: dict[str, Tensor] = {"enc": enc, "b_enc": torch.zeros(M), "dec": dec, "b_dec": torch.zeros(d_out)}
        if spec.kind == "jumprelu":
            p["log_threshold"] = torch.full((M,), math.log(spec.bandwidth))
        self.params = {n: t.to(device).requires_grad_(True) for n, t in p.items()}
        self.m = {n: torch.zeros_like(t) for n, t in self.params.items()}
        self.v = {n: torch.zeros_like(t) for n, t in self.params.items()}
        self.t = 0
        self._steps = [torch.zeros((), device=device) for _ in self.params]  # Adam's step counts
        self.threshold = torch.zeros((), device=device)  # batchtopk's inference threshold (scaled space)
        self.fired_since = torch.zeros(M, dtype=torch.long, device=device)
        self.window_fired = torch.zeros(M, dtype=torch.long, device=device)
        self.window = torch.zeros(len(WINDOW), dtype=torch.float64)
        self.scale_in = self.scale_out = 1.0
        self.initialised = False
        self._cut = 0.0
        self._pending: Any = None
        self._pre: Tensor | None = None

    # ------------------------------------------------------------------ first batch
    def initialise(self, x: Tensor, y: Tensor, n: int, comm: Comm, init: SAE | None = None) -> None:
        """Scales and biases from the first batch (``x``, ``y``: this rank's rows of ``n`` in all)."""
        sums = torch.stack([x.double().pow(2).sum(), y.double().pow(2).sum()])
        comm.sum(sums)
        self.scale_in = math.sqrt(float(sums[0]) / (n * self.d_in)) or 1.0
        self.scale_out = (
            self.scale_in if not self.transcoder else math.sqrt(float(sums[1]) / (n * self.d_out)) or 1.0
        )
        xs, ys = x / self.scale_in, y / self.scale_out
        with torch.no_grad():
            if init is not None:
                self._start_from(init)
            else:
                how = self.spec.b_dec_init
                if how == "median":
                    self.params["b_dec"].copy_(_geometric_median(ys, n, comm))
                elif how == "mean":
                    self.params["b_dec"].copy_(comm.sum(ys.double().sum(0)).float() / n)
                if self.transcoder:
                    mean_x = comm.sum(xs.double().sum(0)).float() / n
                    self.params["b_enc"].copy_(-(self.params["enc"] @ mean_x))
        self.initialised = True

    def _start_from(self, sae: SAE) -> None:
        """Parameters from a dictionary (in the model's units): scaled, decoder rows at unit norm."""
        if sae.kind != self.spec.kind or sae.width != self.spec.width:
            raise ValueError(
                f"init: the dictionary is {sae.kind} of width {sae.width}, the run trains {self.spec.kind} "
                "of "
                f"width {self.spec.width} at {self.spec.hook!r}"
            )
        if sae.d_in != self.d_in or sae.d_out != self.d_out:
            raise ValueError(
                f"init: the dictionary reads width {sae.d_in} (writes {sae.d_out}), but the store's rows at "
                f"{self.spec.hook!r} have width {self.d_in} (target {self.d_out})"
            )
        p = self.params
        norms = sae.W_dec.detach().float().norm(dim=1).clamp_min(1e-12)
        ratio = self.scale_in / self.scale_out
        p["enc"].copy_(sae.W_enc.detach().float().T * norms[:, None] * ratio)
        p["b_enc"].copy_(sae.b_enc.detach().float() * norms / self.scale_out)
        p["dec"].copy_(sae.W_dec.detach().float() / norms[:, None])
        p["b_dec"].copy_(sae.b_dec.detach().float() / self.scale_out)
        theta = getattr(sae, "threshold", None)
        if theta is not None:
            scaled = theta.detach().float() * norms / self.scale_out
            if "log_threshold" in p:
                p["log_threshold"].copy_(scaled.clamp_min(1e-6).log())
            else:
                self.threshold = scaled.max()

    # ------------------------------------------------------------------ a step
    def loss(self, x: Tensor, y: Tensor, n: int, comm: Comm) -> Tensor:
        """The loss of this rank's rows (sums divided by the global row count ``n``), and the
        window's metrics accumulated."""
        p, spec = self.params, self.spec
        xs, ys = x / self.scale_in, y / self.scale_out
        c = xs if self.transcoder else xs - p["b_dec"]
        yd = ys.double()
        y_sum = comm.sum(yd.sum(0))
        variance = comm.sum((yd - y_sum / n).pow_(2).sum()).clamp_min(1e-12)
        sparsity = torch.zeros(())
        if spec.kind in ("topk", "batchtopk") and spec.width >= SPARSE_FROM:
            with torch.no_grad():
                pre = torch.addmm(p["b_enc"], c, p["enc"].T, out=self._scratch(c.shape[0]))
            if spec.kind == "topk":
                assert spec.k is not None  # check_shape_args (in __init__) refuses a top-k kind without k
                values, rows, cols, offsets = topk_bags(pre, spec.k)
            else:
                values, rows, cols, offsets = mask_bags(pre, self._batch_selection(pre, n, comm))
            decoded, acts = sparse_code(c, p["enc"], p["b_enc"], p["dec"], values, rows, cols, offsets)
            recon = decoded + p["b_dec"]
            on = acts > 0
            fired = torch.zeros(spec.width, dtype=torch.long).index_add_(0, cols, on.long())
            active = on.sum()
        elif spec.kind in ("topk", "batchtopk"):  # narrow: dense matmuls cost no more than the kernels
            pre = torch.addmm(p["b_enc"], c, p["enc"].T)
            if spec.kind == "topk":
                assert spec.k is not None  # check_shape_args (in __init__) refuses a top-k kind without k
                index = pre.detach().topk(spec.k, dim=-1, sorted=False).indices
                f = torch.zeros_like(pre).scatter(1, index, torch.relu(pre.gather(1, index)))
            else:
                f = torch.where(self._batch_selection(pre.detach(), n, comm), torch.relu(pre), 0.0)
            recon = f @ p["dec"] + p["b_dec"]
            on = f > 0
            fired, active = on.sum(0), on.sum()
            pre = pre.detach()
        else:
            pre = torch.addmm(p["b_enc"], c, p["enc"].T)
            if spec.kind == "standard":
                f = torch.relu(pre)
                sparsity = f.sum() / n
            else:
                theta = p["log_threshold"].exp()
                f = _JumpReLU.apply(pre, theta, spec.bandwidth)
                sparsity = _Step.apply(pre, theta, spec.bandwidth).sum() / n
            recon = f @ p["dec"] + p["b_dec"]
            on = f > 0
            fired = on.sum(0)
            active = on.sum()
            pre = pre.detach()
        err = recon - ys
        sq_err = err.pow(2).sum()
        loss = sq_err / n + self.l1 * sparsity
        aux = torch.zeros(())
        dead = self.fired_since >= spec.dead_tokens
        n_dead = int(dead.sum())
        if n_dead and spec.aux_coeff:
            k_aux = min(self.aux_k, n_dead)
            with torch.no_grad():  # the scratch pre-activations are not read again: masked in place
                masked = (
                    pre.masked_fill_(~dead, -torch.inf)
                    if pre is self._pre
                    else pre.masked_fill(~dead, -torch.inf)
                )
            values, rows, cols, offsets = topk_bags(masked, k_aux)
            e_hat, _ = sparse_code(c, p["enc"], p["b_enc"], p["dec"], values, rows, cols, offsets)
            aux = min(n_dead / k_aux, 1.0) * (e_hat + err.detach()).pow(2).sum() / variance.float()
            loss = loss + spec.aux_coeff * aux
        stats = torch.stack(
            [sq_err.detach().double(), variance / comm.world, active.double(), aux.detach().double()]
        )
        self._pending = (stats, fired, n)
        return loss

    def _scratch(self, rows: int) -> Tensor:
        """The ``[rows, width]`` buffer the sparse path's pre-activations are written to, kept from
        step to step (a fresh one of that size costs the kernel's zeroing of every page, each step)."""
        if self._pre is None or self._pre.shape[0] != rows:
            enc = self.params["enc"]
            self._pre = torch.empty(rows, self.spec.width, dtype=enc.dtype, device=enc.device)
        return self._pre

    def _batch_selection(self, pre: Tensor, n: int, comm: Comm) -> Tensor:
        """BatchTopK: the ``k * n`` largest positive pre-activations over every rank's rows."""
        assert self.spec.k is not None  # check_shape_args (in __init__) refuses a top-k kind without k
        K = self.spec.k * n
        with torch.no_grad():
            flat = torch.relu(pre).reshape(-1)
            local = flat.topk(min(K, flat.numel()), sorted=False).values
            everywhere = comm.cat(local)
            cut = everywhere.topk(min(K, everywhere.numel()), sorted=False).values.min()
            self._cut = float(cut)
            return (pre >= cut) & (pre > 0)

    def update(self, lr: float, comm: Comm) -> None:
        """Sum gradients over ranks, Adam step, decoder rows back to unit norm; counts updated."""
        p = self.params
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in p.values()]
        stats, fired, n = self._pending
        comm.sum_all([*grads, stats, fired])
        with torch.no_grad():
            dec, g_dec = p["dec"], grads[list(p).index("dec")]
            g_dec.addcmul_(torch.linalg.vecdot(g_dec, dec).unsqueeze(1), dec, value=-1.0)
            self.t += 1
            for s in self._steps:  # the optimiser counts them up to self.t itself
                s.fill_(self.t - 1)
            adam(
                list(p.values()),
                grads,
                list(self.m.values()),
                list(self.v.values()),
                [],
                self._steps,
                fused=_FUSED_ADAM,
                foreach=not _FUSED_ADAM,
                amsgrad=False,
                beta1=0.9,
                beta2=0.999,
                lr=lr,
                weight_decay=0.0,
                eps=1e-8,
                maximize=False,
            )
            for t in p.values():
                t.grad = None
            dec.div_(dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
            if self.spec.kind == "batchtopk" and self._cut > 0:
                # the smallest selected activation, the same on every rank
                rate = 1.0 if self.t == 1 else 0.01
                self.threshold = (1 - rate) * self.threshold + rate * self._cut
        self.fired_since.add_(n).masked_fill_(fired > 0, 0)
        self.window_fired += fired
        self.window += torch.tensor([1.0, *stats.tolist(), float(n)], dtype=torch.float64)
        self._pending = None

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> dict[str, float]:
        """Averages over the steps since the last call (then the window starts afresh)."""
        steps, sq_err, variance, active, aux, rows = self.window.tolist()
        if not steps:
            return {}
        density = self.window_fired.double() / max(rows, 1)
        out = {
            "mse": sq_err * self.scale_out**2 / (rows * self.d_out),
            "explained_variance": 1 - sq_err / max(variance, 1e-300),
            "l0": active / rows,
            "dead_fraction": float((self.fired_since >= self.spec.dead_tokens).double().mean()),
            "dense_fraction": float((density > 0.1).double().mean()),
            "aux_loss": aux / steps,
        }
        self.window.zero_()
        self.window_fired.zero_()
        return out

    # ------------------------------------------------------------------ out
    def export(self, dtype: torch.dtype = torch.float32, metadata: dict[str, Any] | None = None) -> SAE:
        """The dictionary in the model's units (the scale folded into the weights)."""
        spec, p = self.spec, {n: t.detach().double() for n, t in self.params.items()}
        s_in, s_out = self.scale_in, self.scale_out
        meta = {
            "hooked_training": {"spec": spec.as_json(), "scale_in": s_in, "scale_out": s_out, "steps": self.t}
        }
        meta.update(metadata or {})
        if self.transcoder:
            sae: SAE = Transcoder(
                self.d_in,
                self.d_out,
                spec.width,
                spec.kind,
                k=spec.k,
                hook=spec.hook,
                hook_out=spec.hook_out,
                metadata=meta,
                dtype=dtype,
            )
        else:
            sae = SAE(self.d_in, spec.width, spec.kind, k=spec.k, hook=spec.hook, metadata=meta, dtype=dtype)
        with torch.no_grad():
            sae.W_enc.copy_((p["enc"].T * (s_out / s_in)).to(dtype))
            sae.b_enc.copy_((p["b_enc"] * s_out).to(dtype))
            sae.W_dec.copy_(p["dec"].to(dtype))
            sae.b_dec.copy_((p["b_dec"] * s_out).to(dtype))
            if spec.kind == "jumprelu":
                sae.threshold.copy_((p["log_threshold"].exp() * s_out).to(dtype))
            elif spec.kind == "batchtopk":
                sae.threshold.fill_(float(self.threshold) * s_out)
        return sae

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything a resumed run needs: tensors, and JSON-able numbers."""
        tensors = {f"param.{n}": t.detach() for n, t in self.params.items()}
        tensors.update({f"adam_m.{n}": t for n, t in self.m.items()})
        tensors.update({f"adam_v.{n}": t for n, t in self.v.items()})
        tensors.update(
            fired_since=self.fired_since,
            window_fired=self.window_fired,
            window=self.window,
            threshold=self.threshold.reshape(1),
        )
        numbers = {
            "t": self.t,
            "scale_in": self.scale_in,
            "scale_out": self.scale_out,
            "initialised": self.initialised,
        }
        return tensors, numbers

    def load_state(self, tensors: dict[str, Tensor], numbers: dict[str, Any], where: str) -> None:
        with torch.no_grad():
            for group, table in (("param", self.params), ("adam_m", self.m), ("adam_v", self.v)):
                for n, t in table.items():
                    _put(t, tensors, f"{group}.{n}", where)
            for n in ("fired_since", "window_fired", "window"):
                _put(getattr(self, n), tensors, n, where)
            self.threshold = _get(tensors, "threshold", (1,), where).reshape(()).clone()
        self.t = int(numbers["t"])
        self.scale_in, self.scale_out = float(numbers["scale_in"]), float(numbers["scale_out"])
        self.initialised = bool(numbers["initialised"])


def _get(tensors: dict[str, Tensor], key: str, shape: tuple[int, ...], where: str) -> Tensor:
    if key not in tensors:
        raise ValueError(f"{where}: key {key!r} is missing")
    t = tensors[key]
    if tuple(t.shape) != shape:
        raise ValueError(f"{where}: key {key!r} has shape {tuple(t.shape)}, expected {shape}")
    return t


def _put(target: Tensor, tensors: dict[str, Tensor], key: str, where: str) -> None:
    t = _get(tensors, key, tuple(target.shape), where)
    if t.dtype != target.dtype:
        raise ValueError(f"{where}: key {key!r} has dtype {t.dtype}, expected {target.dtype}")
    target.copy_(t)


def _geometric_median(y: Tensor, n: int, comm: Comm, iterations: int = 30) -> Tensor:
    """Weiszfeld's iterations over every rank's rows (sums over ranks, so any split gives one answer)."""
    y = y.double()
    m = comm.sum(y.sum(0)) / n
    for _ in range(iterations):
        w = 1.0 / (y - m).norm(dim=1).clamp_min(1e-8)
        num = torch.cat([(w[:, None] * y).sum(0), w.sum().reshape(1)])
        comm.sum(num)
        m = num[:-1] / num[-1]
    return m.float()
