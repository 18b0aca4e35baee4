"""The dictionaries: sparse autoencoders (:class:`SAE`) and transcoders (:class:`Transcoder`).

Each is a :class:`~hooked.HookedModule` with SAELens's parameter names and shapes and its six hook
points, so every tool of the project (caches, hooks, patching, probes) reads and edits features:

=======================  ==============================================================
``hook_sae_input``       the activation the dictionary reads ``[..., d_in]``
``hook_sae_acts_pre``    encoder pre-activations ``[..., width]``
``hook_sae_acts_post``   feature activations ``[..., width]``
``hook_sae_recons``      the reconstruction (a transcoder: its prediction) ``[..., d_out]``
``hook_sae_error``       ``target - reconstruction`` (only with ``error_term=True``)
``hook_sae_output``      what ``forward`` returns
=======================  ==============================================================

Parameters: ``W_enc [d_in, width]``, ``b_enc [width]``, ``W_dec [width, d_out]``, ``b_dec
[d_out]``; ``threshold [width]`` for ``jumprelu`` and ``batchtopk``; ``W_skip [d_out, d_in]`` for a
transcoder with a skip connection. An SAE has ``d_out == d_in``.

Kinds (``kind=``), the feature activations ``f`` from the pre-activations
``z = (x - b_dec) @ W_enc + b_enc`` (``x @ W_enc + b_enc`` for transcoders and with
``apply_b_dec_to_input=False``):

* ``standard``: ``f = relu(z)`` (trained with an L1 penalty);
* ``topk``: the ``k`` largest entries of ``z`` per row, through a ReLU, the rest 0;
* ``jumprelu``: ``f = z * (z > threshold)`` where ``z > 0``;
* ``batchtopk``: trained keeping the ``k * rows`` largest entries of a whole batch; it encodes with
  its learned threshold, as a JumpReLU (SAELens saves it as one).

The reconstruction is ``f @ W_dec + b_dec`` (``+ x @ W_skip.T`` with a skip connection).
``forward(x, error_term=True)`` adds the error ``target - reconstruction`` computed from the
un-edited features, so that the output equals the target while features are edited through
the hook points (SAELens's ``use_error_term``); under autograd the error is computed from a
separate pass, so gradients reach both the features and, unchanged, the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule

KINDS = ("standard", "topk", "batchtopk", "jumprelu")
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


class SAE(HookedModule):
    """A sparse autoencoder on activations of width ``d_in``.

    Args:
        d_in: the activation width it reads (and writes back).
        width: how many features (SAELens's ``d_sae``).
        kind: ``standard``, ``topk``, ``batchtopk`` or ``jumprelu``.
        k: active features per row (``topk``; mean per row for ``batchtopk``).
        hook: the hook name it was trained on (informative; splicing names its own hooks).
        apply_b_dec_to_input: subtract ``b_dec`` before encoding (SAELens's default).
        normalize_activations: SAELens's input normalisation: ``none``, ``constant_norm_rescale``
            (scale rows to norm sqrt(d_in), undone on the output), ``layer_norm`` (likewise with
            mean and std), ``expected_average_only_in`` (a scale SAELens folds in when it knows it;
            like SAELens's own loader, nothing is applied here).
        reshape_activations: ``hook_z``: read ``[..., heads, d_head]`` as one ``d_in`` vector.
        rescale_acts_by_decoder_norm: ``topk`` chooses features by ``z * ||W_dec[i]||`` (SAELens).
        metadata: free-form JSON-able facts (model name, training settings), saved with it.
        dtype, device: of the parameters.
        seed: for the initial weights (decoder rows random unit vectors, encoder their transpose).
    """

    is_transcoder = False

    def __init__(
        self,
        d_in: int,
        width: int,
        kind: str = "standard",
        *,
        k: int | None = None,
        hook: str | None = None,
        apply_b_dec_to_input: bool = True,
        normalize_activations: str = "none",
        reshape_activations: str = "none",
        rescale_acts_by_decoder_norm: bool = False,
        metadata: Mapping[str, Any] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ):
        self._init(
            d_in,
            width,
            d_in,
            kind,
            k=k,
            hook=hook,
            hook_out=None,
            skip=False,
            apply_b_dec_to_input=apply_b_dec_to_input,
            normalize_activations=normalize_activations,
            reshape_activations=reshape_activations,
            rescale_acts_by_decoder_norm=rescale_acts_by_decoder_norm,
            metadata=metadata,
            dtype=dtype,
            device=device,
            seed=seed,
        )

    def _init(
        self,
        d_in: int,
        width: int,
        d_out: int,
        kind: str,
        *,
        k: int | None,
        hook: str | None,
        hook_out: str | None,
        skip: bool,
        apply_b_dec_to_input: bool,
        normalize_activations: str,
        reshape_activations: str,
        rescale_acts_by_decoder_norm: bool,
        metadata: Mapping[str, Any] | None,
        dtype: torch.dtype,
        device: torch.device | str | None,
        seed: int | None,
    ) -> None:
        super().__init__()
        check_shape_args(d_in=d_in, width=width, d_out=d_out, kind=kind, k=k)
        if normalize_activations not in NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations must be one of {', '.join(NORMALIZATIONS)}, got "
                f"{normalize_activations!r}"
            )
        if reshape_activations not in ("none", "hook_z"):
            raise ValueError(f"reshape_activations must be 'none' or 'hook_z', got {reshape_activations!r}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.d_in, self.width, self.d_out, self.kind, self.k = d_in, width, d_out, kind, k
        self.hook, self.hook_out = hook, hook_out
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.normalize_activations = normalize_activations
        self.reshape_activations = reshape_activations
        self.rescale_acts_by_decoder_norm = bool(rescale_acts_by_decoder_norm)
        self.metadata: dict[str, Any] = dict(metadata or {})

        g = torch.Generator().manual_seed(seed) if seed is not None else None
        w_dec = torch.randn(width, d_out, generator=g, dtype=torch.float64)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        if d_out == d_in:
            w_enc = w_dec.T.clone()
        else:
            w_enc = torch.randn(d_in, width, generator=g, dtype=torch.float64) / math.sqrt(d_in)
        kw: dict[str, Any] = dict(dtype=dtype, device=device)
        self.W_enc = nn.Parameter(w_enc.to(**kw).contiguous())
        self.b_enc = nn.Parameter(torch.zeros(width, **kw))
        self.W_dec = nn.Parameter(w_dec.to(**kw).contiguous())
        self.b_dec = nn.Parameter(torch.zeros(d_out, **kw))
        if kind in ("jumprelu", "batchtopk"):
            self.threshold = nn.Parameter(torch.zeros(width, **kw))
        if skip:
            self.W_skip = nn.Parameter(torch.zeros(d_out, d_in, **kw))

        self.hook_sae_input = HookPoint()
        self.hook_sae_acts_pre = HookPoint()
        self.hook_sae_acts_post = HookPoint()
        self.hook_sae_recons = HookPoint()
        self.hook_sae_error = HookPoint()
        self.hook_sae_output = HookPoint()

    # ------------------------------------------------------------------ facts
    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def d_sae(self) -> int:
        """SAELens's name for the width."""
        return self.width

    @property
    def has_skip(self) -> bool:
        return "W_skip" in self._parameters

    @property
    def config(self) -> dict[str, Any]:
        """The settings that rebuild it (what :func:`hooked.sae.save` writes beside the weights)."""
        return {
            "kind": self.kind,
            "d_in": self.d_in,
            "width": self.width,
            "d_out": self.d_out,
            "k": self.k,
            "hook": self.hook,
            "hook_out": self.hook_out,
            "skip": self.has_skip,
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": self.normalize_activations,
            "reshape_activations": self.reshape_activations,
            "rescale_acts_by_decoder_norm": self.rescale_acts_by_decoder_norm,
        }

    def extra_repr(self) -> str:
        what = f"{self.kind}, d_in={self.d_in}, width={self.width}"
        if self.is_transcoder:
            what += f", d_out={self.d_out}"
        if self.k is not None:
            what += f", k={self.k}"
        if self.hook:
            what += f", hook={self.hook!r}"
        return what

    # ------------------------------------------------------------------ the maps
    def encode(self, x: Tensor) -> Tensor:
        """Feature activations ``[..., width]`` of activations ``x [..., d_in]`` (through the hook
        points ``hook_sae_input``, ``hook_sae_acts_pre`` and ``hook_sae_acts_post``)."""
        flat = self._flat_input(x)
        z, _ = self._normalise(self.hook_sae_input(flat))
        return self.hook_sae_acts_post(self.activation(self.hook_sae_acts_pre(self.pre_activations(z))))

    def decode(self, acts: Tensor, x: Tensor | None = None) -> Tensor:
        """The reconstruction ``acts @ W_dec + b_dec`` ``[..., d_out]`` (through ``hook_sae_recons``).

        A transcoder with a skip connection also needs its input ``x``. For an SAE with
        ``normalize_activations`` of ``constant_norm_rescale`` / ``layer_norm`` this is in the
        normalised space (``forward`` undoes the normalisation of the row it read).
        """
        return self.hook_sae_recons(self._linear_out(acts, x))

    def forward(self, x: Tensor, *, error_term: bool = False) -> Tensor:
        """The reconstruction of ``x``; with ``error_term`` plus ``x - reconstruction`` (computed
        from un-edited features), which gives ``x`` back unless a hook edited something."""
        return self._run(x, x, error_term)

    def pre_activations(self, z: Tensor) -> Tensor:
        """``(z - b_dec) @ W_enc + b_enc`` (without the ``b_dec`` term where it does not apply)."""
        if self.apply_b_dec_to_input and not self.is_transcoder:
            z = z - self.b_dec
        pre = z @ self.W_enc + self.b_enc
        if self.kind == "topk" and self.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return pre

    def activation(self, pre: Tensor) -> Tensor:
        """The feature activations from the pre-activations (inference rule of the kind)."""
        if self.kind == "standard":
            return torch.relu(pre)
        if self.kind == "topk":
            assert self.k is not None  # check_shape_args refuses kind="topk" without k
            values, index = pre.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, index, torch.relu(values))
        return torch.relu(pre) * (pre > self.threshold)  # jumprelu, batchtopk

    # ------------------------------------------------------------------ internals
    def _linear_out(self, acts: Tensor, x: Tensor | None) -> Tensor:
        if self.kind == "topk" and self.rescale_acts_by_decoder_norm:
            acts = acts / self.W_dec.norm(dim=-1)
        out = acts @ self.W_dec + self.b_dec
        if self.has_skip:
            if x is None:
                raise ValueError("this transcoder has a skip connection: decode(acts, x) needs its input x")
            out = out + x @ self.W_skip.T
        return out

    def _run(self, x: Tensor, target: Tensor, error_term: bool) -> Tensor:
        flat = self._flat_input(x)
        sae_in = self.hook_sae_input(flat)
        edited = sae_in is not flat
        z, undo = self._normalise(sae_in)
        pre0 = self.pre_activations(z)
        pre = self.hook_sae_acts_pre(pre0)
        acts0 = self.activation(pre)
        acts = self.hook_sae_acts_post(acts0)
        rec0 = self._linear_out(acts, z)
        rec = self.hook_sae_recons(rec0)
        edited = edited or pre is not pre0 or acts is not acts0 or rec is not rec0
        out = undo(rec)
        if error_term:
            target = self._flat_target(target)
            grad = torch.is_grad_enabled() and (flat.requires_grad or self.W_enc.requires_grad)
            clean = self._plain(flat) if edited or grad else out
            out = out + self.hook_sae_error(target - clean)
        return self._unflat_output(self.hook_sae_output(out), x)

    def _plain(self, flat: Tensor) -> Tensor:
        """The reconstruction of ``flat`` with no hook point in the way (for the error term)."""
        z, undo = self._normalise(flat)
        return undo(self._linear_out(self.activation(self.pre_activations(z)), z))

    def _flat_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} needs a tensor of activations, got {type(x).__name__}")
        if self.reshape_activations == "hook_z" and x.dim() >= 2:
            x = x.flatten(-2)
        if x.shape[-1:] != (self.d_in,):
            raise ValueError(
                f"{type(self).__name__} reads activations of width d_in={self.d_in}, got shape "
                f"{tuple(x.shape)}"
            )
        if x.dtype != self.dtype:
            raise TypeError(
                f"{type(self).__name__} has {self.dtype} weights and got {x.dtype} activations; "
                f"convert one of them (sae.to({x.dtype}))"
            )
        return x

    def _flat_target(self, target: Tensor) -> Tensor:
        return target.flatten(-2) if self.reshape_activations == "hook_z" and target.dim() >= 2 else target

    def _unflat_output(self, out: Tensor, x: Tensor) -> Tensor:
        if self.reshape_activations == "hook_z" and x.dim() >= 2:
            return out.unflatten(-1, x.shape[-2:])
        return out

    def _normalise(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """SAELens's run-time input normalisation and the function that undoes it on an output."""
        mode = self.normalize_activations
        if mode == "constant_norm_rescale":
            coeff = math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True)
            return x * coeff, lambda y: y / coeff
        if mode == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            centred = x - mu
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + 1e-5), lambda y: y * std + mu
        return x, _same


