"""Small hooked models shared by the tests: an MLP stack, its sequence versions, a hand-unrolled RNN."""

from __future__ import annotations

import torch
from torch import nn

import hooked


class MLPStack(hooked.HookedModule):
    """Residual MLP blocks with a hook point before and after each block."""

    def __init__(self, d: int = 8, n_blocks: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n_blocks))
        self.hook_out = hooked.HookPoint()

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.hook_out(x)


class SeqMLP(MLPStack):
    """The MLP stack on [batch, pos, d] sequences, mixing positions at the end (nonlinear)."""

    def forward(self, x):
        return super().forward(x).cumsum(dim=1)


class SeqLinear(hooked.HookedModule):
    """A linear model of sequences from ``hook_mid`` on: attribution patching is exact on it."""

    def __init__(self, d=5):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b = nn.Linear(d, d), nn.Linear(d, 3)
        self.hook_mid = hooked.HookPoint()

    def forward(self, x):
        return self.b(self.hook_mid(self.a(x)).cumsum(dim=1))


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.hook_resid_pre = hooked.HookPoint()
        self.hook_mlp_out = hooked.HookPoint()

    def forward(self, x):
        x = self.hook_resid_pre(x)
        return x + self.hook_mlp_out(torch.tanh(self.lin(x)))


class TinyRNN(hooked.HookedModule):
    """h_t = tanh(W h_{t-1} + U x_t), with a recurrent hook point on every h_t."""

    def __init__(self, d_in: int = 3, d: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(d, d, generator=g) * 0.5)
        self.U = nn.Parameter(torch.randn(d, d_in, generator=g) * 0.5)
        self.hook_h = hooked.HookPoint(recurrent=True)

    def forward(self, x):  # x: [batch, time, d_in]
        h = x.new_zeros(x.shape[0], self.W.shape[0])
        outs = []
        for t in range(x.shape[1]):
            h = self.hook_h(torch.tanh(h @ self.W.T + x[:, t] @ self.U.T))
            outs.append(h)
        return torch.stack(outs, dim=1)

    def manual(self, x, edit=None):
        """The same recurrence written out, with an optional edit(t, h) -> h."""
        h = x.new_zeros(x.shape[0], self.W.shape[0])
        outs = []
        for t in range(x.shape[1]):
            h = torch.tanh(h @ self.W.T + x[:, t] @ self.U.T)
            if edit is not None:
                h = edit(t, h)
            outs.append(h)
        return torch.stack(outs, dim=1)
