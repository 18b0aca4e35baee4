"""The two task families of the RNN model zoos (``docs/methods/weight-space.md``), each batched over
training runs.

* :class:`LanguageTasks` (zoo 1): formal languages a^n b^(n+d2) c^(n+d3) d^(n+d4) with one task
  vector d = [0, d2, d3, d4] per run. Members are generators: trained with next-token
  cross-entropy on strings of their language, evaluated by sampling from them; the "return" is
  the fraction of sampled strings that belong to the language.
* :class:`DigitTasks` (zoo 2): scikit-learn's bundled 8x8 digits (offline), rotated by one angle
  per run and read as a sequence of rows or tiles after a zero "BOS" step; members are
  classifiers trained with cross-entropy at every step; the "return" is test accuracy of the
  last step's prediction.

Both expose the same small interface the batched trainer uses: ``layout(hidden, layers)``,
``batch(batch_size, generator) -> (x, y)`` with a leading run axis, ``loss(logits, y) -> [runs]``,
``evaluate(params, generator) -> dict`` (return, stored sequences and the member's log-probs on
them), and the per-run ``task_json(r)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from papers.weight_space.zoo.lstm import LSTMLayout, stacked_lstm

N_SYMBOLS = 4  # a, b, c, d
BOS, EOS = 4, 5
VOCAB = 6


# ---------------------------------------------------------------------- zoo 1: formal languages
def random_language_tasks(
    runs: int, generator: torch.Generator | None = None, low: int = -3, high: int = 2
) -> Tensor:
    """[runs, 4] task vectors d = [0, d2, d3, d4], d_k uniform in {low..high}."""
    d = torch.randint(low, high + 1, (runs, N_SYMBOLS - 1), generator=generator)
    return torch.cat([torch.zeros(runs, 1, dtype=torch.long), d], dim=1)


def default_length(max_n: int, high: int = 2) -> int:
    """BOS + the longest string (4 max_n + 3 high symbols) + one EOS."""
    return 2 + N_SYMBOLS * max_n + (N_SYMBOLS - 1) * high


def sample_strings(
    tasks: Tensor, batch: int, length: int, max_n: int, generator: torch.Generator | None = None
) -> Tensor:
    """Strings of each run's language: [runs, batch, length] symbol ids (BOS, symbols, EOS padding).

    n is uniform on {max(0, -min d) .. max_n} per string.
    """
    runs = tasks.shape[0]
    min_n = (-tasks.min(dim=1).values).clamp(min=0)  # [runs]
    if (min_n > max_n).any():
        raise ValueError(
            f"sample_strings: max_n={max_n} is below the smallest n some task needs ({int(min_n.max())})"
        )
    span = (max_n - min_n + 1).float()
    n = min_n[:, None] + (torch.rand(runs, batch, generator=generator) * span[:, None]).long()
    ends = (n[..., None] + tasks[:, None, :]).cumsum(-1)  # [runs, batch, 4]
    if int(ends[..., -1].max()) > length - 2:
        raise ValueError(
            f"sample_strings: length={length} cannot hold BOS + the longest string + EOS; "
            f"use >= {default_length(max_n)}"
        )
    pos = torch.arange(length - 1)
    symbol = (pos[None, None, :, None] >= ends[:, :, None, :]).sum(-1)  # 0..4; 4 = past the end
    symbol = torch.where(symbol == N_SYMBOLS, EOS, symbol)
    return torch.cat([torch.full((runs, batch, 1), BOS), symbol], dim=-1)


def accepts(tasks: Tensor, strings: Tensor) -> Tensor:
    """Which strings ([runs, batch, length], starting with BOS) are in each run's language.

    A string is accepted when, before its first EOS, it reads a^n b^(n+d2) c^(n+d3) d^(n+d4)
    for some n >= 0 (symbols in order, counts matching); strings without an EOS are rejected.
    """
    body = strings[..., 1:]
    is_eos = body == EOS
    has_eos = is_eos.any(-1)
    first = torch.where(has_eos, is_eos.int().argmax(-1), body.shape[-1])
    before = torch.arange(body.shape[-1]) < first[..., None]
    symbols_ok = ~((body >= N_SYMBOLS) & before).any(-1)
    order_ok = ~((body[..., 1:] < body[..., :-1]) & before[..., 1:]).any(-1)
    counts = (F.one_hot(body.clamp(0, VOCAB - 1), VOCAB)[..., :N_SYMBOLS] * before[..., None]).sum(-2)
    n = counts - tasks[:, None, :]
    counts_ok = (n == n[..., :1]).all(-1) & (n[..., 0] >= 0)
    return has_eos & symbols_ok & order_ok & counts_ok


def language_entropy(tasks: Tensor) -> Tensor:
    """The split criterion of the paper: entropy of (1 + d - min d) normalised to a distribution."""
    t = (1 + tasks - tasks.min(dim=-1, keepdim=True).values).float()
    p = t / t.sum(-1, keepdim=True)
    return -(p * (p + 1e-6).log()).sum(-1)


@torch.no_grad()
def sample_from_members(
    params: Mapping[str, Tensor], n: int, length: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Let every member generate ``n`` strings from BOS: ([M, n, length] symbols,
    [M, n, length-1, 6] log-probs)."""
    m = params["head.weight"].shape[0]
    token = torch.full((m, n), BOS)
    tokens, logps, state = [token], [], None
    for _ in range(length - 1):
        x = F.one_hot(token, VOCAB).float()[:, :, None]
        logits, state = stacked_lstm(params, x, state)
        logp = logits[:, :, 0].log_softmax(-1)
        token = torch.multinomial(logp.exp().reshape(m * n, VOCAB), 1, generator=generator).reshape(m, n)
        tokens.append(token)
        logps.append(logp)
    return torch.stack(tokens, -1), torch.stack(logps, -2)


