"""The repeat task of the onion-representation paper (``docs/methods/onion.md``): data, model,
training, accuracy.

One recurrent layer reads a token sequence x_1..x_L; the *same* layer and embedding then continue
from the final state as a decoder that must output x_1..x_L again. Decoder inputs are
``[SOS, x_1..x_{L-1}]`` teacher-forced ("autoregressive") or ``[SOS, NOI, NOI, ...]``
(``no_input=True``). The final encoder state is the model's ``hook_memory``: where the
interventions of ``interventions/`` act.

* :func:`make_repeat_data`: unique random sequences (lengths uniform in [min_len, max_len]) with a
  held-out validation split (at most 20% of all sequences of any one length, as in the paper).
* :class:`RepeatModel`: ``Embedding -> HookedGRU | HookedLSTM -> Linear``; hook points
  ``hook_memory`` ([batch, N] for a GRU; [batch, 2N] = [h; c] for an LSTM) and the layer's own
  per-step points ``rnn.hook_h_l0`` etc. on one time axis: encoder steps 0..T-1, decoder steps
  T..2T-1 (T = the padded length of the batch).
* :func:`train_repeat` (AdamW, tqdm), :func:`sequence_loss`, :func:`exact_match`,
  :func:`evaluate`; checkpoints go through :mod:`hooked.checkpoint` (safetensors + JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from hooked.checkpoint import loadable
from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule
from hooked.models.rnn import HookedGRU, HookedLSTM
from hooked.typecheck import Bool, Float, Int, typechecked

Cell = Literal["gru", "lstm"]


# ---------------------------------------------------------------------- data
@dataclass
class RepeatSplit:
    """Token sequences padded with 0 past their length: ``tokens`` [n, max_len], ``lengths`` [n]."""

    tokens: Tensor
    lengths: Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(tokens, lengths)`` of the rows ``index``, trimmed to their longest sequence."""
        lengths = self.lengths[index].long()
        width = int(lengths.max()) if lengths.numel() else 0
        return self.tokens[index, :width].long(), lengths

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A random batch (rows drawn uniformly, with replacement across calls)."""
        return self.batch(torch.randint(len(self), (batch_size,), generator=generator))

    def batches(self, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """The whole split in order, as batches."""
        return [
            self.batch(torch.arange(i, min(i + batch_size, len(self))))
            for i in range(0, len(self), batch_size)
        ]

    def keys(self, n_symbols: int) -> Tensor:
        return sequence_keys(self.tokens, self.lengths, n_symbols)

    def to_tensors(self) -> dict[str, Tensor]:
        return {"tokens": self.tokens, "lengths": self.lengths}


def sequence_keys(tokens: Tensor, lengths: Tensor, n_symbols: int) -> Tensor:
    """One int64 per sequence, equal exactly when (length, tokens) are equal."""
    max_len = tokens.shape[1]
    if (n_symbols + 1) ** max_len >= 2**62:
        raise ValueError(f"sequence_keys: {n_symbols} symbols x length {max_len} do not fit an int64 key")
    pos = torch.arange(max_len)
    digits = torch.where(pos[None, :] < lengths[:, None], tokens.long() + 1, 0)
    return (digits * (n_symbols + 1) ** pos).sum(dim=1)


def _candidates(
    n: int, n_symbols: int, min_len: int, max_len: int, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    tokens = torch.randint(n_symbols, (n, max_len), generator=g)
    tokens = torch.where(torch.arange(max_len)[None, :] < lengths[:, None], tokens, 0)
    return tokens, lengths


def _dedupe(
    tokens: Tensor, lengths: Tensor, keys: Tensor, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Unique sequences, in random order."""
    _, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), keys.numel(), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(keys.numel()), reduce="amin")
    keep = first[torch.randperm(first.numel(), generator=g)]
    return tokens[keep], lengths[keep], keys[keep]