def _same(y: Tensor) -> Tensor:
    return y


class Transcoder(SAE):
    """A transcoder: reads activations at one hook (``d_in``), predicts those at another (``d_out``).

    ``forward(x, target=y, error_term=True)`` returns the prediction plus ``y - prediction``
    (from un-edited features); without ``target`` it returns the prediction. ``skip=True`` adds a
    linear skip connection ``x @ W_skip.T`` (SAELens's ``skip_transcoder``). Inputs are never
    shifted by ``b_dec`` (it lives in the output space), and only ``normalize_activations="none"``.
    """

    is_transcoder = True

    def __init__(
        self,
        d_in: int,
        d_out: int,
        width: int,
        kind: str = "standard",
        *,
        k: int | None = None,
        hook: str | None = None,
        hook_out: str | None = None,
        skip: bool = False,
        metadata: Mapping[str, Any] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ):
        self._init(
            d_in,
            width,
            d_out,
            kind,
            k=k,
            hook=hook,
            hook_out=hook_out,
            skip=skip,
            apply_b_dec_to_input=False,
            normalize_activations="none",
            reshape_activations="none",
            rescale_acts_by_decoder_norm=False,
            metadata=metadata,
            dtype=dtype,
            device=device,
            seed=seed,
        )

    def forward(self, x: Tensor, target: Tensor | None = None, *, error_term: bool = False) -> Tensor:
        if error_term and target is None:
            raise ValueError(
                "Transcoder.forward(x, error_term=True) needs target= (the activation it predicts)"
            )
        if target is not None and target.shape[-1:] != (self.d_out,):
            raise ValueError(
                f"the transcoder predicts width d_out={self.d_out}, got a target of shape "
                f"{tuple(target.shape)}"
            )
        return self._run(x, x if target is None else target, error_term)

    def _unflat_output(self, out: Tensor, x: Tensor) -> Tensor:
        return out


def check_shape_args(*, d_in: Any, width: Any, d_out: Any, kind: Any, k: Any) -> None:
    """Clear errors for a dictionary's sizes (each named), before anything is built."""
    from hooked.checks import positive

    positive(d_in=d_in, width=width, d_out=d_out)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind in ("topk", "batchtopk"):
        if k is None:
            raise ValueError(f"kind={kind!r} needs k (active features per row)")
        positive(k=k)
        if k > width:
            raise ValueError(f"k={k} is larger than the width {width}: at most width features can be active")
    elif k is not None:
        positive(k=k)
