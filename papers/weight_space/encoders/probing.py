"""Functionalist encoders: they learn what to ask an RNN and embed its answers
(``docs/methods/weight-space.md``).

A core (a residual stack of LSTM cells) reads a BOS vector, then the target RNN's outputs on
``probes`` parallel probe sequences, one step at a time, then an EOS vector; its final output
goes through an MLP to the embedding. The target RNN runs *as a function of its parameters*
(:func:`~papers.weight_space.zoo.lstm.stacked_lstm`, all M targets of a batch at once, its state
carried from probe step to probe step): gradients flow through the target's computation into
the probe inputs and the core, never into the zoo's parameters, which are detached.

* **non-interactive** (``interactive=False``): the probe inputs are learned and static, the
  same for every target (decoded from one learned vector per step), so the target runs over the
  whole probe sequence in one call.
* **interactive** (``interactive=True``): the probe input at step t is decoded from the core's
  output after it read the answers to steps < t, so the questions adapt to the answers.

Hook points (per probe step, ``hook.step`` = t): ``hook_probe_in`` [M, probes, d_in] (editable:
an edit changes what the target is asked), ``hook_probe_out`` [M, probes, d_out] (the target's
answer: its output log-probabilities), ``hook_core`` [M, core] (per core step: BOS, T answers, EOS), and
``hook_embed``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from hooked.checkpoint import loadable
from hooked.hook_point import HookPoint
from papers.weight_space.encoders.base import HookedMLP, WeightEncoder
from papers.weight_space.zoo.lstm import stacked_lstm


@loadable
class ProbingEncoder(WeightEncoder):
    """Probing encoder (interactive or not) of RNN weights.

    Args:
        layout: the zoo member's sizes.
        interactive: decode each probe from the core's current state (else static learned probes).
        probe_steps: probe sequence length T (the paper: 22 for the formal languages).
        probes: parallel probe sequences P.
        core: width of the core LSTM (the paper: 256).
        core_layers: layers of the residual core (the paper: 2).
        hidden: hidden size of the decoder / readout MLPs.
        embed_dim: embedding size.
        probe_input: "softmax" (a distribution over input symbols) or "sigmoid" (values in
            ``probe_range``).
        probe_range: (low, high) of sigmoid probe inputs, e.g. the range of the zoo's input data.
    """

    family = "functionalist"

    def __init__(
        self,
        layout,
        *,
        interactive: bool = True,
        probe_steps: int = 22,
        probes: int = 1,
        core: int = 256,
        core_layers: int = 2,
        hidden: int = 128,
        embed_dim: int = 16,
        probe_input: str = "softmax",
        probe_range: tuple[float, float] = (0.0, 1.0),
    ):
        super().__init__(layout, embed_dim)
        if probe_input not in ("softmax", "sigmoid"):
            raise ValueError(
                f"ProbingEncoder: probe_input must be 'softmax' or 'sigmoid', got {probe_input!r}"
            )
        self.config = dict(
            layout=self.layout.to_json(),
            interactive=interactive,
            probe_steps=probe_steps,
            probes=probes,
            core=core,
            core_layers=core_layers,
            hidden=hidden,
            embed_dim=embed_dim,
            probe_input=probe_input,
            probe_range=[float(probe_range[0]), float(probe_range[1])],
        )
        self.interactive, self.steps, self.probes, self.probe_input = (
            interactive,
            probe_steps,
            probes,
            probe_input,
        )
        self.probe_low, self.probe_high = float(probe_range[0]), float(probe_range[1])
        d_in, d_out = self.layout.d_in, self.layout.d_out
        self.cells = nn.ModuleList(nn.LSTMCell(core, core) for _ in range(core_layers))
        self.bos = nn.Parameter(torch.zeros(core))
        self.eos = nn.Parameter(torch.zeros(core))
        if not interactive:
            self.static = nn.Parameter(torch.randn(probe_steps, core))
        self.decoder = HookedMLP([core, hidden, probes * d_in])
        self.reader = HookedMLP([probes * d_out, core])
        self.readout = HookedMLP([core, hidden, embed_dim])
        self.hook_probe_in = HookPoint(recurrent=True)
        self.hook_probe_out = HookPoint(recurrent=True)
        self.hook_core = HookPoint(recurrent=True)

    # ------------------------------------------------------------------ pieces
    def _probe(self, code: Tensor) -> Tensor:
        """Decode [..., core] -> probe inputs [..., probes, d_in]."""
        raw = self.decoder(code).unflatten(-1, (self.probes, self.layout.d_in))
        if self.probe_input == "softmax":
            return raw.softmax(-1)
        return self.probe_low + (self.probe_high - self.probe_low) * torch.sigmoid(raw)

    def _read(self, answers: Tensor) -> Tensor:
        """The target's answers (log-probabilities [M, probes, d_out]) -> a core input [M, core]."""
        return torch.sigmoid(self.reader(answers.flatten(1)))

    def _core_step(self, x: Tensor, state: list[tuple[Tensor, Tensor]], step: int) -> Tensor:
        for i, cell in enumerate(self.cells):
            h, c = cell(x, state[i])
            state[i] = (h, c)
            x = x + h  # residual
        return self.hook_core(x, step=step)

    # ------------------------------------------------------------------ forward
    def encode(self, params: Mapping[str, Tensor]) -> Tensor:
        target = {k: v.detach() for k, v in params.items()}  # the zoo is data: no gradient into it
        m = target["head.weight"].shape[0]
        core = self.bos.shape[0]
        zeros = self.bos.new_zeros(m, core)
        state = [(zeros, zeros) for _ in self.cells]
        out = self._core_step(self.bos.expand(m, -1), state, 0)
        if self.interactive:
            target_state = None
            for t in range(self.steps):
                probe = self.hook_probe_in(self._probe(out), step=t)
                logits, target_state = stacked_lstm(target, probe[:, :, None], target_state)
                answer = self.hook_probe_out(logits[:, :, 0].log_softmax(-1), step=t)
                out = self._core_step(self._read(answer), state, t + 1)
        else:
            static = self._probe(self.static)  # [T, probes, d_in], the same for every target
            probes = [self.hook_probe_in(static[t].expand(m, -1, -1), step=t) for t in range(self.steps)]
            logits, _ = stacked_lstm(target, torch.stack(probes, dim=2))  # [M, probes, T, d_out]
            answers = logits.log_softmax(-1)
            for t in range(self.steps):
                answer = self.hook_probe_out(answers[:, :, t], step=t)
                out = self._core_step(self._read(answer), state, t + 1)
        out = self._core_step(self.eos.expand(m, -1), state, self.steps + 1)
        return self.readout(out)
