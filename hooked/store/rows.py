"""From one batch's activations to the rows of an activation store, with tensor ops only.

A batch is a tensor, a tuple of positional arguments or a dict of keyword arguments (see
:mod:`hooked.protocol`). Its *main input* is the dict's ``input_ids``, else its first tensor;
its batch size is that tensor's first axis. A dict's ``attention_mask`` ([batch, pos], 1 = a
real token) marks the positions that get rows: positions where it is 0 (padding) get none.

Rows are one per token (``sequence=True``: every hook's activation is ``[batch, pos, ...]``) or
one per sample (``sequence=False``: ``[batch, ...]``). Columns: ``row`` (a running id over the
whole store), ``sequence`` (the sample's running index), ``position`` (sequence rows only: the
token's index among the real tokens of its sample, so left and right padding give the same ids)
and one column per hook holding the row's activation (its shape without the leading axes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hooked.protocol import Batch, split_batch
from hooked.store.manifest import COLUMN_DTYPES, StoreError, require

ID_COLUMNS = ("row", "sequence", "position")
STORE_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
_KEPT_DTYPES = tuple(getattr(torch, name) for name in COLUMN_DTYPES)


@dataclass(frozen=True)
class Layout:
    """What every row of a store holds: sequence or sample rows, and each hook's row shape and dtype."""

    sequence: bool
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]  # torch dtype names without the "torch." prefix

    @property
    def columns(self) -> list[str]:
        ids = list(ID_COLUMNS) if self.sequence else ["row", "sequence"]
        return ids + list(self.shapes)

    def row_bytes(self) -> int:
        ids = 8 * (3 if self.sequence else 2)
        return ids + sum(
            int(np.prod(s, dtype=np.int64))
            * torch.empty((), dtype=getattr(torch, self.dtypes[h])).element_size()
            for h, s in self.shapes.items()
        )

    @classmethod
    def from_json(cls, info: Mapping[str, Any]) -> Layout:
        """The layout a manifest (or :meth:`to_json`) describes."""
        hooks = info["hooks"]
        return cls(
            bool(info["sequence"]),
            {h: tuple(v["shape"]) for h, v in hooks.items()},
            {h: v["dtype"] for h, v in hooks.items()},
        )

    def to_json(self) -> dict:
        return {
            "sequence": self.sequence,
            "hooks": {h: {"shape": list(s), "dtype": self.dtypes[h]} for h, s in self.shapes.items()},
        }


def main_input(batch: Batch) -> Tensor:
    """The tensor that defines a batch's rows: a dict's ``input_ids``, else its first tensor."""
    args, kwargs = split_batch(batch)
    if isinstance(kwargs.get("input_ids"), Tensor):
        return kwargs["input_ids"]
    for v in (*args, *kwargs.values()):
        if isinstance(v, Tensor) and v.dim() > 0:
            return v
    raise ValueError(
        "a batch must hold a tensor with a batch axis (a tensor, a tuple or a dict of tensors); "
        f"got {type(batch).__name__}"
    )


def attention_mask(batch: Batch) -> Tensor | None:
    """A dict batch's ``attention_mask`` as bool ``[batch, pos]``, or None."""
    if not isinstance(batch, Mapping) or batch.get("attention_mask") is None:
        return None
    mask = batch["attention_mask"]
    ids = main_input(batch)
    if not isinstance(mask, Tensor) or mask.dim() != 2 or tuple(mask.shape) != tuple(ids.shape[:2]):
        raise ValueError(
            f"attention_mask must be a [batch, pos] tensor matching the input's {tuple(ids.shape[:2])}, "
            f"got {getattr(mask, 'shape', type(mask).__name__)}"
        )
    return mask.bool()


def guess_sequence(batch: Batch) -> bool:
    """Token rows for integer ``[batch, pos]`` inputs (token ids), sample rows otherwise."""
    x = main_input(batch)
    return x.dim() == 2 and not x.is_floating_point() and not x.is_complex()


