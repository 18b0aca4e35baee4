"""RNN model zoos (``docs/methods/weight-space.md``): many small LSTMs trained at once, stored as
safetensors + JSON.

* :mod:`~papers.weight_space.zoo.lstm`: :class:`ZooLSTM` (one member, hooked) and
  :func:`stacked_lstm` (M members as one computation), hidden-unit permutations.
* :mod:`~papers.weight_space.zoo.tasks`: zoo 1 (formal languages) and zoo 2 (rotated 8x8 digits).
* :mod:`~papers.weight_space.zoo.train`: batched training with snapshots (:func:`build_zoo`).
* :mod:`~papers.weight_space.zoo.store`: the :class:`Zoo` container, ``Zoo.save`` / ``Zoo.load``.

``hooked hooks zoo-lstm --zoo DIR --member 3`` loads one member as a hooked model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from papers.weight_space.zoo.lstm import (
    LSTMLayout,
    ZooLSTM,
    flatten_params,
    init_params,
    load_member,
    permute_hidden,
    random_permutations,
    stacked_lstm,
)
from papers.weight_space.zoo.store import Zoo, ZooFormatError
from papers.weight_space.zoo.tasks import (
    DigitTasks,
    LanguageTasks,
    accepts,
    random_language_tasks,
    sample_strings,
)
from papers.weight_space.zoo.train import build_zoo, snapshot_steps, train_step, train_zoo


def zoo_lstm(
    *, zoo: str = "", member: int = 0, kind: str = "formal-languages", batch_size: int = 8, seed: int = 0
) -> tuple[ZooLSTM, Tensor]:
    """A zoo member as a hooked LSTM 2 x 32, on sequences it was evaluated on.

    Args:
        zoo: a zoo folder (from `hooked repro weight-space` or Zoo.save); empty for an untrained member.
        member: which member of the zoo to load.
        kind: without --zoo: formal-languages or digits.
        batch_size: sequences in the example batch.
        seed: seed of the untrained member and its example strings.
    """
    from hooked.checks import non_negative, positive
    from hooked.errors import OptionError

    positive(batch_size=batch_size)
    non_negative(member=member)
    if member and not zoo:
        raise OptionError(
            "member", f"picks a member of --zoo; without a zoo there is one untrained member, got {member}"
        )
    if zoo:
        z = Zoo.load(zoo)
        if member >= len(z):
            raise OptionError("member", f"must be below the zoo's {len(z)} members, got {member}")
        model = z.model(member)
        seqs = torch.arange(min(batch_size, z.sequences.shape[1]))
        return model, z.inputs(torch.full_like(seqs, member), seqs)
    gen = torch.Generator().manual_seed(seed)
    if kind == "formal-languages":
        tasks = LanguageTasks(random_language_tasks(1, gen), max_n=4)
    elif kind == "digits":
        tasks = DigitTasks(torch.zeros(1))
    else:
        raise OptionError("kind", f"must be 'formal-languages' or 'digits', got {kind!r}")
    torch.manual_seed(seed)
    model = ZooLSTM(**tasks.layout().to_json())
    x, _ = tasks.batch(batch_size, gen)
    return model, x[0]


__all__ = [
    "DigitTasks",
    "LSTMLayout",
    "LanguageTasks",
    "Zoo",
    "ZooFormatError",
    "ZooLSTM",
    "accepts",
    "build_zoo",
    "flatten_params",
    "init_params",
    "load_member",
    "permute_hidden",
    "random_language_tasks",
    "random_permutations",
    "sample_strings",
    "snapshot_steps",
    "stacked_lstm",
    "train_step",
    "train_zoo",
]
