"""Onion (magnitude) interventions and probes: tokens stored by *scale*, not by subspace.

The onion hypothesis (Csordás et al. 2024) is that a small GRU stores a sequence as a sum of
token codes at position-dependent magnitudes, h ≈ Σ_p s(p) ⊙ c(x_p), so that the tokens share
one subspace and no linear (subspace) intervention can swap one of them; a change of the token at
position p must instead be undone by the right *amount* of its code.

* :class:`OnionIntervention`: given the state h~ of an input whose token at position p was
  changed from ``old`` to ``new``, restore the original:
  h' = h~ + s(p) ⊙ (tanh(E[old]) - tanh(E[new])), s(p) = g ⊙ gamma^p + p ⊙ lambda + beta, with
  g, gamma, lambda, beta per-dimension learned vectors (init 1, 0.9, 1, 0) and E a learned token
  code. It needs no source run; the task glue passes ``old``, ``new``, ``pos`` per row.
* :class:`OnionProbe`: read the tokens out one by one: logits_p = MLP(LayerNorm(h)), then peel
  the token's code off, h <- h - E[tok] ⊙ s(p) (tok teacher-forced while training, argmax at
  evaluation; lambda init 0.1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hooked.checks import finite_number, index_tensor, positive
from hooked.typecheck import Float, Int, typechecked
from interventions.intervention import Intervention
from interventions.probes import TokenProbe


class OnionScale(nn.Module):
    """s(p) = g ⊙ gamma^p + p ⊙ lambda + beta, per-dimension vectors of size d."""

    def __init__(self, d: int, *, g: float = 1.0, gamma: float = 0.9, lam: float = 1.0, beta: float = 0.0):
        super().__init__()
        positive(d=d)
        g, gamma, lam, beta = (
            finite_number(k, v) for k, v in (("g", g), ("gamma", gamma), ("lam", lam), ("beta", beta))
        )
        self.g = nn.Parameter(torch.full((d,), float(g)))
        self.gamma = nn.Parameter(torch.full((d,), float(gamma)))
        self.lam = nn.Parameter(torch.full((d,), float(lam)))
        self.beta = nn.Parameter(torch.full((d,), float(beta)))

    def forward(self, pos: Tensor) -> Tensor:
        """[batch] positions (0-based) -> [batch, d] scales."""
        p = pos.to(self.g.dtype)[:, None]
        return self.g * self.gamma.pow(p) + p * self.lam + self.beta


class OnionIntervention(Intervention):
    """Replace the token at position ``pos`` by adding back its scaled code (no source run).

    Args:
        d: size of the activation.
        n_symbols: token vocabulary.
        gamma, g, lam, beta: initial values of the scaling s(p) = g * gamma^p + p * lam + beta.
        seed: seed of the token code E.
    """

    uses_source = False

    def __init__(
        self,
        d: int,
        n_symbols: int,
        *,
        gamma: float = 0.9,
        g: float = 1.0,
        lam: float = 1.0,
        beta: float = 0.0,
        seed: int | None = None,
    ):
        super().__init__()
        positive(d=d, n_symbols=n_symbols)
        self.code = nn.Embedding(n_symbols, d)
        if seed is not None:
            with torch.no_grad():
                self.code.weight.copy_(
                    torch.randn(n_symbols, d, generator=torch.Generator().manual_seed(seed))
                )
        self.scale = OnionScale(d, g=g, gamma=gamma, lam=lam, beta=beta)

    @typechecked
    def forward(
        self,
        base: Float[Tensor, "batch d"],
        source: Tensor | None = None,
        *,
        old: Int[Tensor, " batch"],
        new: Int[Tensor, " batch"],
        pos: Int[Tensor, " batch"],
    ) -> Float[Tensor, "batch d"]:
        """``base`` holds ``new`` at ``pos``; return the state as if it held ``old``."""
        n, d = self.code.weight.shape
        if base.shape[-1] != d:
            raise ValueError(
                f"OnionIntervention: the activation has {base.shape[-1]} features, made for d={d}"
            )
        index_tensor("old", old, n, axis="the token codes")
        index_tensor("new", new, n, axis="the token codes")
        if bool((pos < 0).any()):
            raise ValueError(
                f"OnionIntervention: pos must be >= 0 (0-based positions), got {pos.min().item()}"
            )
        delta = torch.tanh(self.code(old)) - torch.tanh(self.code(new))
        return base + self.scale(pos) * delta


class OnionProbe(TokenProbe):
    """Sequential read-out that subtracts each decoded token's scaled code before the next.

    Args:
        d: size of the activation.
        n_symbols: token vocabulary.
        max_len: positions to read out.
        gamma, g, lam, beta: initial values of s(p) (lambda 0.1 as in the paper's probe).
    """

    def __init__(
        self,
        d: int,
        n_symbols: int,
        max_len: int,
        *,
        gamma: float = 0.9,
        g: float = 1.0,
        lam: float = 0.1,
        beta: float = 0.0,
    ):
        super().__init__()
        positive(d=d, n_symbols=n_symbols, max_len=max_len)
        self.n_symbols, self.max_len = n_symbols, max_len
        self.norm = nn.LayerNorm(d)
        self.cls = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_symbols))
        self.code = nn.Embedding(n_symbols, d)
        self.scale = OnionScale(d, g=g, gamma=gamma, lam=lam, beta=beta)

    @typechecked
    def forward(
        self, h: Float[Tensor, "n d"], tokens: Int[Tensor, "n time"] | None = None
    ) -> Float[Tensor, "n pos symbols"]:
        logits = []
        for p in range(self.max_len):
            step_logits = self.cls(self.norm(h))
            logits.append(step_logits)
            if tokens is not None and p < tokens.shape[1]:
                tok = tokens[:, p]
            else:
                tok = step_logits.argmax(-1)
            pos = torch.full((h.shape[0],), p, device=h.device)
            h = h - self.code(tok) * self.scale(pos)
        return torch.stack(logits, dim=1)
