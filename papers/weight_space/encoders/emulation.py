"""The self-supervised objective that trains every encoder: emulation (``docs/methods/weight-space.md``).

An emulator LSTM receives a member's embedding at its first step and must reproduce that
member's output distribution along one of the member's stored sequences (self-sampled strings
for the formal languages, test images for the digits); the loss is the total variation distance
between the two distributions, averaged over steps. Encoder and emulator train together; the
embedding is the only path by which the emulator learns which member it imitates.

:func:`embed_zoo` computes frozen embeddings through the hook protocol (``hook_embed``), so the
downstream evaluation is written once for every encoder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from hooked.checkpoint import loadable
from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule
from hooked.typecheck import Float, typechecked
from papers.weight_space.encoders.base import WeightEncoder
from papers.weight_space.zoo.store import Zoo


@loadable
class Emulator(HookedModule):
    """An LSTM that imitates the member an embedding stands for.

    Hook points: ``hook_cond`` (the embedding's projection added to the first step's input,
    [N, hidden]), ``hook_lstm_out`` ([N, steps, hidden]), ``hook_logp`` ([N, steps, d_out]).

    Args:
        embed_dim: size of the embeddings it is conditioned on.
        d_in: input size of the emulated member.
        d_out: output size of the emulated member.
        hidden: LSTM width (the paper: 256).
        layers: LSTM layers (the paper: 2).
    """

    def __init__(self, embed_dim: int, d_in: int, d_out: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.config = dict(embed_dim=embed_dim, d_in=d_in, d_out=d_out, hidden=hidden, layers=layers)
        self.input_proj = nn.Linear(d_in, hidden)
        self.embed_proj = nn.Linear(embed_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, d_out)
        self.hook_cond = HookPoint()
        self.hook_lstm_out = HookPoint()
        self.hook_logp = HookPoint()

    @typechecked
    def forward(
        self, x: Float[Tensor, "n steps d_in"], z: Float[Tensor, "n embed"]
    ) -> Float[Tensor, "n steps d_out"]:
        inp = self.input_proj(x)
        cond = self.hook_cond(self.embed_proj(z))
        inp = torch.cat([inp[:, :1] + cond[:, None], inp[:, 1:]], dim=1)
        h, _ = self.lstm(inp)
        return self.hook_logp(self.out(self.hook_lstm_out(h)).log_softmax(-1))


def total_variation(logp: Tensor, target_logp: Tensor) -> Tensor:
    """Total variation distance per sequence, averaged over steps: [n, steps, V] x2 -> [n]."""
    return 0.5 * (logp.exp() - target_logp.exp()).abs().sum(-1).mean(-1)


@dataclass
class EmulationRun:
    encoder: WeightEncoder
    emulator: Emulator
    losses: list[float] = field(default_factory=list)  # training loss every 1% of steps
    seconds: float = 0.0


def _batch(zoo: Zoo, member: Tensor, seqs: int, generator: torch.Generator) -> tuple[dict, Tensor, Tensor]:
    pick = torch.randint(zoo.sequences.shape[1], (member.shape[0], seqs), generator=generator)
    rows = member[:, None].expand(-1, seqs)
    params = {k: v[member] for k, v in zoo.params.items()}
    return params, zoo.inputs(rows, pick).flatten(0, 1), zoo.targets(rows, pick).flatten(0, 1)


def emulation_loss(
    encoder: WeightEncoder, emulator: Emulator, params: dict, x: Tensor, target: Tensor
) -> Tensor:
    """Mean total variation of the emulation of each member's sequences (x, target: [M*seqs, ...])."""
    z = encoder(params)
    z = z.repeat_interleave(x.shape[0] // z.shape[0], dim=0)
    return total_variation(emulator(x, z), target).mean()


def train_emulation(
    encoder: WeightEncoder,
    zoo: Zoo,
    *,
    emulator: Emulator | None = None,
    emulator_hidden: int = 256,
    emulator_layers: int = 2,
    steps: int = 1000,
    members: int = 32,
    seqs: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    seed: int = 0,
    progress: bool | str = True,
) -> EmulationRun:
    """Train ``encoder`` (and an emulator) on the emulation objective over the members of ``zoo``.

    Args:
        zoo: the members to train on (the training split).
        steps: optimiser steps.
        members: members per batch.
        seqs: stored sequences per member and batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        clip: gradient-norm clipping.
    """
    from tqdm.auto import tqdm

    if emulator is None:
        emulator = Emulator(
            encoder.embed_dim, zoo.layout.d_in, zoo.layout.d_out, emulator_hidden, emulator_layers
        )
    gen = torch.Generator().manual_seed(seed)
    modules = nn.ModuleList([encoder, emulator])
    opt = torch.optim.AdamW(modules.parameters(), lr=lr, weight_decay=weight_decay)
    run = EmulationRun(encoder, emulator)
    encoder.train()
    emulator.train()
    every = max(1, steps // 100)
    started = time.perf_counter()
    bar = tqdm(
        range(steps),
        desc=progress if isinstance(progress, str) else type(encoder).__name__,
        disable=not progress,
        leave=False,
    )
    for step in bar:
        member = torch.randint(len(zoo), (min(members, len(zoo)),), generator=gen)
        params, x, target = _batch(zoo, member, seqs, gen)
        loss = emulation_loss(encoder, emulator, params, x, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(modules.parameters(), clip)
        opt.step()
        if step % every == 0 or step == steps - 1:
            run.losses.append(loss.item())
            bar.set_postfix(tv=f"{run.losses[-1]:.3f}")
    run.seconds = time.perf_counter() - started
    encoder.eval()
    emulator.eval()
    return run


@torch.no_grad()
def emulation_error(
    encoder: WeightEncoder, emulator: Emulator, zoo: Zoo, *, seqs: int = 4, batch: int = 64
) -> float:
    """Mean total variation of the emulation over all members of ``zoo`` and their first ``seqs``
    sequences."""
    encoder.eval()
    emulator.eval()
    seqs = min(seqs, zoo.sequences.shape[1])
    total, count = 0.0, 0
    for start in range(0, len(zoo), batch):
        member = torch.arange(start, min(start + batch, len(zoo)))
        rows = member[:, None].expand(-1, seqs)
        pick = torch.arange(seqs).expand(len(member), -1)
        params = {k: v[member] for k, v in zoo.params.items()}
        loss = emulation_loss(
            encoder,
            emulator,
            params,
            zoo.inputs(rows, pick).flatten(0, 1),
            zoo.targets(rows, pick).flatten(0, 1),
        )
        total += loss.item() * len(member)
        count += len(member)
    return total / max(count, 1)


@torch.no_grad()
def embed_zoo(encoder, zoo: Zoo, *, batch: int = 64, hook: str = "hook_embed") -> Tensor:
    """[N, embed_dim] embeddings of every member, read at ``hook`` through the hook protocol."""
    from hooked.protocol import collect_activations

    was_training = encoder.training
    encoder.eval()
    try:
        batches = [({k: v[s : s + batch] for k, v in zoo.params.items()},) for s in range(0, len(zoo), batch)]
        return collect_activations(encoder, batches, hook)[hook]
    finally:
        encoder.train(was_training)
