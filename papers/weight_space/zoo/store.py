"""A model zoo in memory and on disk: stacked parameters as safetensors, metadata as JSON.

A zoo folder holds two files:

* ``zoo.safetensors``: ``params.<key>`` for every ``ZooLSTM`` state-dict key, stacked on a
  leading member axis ([N, ...]); ``sequences`` ([N, S, length] symbol ids for formal languages,
  [N, S, steps, features] inputs for digits) and ``logits`` ([N, S, steps, d_out]: the member's
  log-probabilities on those sequences).
* ``zoo.json``: the format tag, the kind of zoo, the member layout, the training settings and one
  record per member: ``run``, ``step``, ``task`` (task vector or angle), ``return`` (fraction of
  accepted samples, or test accuracy), and extra per-snapshot numbers.

Loading checks every tensor's presence, shape and dtype against the layout and the member
records, and raises :class:`ZooFormatError` naming the file, the entry and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from hooked.io import read_json, read_tensors, write_json, write_tensors
from papers.weight_space.zoo.lstm import LSTMLayout, Params, ZooLSTM, check_params, load_member

FORMAT = "hooked-zoo/1"
TENSORS = "zoo.safetensors"
INDEX = "zoo.json"
KINDS = ("formal-languages", "digits")
MEMBER_KEYS = ("run", "step", "task", "return")


class ZooFormatError(ValueError):
    """A zoo folder or zoo object that does not hold what the format says."""


@dataclass
class Zoo:
    """N trained RNNs (runs x snapshots) with their tasks, returns and recorded behaviour."""

    kind: str
    layout: LSTMLayout
    params: Params
    sequences: Tensor
    logits: Tensor
    members: list[dict]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return (
            f"Zoo({self.kind!r}, {len(self)} members = {len(set(self.runs.tolist()))} runs x "
            f"{len(set(self.steps.tolist()))} snapshots, layout={self.layout})"
        )

    @property
    def runs(self) -> Tensor:
        return torch.tensor([m["run"] for m in self.members])

    @property
    def steps(self) -> Tensor:
        return torch.tensor([m["step"] for m in self.members])

    @property
    def returns(self) -> Tensor:
        return torch.tensor([float(m["return"]) for m in self.members])

    @property
    def tasks(self) -> Tensor:
        """[N, 4] task vectors (formal languages) or [N, 1] angles (digits)."""
        t = [m["task"] if isinstance(m["task"], list) else [m["task"]] for m in self.members]
        return torch.tensor(t, dtype=torch.long if self.kind == "formal-languages" else torch.float32)

    def model(self, index: int) -> ZooLSTM:
        """Member ``index`` as a hooked :class:`ZooLSTM` (its own copy of the weights)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"zoo member {index} out of range (the zoo has {len(self)})")
        return load_member(self.params, index, self.layout)

    def subset(self, index: Tensor | Sequence[int]) -> Zoo:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Zoo(
            kind=self.kind,
            layout=self.layout,
            params={k: v[idx] for k, v in self.params.items()},
            sequences=self.sequences[idx],
            logits=self.logits[idx],
            members=[self.members[i] for i in idx.tolist()],
            meta=dict(self.meta),
        )

    def inputs(self, member: Tensor, seq: Tensor) -> Tensor:
        """The inputs the member saw for stored sequences ``seq``: [n, steps, d_in]."""
        s = self.sequences[member, seq]
        if self.kind == "formal-languages":
            return F.one_hot(s[..., :-1], self.layout.d_in).float()
        return s.float()

    def targets(self, member: Tensor, seq: Tensor) -> Tensor:
        """The member's log-probabilities on those inputs: [n, steps, d_out]."""
        return self.logits[member, seq].float()

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        tensors = {f"params.{k}": v for k, v in self.params.items()}
        tensors["sequences"] = self.sequences
        tensors["logits"] = self.logits
        write_tensors(directory / TENSORS, tensors)
        write_json(
            directory / INDEX,
            {
                "format": FORMAT,
                "kind": self.kind,
                "layout": self.layout.to_json(),
                "n_members": len(self),
                "meta": self.meta,
                "members": self.members,
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Zoo:
        """Read a zoo folder written by :meth:`save`, checking it thoroughly."""
        directory = Path(directory)
        index_path, tensor_path = directory / INDEX, directory / TENSORS
        if not directory.is_dir():
            raise FileNotFoundError(f"no zoo folder at {directory}")
        info = read_json(index_path)
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            got = info.get("format") if isinstance(info, dict) else type(info).__name__
            raise ZooFormatError(f"{index_path}: not a zoo index (format {got!r}, expected {FORMAT!r})")
        for key in ("kind", "layout", "members"):
            if key not in info:
                raise ZooFormatError(f"{index_path}: no {key!r} entry")
        try:
            layout = LSTMLayout.of(info["layout"])
        except (KeyError, TypeError, ValueError) as e:
            raise ZooFormatError(f"{index_path}: bad 'layout' {info['layout']!r}: {e}") from None
        if info.get("n_members") is not None and info["n_members"] != len(info["members"]):
            raise ZooFormatError(
                f"{index_path}: n_members={info['n_members']} but {len(info['members'])} member records"
            )
        tensors = read_tensors(tensor_path)
        missing = [f"params.{k}" for k in layout.shapes if f"params.{k}" not in tensors]
        missing += [k for k in ("sequences", "logits") if k not in tensors]
        if missing:
            raise ZooFormatError(f"{tensor_path}: missing tensors {missing} (layout {layout})")
        params = {k: tensors[f"params.{k}"] for k in layout.shapes}
        try:
            return cls(
                kind=info["kind"],
                layout=layout,
                params=params,
                sequences=tensors["sequences"],
                logits=tensors["logits"],
                members=info["members"],
                meta=info.get("meta", {}),
            )
        except ZooFormatError as e:
            raise ZooFormatError(f"{directory}: {e}") from None


def validate(zoo: Zoo) -> None:
    """Raise :class:`ZooFormatError` unless every part of ``zoo`` fits the others."""
    if zoo.kind not in KINDS:
        raise ZooFormatError(f"kind {zoo.kind!r} is not one of {KINDS}")
    try:
        n = check_params(zoo.params, zoo.layout, "params")
    except ValueError as e:
        raise ZooFormatError(str(e)) from None
    for k, v in zoo.params.items():
        if not v.is_floating_point():
            raise ZooFormatError(f"params[{k!r}] has dtype {v.dtype}, expected a float dtype")
        if not bool(torch.isfinite(v).all()):
            raise ZooFormatError(f"params[{k!r}] holds NaN or infinite values")
    if len(zoo.members) != n:
        raise ZooFormatError(f"{len(zoo.members)} member records but the parameters hold {n} members")
    for i, m in enumerate(zoo.members):
        if not isinstance(m, dict) or any(k not in m for k in MEMBER_KEYS):
            raise ZooFormatError(f"member record {i} must have keys {MEMBER_KEYS}, got {m!r}")
    s, lg = zoo.sequences, zoo.logits
    lang = zoo.kind == "formal-languages"
    want_seq = (
        "[members, S, length] integer symbols" if lang else f"[members, S, steps, {zoo.layout.d_in}] floats"
    )
    if (
        s.shape[:1] != (n,)
        or s.dim() != (3 if lang else 4)
        or (lang == s.is_floating_point())
        or (not lang and s.shape[-1] != zoo.layout.d_in)
    ):
        raise ZooFormatError(
            f"'sequences' has shape {tuple(s.shape)} and dtype {s.dtype}, "
            f"expected {want_seq} with members={n}"
        )
    steps = s.shape[2] - 1 if lang else s.shape[2]
    want = (n, s.shape[1], steps, zoo.layout.d_out)
    if tuple(lg.shape) != want or not lg.is_floating_point():
        raise ZooFormatError(
            f"'logits' has shape {tuple(lg.shape)} and dtype {lg.dtype}, expected float {list(want)} "
            "([members, S, steps, d_out], matching 'sequences')"
        )
    if lang and s.numel() and (int(s.min()) < 0 or int(s.max()) >= zoo.layout.d_in):
        raise ZooFormatError(f"'sequences' holds symbol ids outside [0, {zoo.layout.d_in})")