def sample_unique(
    n: int,
    *,
    n_symbols: int = 30,
    min_len: int = 2,
    max_len: int = 9,
    exclude: Tensor | None = None,
    max_fraction_per_length: float | None = None,
    generator: torch.Generator | None = None,
    max_rounds: int = 50,
) -> RepeatSplit:
    """``n`` distinct random sequences (lengths uniform, tokens i.i.d. uniform), none of whose keys
    are in ``exclude``; with ``max_fraction_per_length``, at most that fraction of all possible
    sequences of any one length."""
    g = generator or torch.Generator().manual_seed(0)
    caps = None
    if max_fraction_per_length is not None:
        caps = torch.tensor(
            [0] * min_len + [int(n_symbols**k * max_fraction_per_length) for k in range(min_len, max_len + 1)]
        )
    possible = sum(n_symbols**k for k in range(min_len, max_len + 1)) if caps is None else int(caps.sum())
    if possible - (0 if exclude is None else exclude.numel()) < n:
        raise ValueError(
            f"sample_unique: only {possible} sequences of lengths {min_len}..{max_len} exist; asked for {n}"
        )
    tokens = torch.zeros(0, max_len, dtype=torch.long)
    lengths = torch.zeros(0, dtype=torch.long)
    for _ in range(max_rounds):
        missing = n - tokens.shape[0]
        if missing <= 0:
            break
        t, ln = _candidates(int(missing * 1.3) + 1000, n_symbols, min_len, max_len, g)
        tokens, lengths = torch.cat([tokens, t]), torch.cat([lengths, ln])
        keys = sequence_keys(tokens, lengths, n_symbols)
        if exclude is not None:
            fresh = ~torch.isin(keys, exclude)
            tokens, lengths, keys = tokens[fresh], lengths[fresh], keys[fresh]
        tokens, lengths, keys = _dedupe(tokens, lengths, keys, g)
        if caps is not None:  # keep the first cap[L] sequences of each length L
            order = torch.argsort(lengths, stable=True)
            sorted_len = lengths[order]
            rank = torch.arange(order.numel()) - torch.searchsorted(sorted_len, sorted_len)
            keep = torch.zeros_like(lengths, dtype=torch.bool)
            keep[order] = rank < caps[sorted_len]
            tokens, lengths = tokens[keep], lengths[keep]
    if tokens.shape[0] < n:
        raise RuntimeError(f"sample_unique: found only {tokens.shape[0]} of {n} distinct sequences")
    return RepeatSplit(tokens[:n].to(torch.int16), lengths[:n].to(torch.int16))


@dataclass
class RepeatData:
    """A training pool and a held-out validation split, disjoint and each free of duplicates."""

    train: RepeatSplit
    valid: RepeatSplit
    n_symbols: int
    min_len: int
    max_len: int