def count_rows(batch: Batch, sequence: bool) -> tuple[int, int]:
    """``(rows, samples)`` that ``batch`` contributes, from its inputs alone (no forward)."""
    x = main_input(batch)
    if not sequence:
        return x.shape[0], x.shape[0]
    if x.dim() < 2:
        raise ValueError(f"sequence rows need a [batch, pos, ...] input, got shape {tuple(x.shape)}")
    mask = attention_mask(batch)
    rows = int(mask.sum()) if mask is not None else x.shape[0] * x.shape[1]
    return rows, x.shape[0]


def store_dtype(act: Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype a hook's column gets: ``dtype`` for floating activations, else the activation's own."""
    if not act.is_floating_point():
        if act.dtype not in _KEPT_DTYPES:
            raise ValueError(f"activations of dtype {act.dtype} cannot be stored")
        return act.dtype
    if dtype is not None:
        return dtype
    return act.dtype if act.dtype in _KEPT_DTYPES else torch.float32  # bfloat16: Arrow has none


def layout_of(acts: Mapping[str, Tensor], batch: Batch, sequence: bool, dtype: torch.dtype | None) -> Layout:
    """The layout of a store from one batch's activations (and checks that they fit the rows)."""
    x = main_input(batch)
    lead = tuple(x.shape[:2]) if sequence else tuple(x.shape[:1])
    shapes, dtypes = {}, {}
    for name, act in acts.items():
        if not isinstance(act, Tensor):
            raise ValueError(f"hook {name!r} gave a {type(act).__name__}, not a tensor")
        if tuple(act.shape[: len(lead)]) != lead:
            what = "[batch, pos, ...]" if sequence else "[batch, ...]"
            hint = (
                "; store one row per sample instead (sequence=False, `--per-sample`)"
                if sequence
                else "; its first axis must be the batch's"
            )
            raise ValueError(
                f"hook {name!r} gives activations of shape {tuple(act.shape)}, not {what} with leading "
                f"axes {lead} like the input {tuple(x.shape)}{hint}"
            )
        shapes[name] = tuple(act.shape[len(lead) :])
        dtypes[name] = str(store_dtype(act, dtype)).removeprefix("torch.")
    return Layout(sequence, shapes, dtypes)


def batch_columns(
    acts: Mapping[str, Tensor], batch: Batch, layout: Layout, first_row: int, first_sequence: int, take: int
) -> dict[str, np.ndarray]:
    """The first ``take`` rows of one batch as numpy columns (flat per hook: ``[rows, prod(shape)]``)."""
    x = main_input(batch)
    n_samples = x.shape[0]
    mask = attention_mask(batch) if layout.sequence else None
    cols: dict[str, Tensor] = {}
    if layout.sequence:
        n_pos = x.shape[1]
        seq = torch.arange(n_samples).repeat_interleave(n_pos)
        if mask is None:
            pos = torch.arange(n_pos).repeat(n_samples)
            keep = None
        else:
            mask = mask.cpu()
            pos = (mask.long().cumsum(1) - 1).flatten()
            keep = mask.flatten().nonzero().squeeze(1)
            seq, pos = seq[keep], pos[keep]
        cols["sequence"], cols["position"] = seq[:take] + first_sequence, pos[:take]
    else:
        keep = None
        cols["sequence"] = torch.arange(min(take, n_samples)) + first_sequence
    cols["row"] = torch.arange(take) + first_row
    out = {k: v.numpy().astype(np.int64, copy=False) for k, v in cols.items()}
    lead = 2 if layout.sequence else 1
    for name in layout.shapes:
        act = acts[name].detach()
        flat = act.reshape(int(np.prod(act.shape[:lead])), int(np.prod(layout.shapes[name], dtype=np.int64)))
        if keep is not None:
            flat = flat.index_select(0, keep.to(flat.device))
        flat = flat[:take]
        stored = flat.to(device="cpu", dtype=getattr(torch, layout.dtypes[name]))
        if stored.dtype != flat.dtype and stored.is_floating_point() and flat.is_floating_point():
            check_no_overflow(name, flat, stored, first_row)
        out[name] = stored.contiguous().numpy()
    return out


def check_no_overflow(name: str, values: Tensor, stored: Tensor, first_row: int) -> None:
    """Refuse rows whose finite values became infinite when cast to the store's dtype (float16's
    largest value is 65504): a store is read by training code, where one ``inf`` turns every loss
    into NaN, and a warning is easily lost in a long run. Infinite values that the model itself
    gave (masks of ``-inf``) are kept as they are."""
    if torch.finfo(stored.dtype).max >= torch.finfo(values.dtype).max or not torch.isinf(stored).any():
        return
    finite = torch.isfinite(values).cpu()
    overflow = torch.isinf(stored) & finite
    if not overflow.any():
        return
    row = int(overflow.any(1).nonzero()[0, 0])  # values are [rows, prod(shape)]
    largest = float(values.detach().cpu()[finite].abs().max())
    kind = str(stored.dtype).removeprefix("torch.")
    raise StoreError(
        f"hook {name!r} has finite values up to {largest:.6g} in magnitude (first in row {first_row + row}), "
        f"beyond {kind}'s largest {torch.finfo(stored.dtype).max:.6g}: stored as {kind} they would become "
        f"inf. Store a wider dtype (dtype='float32', `--dtype float32`) in another folder, or delete the "
        f".partial folder of this run"
    )


def record_batch(columns: Mapping[str, np.ndarray], layout: Layout) -> Any:
    """One Arrow record batch from numpy columns; a hook's row is a (nested) fixed-size list."""
    pa = require("pyarrow")

    arrays, names = [], []
    for name in layout.columns:
        values = columns[name]
        if name in ID_COLUMNS:
            arr = pa.array(values)
        else:
            arr = pa.array(values.reshape(-1))
            for size in reversed(layout.shapes[name]):
                arr = pa.FixedSizeListArray.from_arrays(arr, size)
        arrays.append(arr)
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def hash_batch(h: Any, batch: Batch) -> None:
    """Feed a batch's inputs to ``h``: every tensor's dtype, shape and every byte of its values, and
    other values' repr, under their argument name or position (so that any change to any input is
    seen; hashing runs at several hundred MB/s, beside the model on a thread of the writer)."""
    args, kwargs = split_batch(batch)
    for key, v in [*enumerate(args), *sorted(kwargs.items())]:
        h.update(str(key).encode())
        if isinstance(v, Tensor):
            h.update(f"{v.dtype}{tuple(v.shape)}".encode())
            h.update(tensor_bytes(v))
        else:
            h.update(repr(v).encode())


def tensor_bytes(t: Tensor) -> np.ndarray:
    """A tensor's values as contiguous raw bytes on the CPU (a view when it is already so)."""
    t = t.detach().reshape(-1)
    if t.is_complex():
        t = torch.view_as_real(t).reshape(-1)
    return np.ascontiguousarray(t.cpu().view(torch.uint8).numpy())


def batch_digest(batch: Batch) -> str:
    h = hashlib.sha256()
    hash_batch(h, batch)
    return h.hexdigest()


def schema(layout: Layout) -> Any:
    """The Arrow schema of a store with this layout."""
    empty = {
        name: np.zeros((0,), np.int64)
        if name in ID_COLUMNS
        else np.zeros(
            (0, int(np.prod(layout.shapes[name], dtype=np.int64))), _numpy_dtype(layout.dtypes[name])
        )
        for name in layout.columns
    }
    return record_batch(empty, layout).schema


def _numpy_dtype(name: str) -> np.dtype:
    return torch.empty((), dtype=getattr(torch, name)).numpy().dtype


def samples_taken(batch: Batch, sequence: bool, take: int) -> int:
    """How many of a batch's samples have at least one of its first ``take`` rows (each one at least)."""
    x = main_input(batch)
    if not sequence:
        return min(take, x.shape[0])
    mask = attention_mask(batch)
    per_sample = mask.sum(1).cpu() if mask is not None else torch.full((x.shape[0],), x.shape[1])
    ends = per_sample.cumsum(0)
    if take >= int(ends[-1]):
        return x.shape[0]
    return int(torch.searchsorted(ends, torch.tensor(take), right=False)) + 1 if take > 0 else 0
