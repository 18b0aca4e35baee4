"""Probes that read the tokens a state stores: which token sits at each position of the input.

A probe maps a stored activation h ([n, d], e.g. the repeat model's ``hook_memory`` collected
with :func:`hooked.protocol.collect_activations`) to logits [n, max_len, n_symbols] for the
token at each position; it is trained with cross-entropy over the positions inside each row's
length, and scored by whole-sequence exact match (the same accuracy as the model's).

* :class:`TokenProbe`: the shared ``fit`` / ``accuracy`` (and the teacher-forcing switch that
  sequential probes such as :class:`interventions.onion.OnionProbe` use).
* :class:`SequenceProbe`: the baselines of the onion paper: ``hidden=None`` is a linear probe
  (one ``Linear(d, max_len * n_symbols)``), ``hidden=H`` an MLP with one hidden ReLU layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hooked.typecheck import Float, Int, typechecked


def _valid(lengths: Tensor, steps: int) -> Tensor:
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class TokenProbe(nn.Module):
    """Base class: ``forward(h, tokens=None) -> logits [n, max_len, n_symbols]``; ``tokens`` is
    the teacher-forced sequence for probes that read their own earlier predictions."""

    n_symbols: int
    max_len: int

    def forward(self, h: Tensor, tokens: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def loss(self, h: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        logits = self(h, tokens)
        valid = _valid(lengths, self.max_len)
        return F.cross_entropy(logits[valid], _pad(tokens, self.max_len)[valid])

    @typechecked
    def fit(
        self,
        acts: Float[Tensor, "n d"],
        tokens: Int[Tensor, "n time"],
        lengths: Int[Tensor, " n"],
        *,
        steps: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        seed: int = 0,
        progress: bool | str = True,
    ) -> list[float]:
        """Train on (activation, token sequence) pairs with AdamW; returns the loss every 1%."""
        from tqdm.auto import tqdm

        device = next(self.parameters()).device
        acts, tokens, lengths = acts.to(device), tokens.to(device), lengths.to(device)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
        losses: list[float] = []
        every = max(1, steps // 100)
        self.train()
        bar = tqdm(
            range(steps),
            desc=progress if isinstance(progress, str) else type(self).__name__,
            disable=not progress,
            leave=False,
        )
        for step in bar:
            idx = torch.randint(acts.shape[0], (batch_size,), generator=g).to(device)
            loss = self.loss(acts[idx], tokens[idx], lengths[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % every == 0 or step == steps - 1:
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3g}")
        self.eval()
        return losses

    @torch.no_grad()
    def accuracy(self, acts: Tensor, tokens: Tensor, lengths: Tensor, batch_size: int = 4096) -> float:
        """Fraction of rows whose every token (inside the length) is predicted, without teacher forcing."""
        self.eval()
        device = next(self.parameters()).device
        hits = 0
        for i in range(0, acts.shape[0], batch_size):
            h = acts[i : i + batch_size].to(device)
            t = _pad(tokens[i : i + batch_size].to(device), self.max_len)
            valid = _valid(lengths[i : i + batch_size].to(device), self.max_len)
            pred = self(h).argmax(-1)
            hits += int(((pred == t) | ~valid).all(dim=1).sum())
        return hits / max(acts.shape[0], 1)


def _pad(tokens: Tensor, width: int) -> Tensor:
    return F.pad(tokens, (0, width - tokens.shape[1])) if tokens.shape[1] < width else tokens[:, :width]


class SequenceProbe(TokenProbe):
    """Linear (``hidden=None``) or one-hidden-layer MLP probe of all positions at once.

    Args:
        d: size of the activation.
        n_symbols: token vocabulary.
        max_len: positions to read out.
        hidden: hidden width of the MLP (None: linear probe).
    """

    def __init__(self, d: int, n_symbols: int, max_len: int, hidden: int | None = None):
        super().__init__()
        self.n_symbols, self.max_len = n_symbols, max_len
        out = max_len * n_symbols
        self.net = (
            nn.Linear(d, out)
            if hidden is None
            else nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, out))
        )

    @typechecked
    def forward(
        self, h: Float[Tensor, "n d"], tokens: Tensor | None = None
    ) -> Float[Tensor, "n pos symbols"]:
        return self.net(h).unflatten(-1, (self.max_len, self.n_symbols))