def make_repeat_data(
    *,
    n_symbols: int = 30,
    min_len: int = 2,
    max_len: int = 9,
    n_train: int = 1_000_000,
    n_valid: int = 5000,
    seed: int = 0,
) -> RepeatData:
    """The task's data (``docs/methods/onion.md``): ``n_valid`` held-out sequences (at most 20% of any
    length's possible sequences), then ``n_train`` distinct training sequences none of which is held
    out."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"make_repeat_data: need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    g = torch.Generator().manual_seed(seed)
    kw = dict(n_symbols=n_symbols, min_len=min_len, max_len=max_len, generator=g)
    valid = sample_unique(n_valid, max_fraction_per_length=0.2, **kw)
    train = sample_unique(n_train, exclude=valid.keys(n_symbols), **kw)
    return RepeatData(train, valid, n_symbols, min_len, max_len)


# ---------------------------------------------------------------------- model
@loadable
class RepeatModel(HookedModule):
    """``Embedding(n_symbols + 2, E) -> GRU or LSTM (E -> N) -> Linear(N, n_symbols)``, one
    recurrent layer used as encoder and, from the encoder's final state, as decoder.

    Args:
        cell: "gru" or "lstm".
        hidden_size: N, the state size.
        n_symbols: symbols of the task; SOS = n_symbols, NOI = n_symbols + 1.
        embedding_size: E (default N).
        no_input: the decoder reads [SOS, NOI, NOI, ...] instead of the previous target tokens.
    """

    def __init__(
        self,
        cell: Cell = "gru",
        hidden_size: int = 128,
        n_symbols: int = 30,
        embedding_size: int | None = None,
        no_input: bool = False,
    ):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"RepeatModel: cell must be 'gru' or 'lstm', got {cell!r}")
        self.config = dict(
            cell=cell,
            hidden_size=hidden_size,
            n_symbols=n_symbols,
            embedding_size=embedding_size,
            no_input=no_input,
        )
        e = embedding_size or hidden_size
        self.cell, self.n_symbols, self.no_input = cell, n_symbols, no_input
        self.sos, self.noi = n_symbols, n_symbols + 1
        self.embedding = nn.Embedding(n_symbols + 2, e)
        self.rnn = (HookedGRU if cell == "gru" else HookedLSTM)(e, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, n_symbols)
        self.hook_memory = HookPoint()

    @property
    def memory_size(self) -> int:
        """Size of ``hook_memory``: N for a GRU, 2N ([h; c]) for an LSTM."""
        return self.rnn.hidden_size * (2 if self.cell == "lstm" else 1)

    def encode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The state after reading each row's x_1..x_L: [batch, memory_size] (at ``hook_memory``)."""
        emb = self.embedding(x)
        if lengths is not None and bool((lengths != x.shape[1]).any()):
            emb = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(emb)
        memory = state[0] if self.cell == "gru" else torch.cat([state[0][0], state[1][0]], dim=-1)
        return self.hook_memory(memory)

    def decode(self, memory: Tensor, target: Tensor) -> Tensor:
        """Logits [batch, T, n_symbols] of the decoder started from ``memory``; ``target`` gives the
        teacher-forced inputs (unused with ``no_input``) and T. Outputs past a row's length are
        computed but meaningless."""
        batch, steps = target.shape
        if self.no_input:
            dec_in = torch.full_like(target, self.noi)
        else:
            dec_in = target.roll(1, dims=1)
        dec_in[:, 0] = self.sos
        if self.cell == "gru":
            hx = memory[None]
        else:
            h, c = memory.split(self.rnn.hidden_size, dim=-1)
            hx = (h[None].contiguous(), c[None].contiguous())
        out, _ = self.rnn(self.embedding(dec_in), hx, step_offset=steps)
        return self.fc(out)

    @typechecked
    def forward(
        self,
        x: Int[Tensor, "batch time"],
        lengths: Int[Tensor, " batch"] | None = None,
        target: Int[Tensor, "batch time"] | None = None,
    ) -> Float[Tensor, "batch time symbols"]:
        """Encode ``x`` (rows of ``lengths``; padding past them is ignored), decode from the memory
        teacher-forced with ``target`` (default ``x``: the task's target is the input)."""
        return self.decode(self.encode(x, lengths), x if target is None else target)