class LanguageTasks:
    """Zoo 1: one formal language per run.

    Args:
        tasks: [runs, 4] task vectors d (first entry 0).
        max_n: largest n of training strings.
        length: sequence length (BOS + string + EOS padding); default: the shortest that fits.
        n_return: samples per member for the return (the paper: 1000).
        n_store: self-sampled sequences stored per snapshot (the paper: 100).
    """

    kind = "formal-languages"

    def __init__(
        self,
        tasks: Tensor,
        *,
        max_n: int = 9,
        length: int | None = None,
        n_return: int = 1000,
        n_store: int = 100,
    ):
        if tasks.dim() != 2 or tasks.shape[1] != N_SYMBOLS:
            raise ValueError(f"LanguageTasks: tasks must be [runs, {N_SYMBOLS}], got {tuple(tasks.shape)}")
        self.tasks = tasks.long()
        need = int((-self.tasks.min()).clamp(min=0))
        if max_n < need:
            raise ValueError(
                f"LanguageTasks: max_n={max_n} is below {need}, "
                f"the smallest n a task with offset -{need} needs"
            )
        self.max_n = max_n
        self.length = length or default_length(max_n)
        self.n_return = n_return
        self.n_store = n_store

    @property
    def runs(self) -> int:
        return self.tasks.shape[0]

    def layout(self, hidden: int = 32, layers: int = 2) -> LSTMLayout:
        return LSTMLayout(VOCAB, VOCAB, hidden, layers)

    def batch(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        s = sample_strings(self.tasks, batch_size, self.length, self.max_n, generator)
        return F.one_hot(s[..., :-1], VOCAB).float(), s[..., 1:]

    @staticmethod
    def loss(logits: Tensor, y: Tensor) -> Tensor:
        """Next-token cross-entropy per member: logits [M, B, T, V], y [M, B, T] -> [M]."""
        return F.cross_entropy(logits.flatten(1, 2).transpose(1, 2), y.flatten(1), reduction="none").mean(1)

    def evaluate(self, params: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict:
        seqs, logps = sample_from_members(params, max(self.n_return, self.n_store), self.length, generator)
        accepted = accepts(self.tasks, seqs[:, : self.n_return]).double().mean(-1)
        return {"return": accepted, "sequences": seqs[:, : self.n_store], "logits": logps[:, : self.n_store]}

    def task_json(self, r: int) -> list[int]:
        return self.tasks[r].tolist()

    def meta(self) -> dict:
        return {
            "max_n": self.max_n,
            "length": self.length,
            "n_return": self.n_return,
            "n_store": self.n_store,
        }


# ---------------------------------------------------------------------- zoo 2: rotated digits
def load_digits_tensor() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits: ([1797, 8, 8] in [0, 1], [1797] labels). No download."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32) / 16.0, torch.tensor(d.target, dtype=torch.long)


def rotate_images(images: Tensor, angles: Tensor) -> Tensor:
    """Rotate every image by every run's angle (degrees) in one call: [N, h, w] -> [runs, N, h, w]."""
    rad = angles.float() * math.pi / 180.0
    cos, sin = rad.cos(), rad.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)
    runs, (n, h, w) = angles.shape[0], images.shape
    grid = F.affine_grid(theta, [runs, n, h, w], align_corners=False)
    return F.grid_sample(
        images[None].expand(runs, -1, -1, -1), grid, align_corners=False, padding_mode="zeros"
    )


def image_sequences(images: Tensor, read: str = "rows", tile: int = 2) -> Tensor:
    """[..., h, w] images -> [..., 1 + steps, features]: a zero BOS step, then rows or tiles."""
    *lead, h, w = images.shape
    if read == "rows":
        seq = images
    elif read == "tiles":
        if h % tile or w % tile:
            raise ValueError(f"image_sequences: tile={tile} does not divide the {h}x{w} image")
        seq = (
            images.reshape(*lead, h // tile, tile, w // tile, tile)
            .transpose(-3, -2)
            .reshape(*lead, (h // tile) * (w // tile), tile * tile)
        )
    else:
        raise ValueError(f"image_sequences: read must be 'rows' or 'tiles', got {read!r}")
    bos = seq.new_zeros(*lead, 1, seq.shape[-1])
    return torch.cat([bos, seq], dim=-2)


class DigitTasks:
    """Zoo 2: digit classifiers, one rotation angle per run.

    Args:
        angles: [runs] rotation in degrees (the paper: uniform on [0, 360)).
        read: "rows" (8 steps of 8 pixels) or "tiles" (tile x tile patches).
        tile: tile size for read="tiles".
        test_fraction: images held out for the accuracy (the same split for every run).
        n_store: test sequences stored per snapshot with the member's per-step log-probs.
        seed: seed of the train/test split.
    """

    kind = "digits"

    def __init__(
        self,
        angles: Tensor,
        *,
        read: str = "rows",
        tile: int = 2,
        test_fraction: float = 0.2,
        n_store: int = 100,
        seed: int = 0,
    ):
        images, labels = load_digits_tensor()
        self.angles = angles.float()
        self.read, self.tile, self.n_store = read, tile, n_store
        mean, std = images.mean(), images.std()
        rotated = (rotate_images(images, self.angles) - mean) / std  # [runs, N, 8, 8]
        self.x = image_sequences(rotated, read, tile)  # [runs, N, T, d]
        self.y = labels
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        n_test = int(round(test_fraction * len(labels)))
        self.test_idx, self.train_idx = order[:n_test], order[n_test:]

    @property
    def runs(self) -> int:
        return self.angles.shape[0]

    def layout(self, hidden: int = 32, layers: int = 2) -> LSTMLayout:
        return LSTMLayout(self.x.shape[-1], 10, hidden, layers)

    def batch(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        pick = self.train_idx[
            torch.randint(len(self.train_idx), (self.runs, batch_size), generator=generator)
        ]
        x = self.x.gather(1, pick[..., None, None].expand(-1, -1, *self.x.shape[2:]))
        return x, self.y[pick]

    @staticmethod
    def loss(logits: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy at every step against the label: logits [M, B, T, 10], y [M, B] -> [M]."""
        target = y[:, :, None].expand(-1, -1, logits.shape[2])
        return F.cross_entropy(
            logits.flatten(1, 2).transpose(1, 2), target.flatten(1), reduction="none"
        ).mean(1)

    @torch.no_grad()
    def evaluate(self, params: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict:
        out = {}
        for split, idx in (("test", self.test_idx), ("train", self.train_idx[: len(self.test_idx)])):
            x, y = self.x[:, idx], self.y[idx].expand(self.runs, -1)
            logits, _ = stacked_lstm(params, x)
            out[f"{split}_loss"] = self.loss(logits, y)
            if split == "test":
                out["return"] = (logits[:, :, -1].argmax(-1) == y).double().mean(-1)
                out["sequences"] = x[:, : self.n_store]
                out["logits"] = logits[:, : self.n_store].log_softmax(-1)
        return out

    def task_json(self, r: int) -> float:
        return float(self.angles[r])

    def meta(self) -> dict:
        return {"read": self.read, "tile": self.tile, "n_store": self.n_store, "n_test": len(self.test_idx)}