# ---------------------------------------------------------------------- loss, accuracy, training
def _valid(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor:
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


@typechecked
def sequence_loss(
    logits: Float[Tensor, "batch time symbols"],
    target: Int[Tensor, "batch time"],
    lengths: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, ""]:
    """Cross-entropy averaged over the positions inside each row's length."""
    valid = _valid(lengths, *target.shape, target.device)
    return F.cross_entropy(logits[valid], target[valid])


@typechecked
def exact_match(
    logits: Float[Tensor, "batch time symbols"],
    target: Int[Tensor, "batch time"],
    lengths: Int[Tensor, " batch"] | None = None,
) -> Bool[Tensor, " batch"]:
    """Per row: every position inside its length predicted (argmax) correctly."""
    valid = _valid(lengths, *target.shape, target.device)
    return ((logits.argmax(-1) == target) | ~valid).all(dim=1)


@torch.no_grad()
def evaluate(model: RepeatModel, split: RepeatSplit, batch_size: int = 2048) -> float:
    """Whole-sequence exact-match accuracy of ``model`` on ``split``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    hits = 0
    for x, lengths in split.batches(batch_size):
        x, lengths = x.to(device), lengths.to(device)
        hits += int(exact_match(model(x, lengths), x, lengths).sum())
    model.train(was_training)
    return hits / max(len(split), 1)


def train_repeat(
    model: RepeatModel,
    data: RepeatData,
    *,
    steps: int = 40_000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    seed: int = 0,
    eval_every: int | None = None,
    progress: bool | str = True,
    callback: Callable[[int, float], None] | None = None,
) -> dict[str, list]:
    """Train on random batches of the training pool (AdamW, constant LR, as in the paper).

    Returns the training loss every 1% of the steps and the validation accuracy every
    ``eval_every`` steps (default: 10 times) and at the end.
    """
    from tqdm.auto import tqdm

    from hooked.typecheck import disabled

    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    eval_every = eval_every or max(1, steps // 10)
    every = max(1, steps // 100)
    history: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "valid_accuracy": []}
    model.train()
    bar = tqdm(
        range(steps),
        desc=progress if isinstance(progress, str) else "repeat task",
        disable=not progress,
        leave=False,
    )
    with disabled():  # shape checks cost more than these tiny steps on a CPU
        for step in bar:
            x, lengths = data.train.sample(batch_size, g)
            x, lengths = x.to(device), lengths.to(device)
            loss = sequence_loss(model(x, lengths), x, lengths)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % every == 0 or step == steps - 1:
                history["step"].append(step)
                history["loss"].append(loss.item())
                bar.set_postfix(loss=f"{history['loss'][-1]:.3g}")
                if callback is not None:
                    callback(step, history["loss"][-1])
            if (step + 1) % eval_every == 0 or step == steps - 1:
                if not history["eval_step"] or history["eval_step"][-1] != step + 1:
                    history["eval_step"].append(step + 1)
                    history["valid_accuracy"].append(evaluate(model, data.valid))
                    model.train()
    model.eval()
    return history


# ---------------------------------------------------------------------- registered models
def _example(
    cell: Cell, hidden_size: int, no_input: bool, batch_size: int, seed: int
) -> tuple[RepeatModel, tuple[Tensor, Tensor]]:
    from hooked.checks import positive

    positive(hidden_size=hidden_size, batch_size=batch_size)
    torch.manual_seed(seed)
    model = RepeatModel(cell, hidden_size, no_input=no_input)
    g = torch.Generator().manual_seed(seed)
    split = sample_unique(batch_size, generator=g)
    return model, split.batch(torch.arange(batch_size))


def repeat_gru(
    *, hidden_size: int = 64, no_input: bool = False, batch_size: int = 16, seed: int = 0
) -> tuple[RepeatModel, tuple[Tensor, Tensor]]:
    """The onion paper's repeat-task GRU (untrained unless --checkpoint), on random sequences.

    Args:
        hidden_size: state size N.
        no_input: decoder reads [SOS, NOI, ...] instead of the previous tokens.
        batch_size: sequences in the example batch (lengths 2..9).
        seed: seed for weights and data.
    """
    return _example("gru", hidden_size, no_input, batch_size, seed)


def repeat_lstm(
    *, hidden_size: int = 64, no_input: bool = False, batch_size: int = 16, seed: int = 0
) -> tuple[RepeatModel, tuple[Tensor, Tensor]]:
    """The repeat-task model with an LSTM (memory = [h; c]), untrained unless --checkpoint.

    Args:
        hidden_size: state size N.
        no_input: decoder reads [SOS, NOI, ...] instead of the previous tokens.
        batch_size: sequences in the example batch (lengths 2..9).
        seed: seed for weights and data.
    """
    return _example("lstm", hidden_size, no_input, batch_size, seed)
