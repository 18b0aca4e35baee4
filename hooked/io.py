"""Writing results: atomic files, JSON that understands tensors, safetensors, run folders.

Every writer here writes to a temporary file beside the target and renames it into place, so an
interrupted run never leaves a half-written file. Models and results are safetensors + JSON,
never pickle.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_jsonable(obj: Any) -> Any:
    """Tensors, numpy values, paths and dataclass-like objects as plain JSON values."""
    if isinstance(obj, Tensor):
        obj = obj.detach().cpu()
        return obj.item() if obj.dim() == 0 else to_jsonable(obj.tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    if hasattr(obj, "to_json"):
        return to_jsonable(obj.to_json())
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def write_tensors(
    path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Save tensors as safetensors (contiguous CPU copies), atomically."""
    from safetensors.torch import save

    data, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if v.untyped_storage().data_ptr() in seen:  # tied weights: safetensors wants no sharing
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        data[k] = v
    return atomic_write_bytes(path, save(data, metadata=dict(metadata) if metadata else None))


def read_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return load_file(path, device=str(device))
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from None


def save_figure(path: str | os.PathLike, fig: Any, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


class RunDir:
    """A folder that one command writes its results into (JSON, PNG, safetensors).

    ``RunDir.create("runs", "tms")`` makes ``runs/tms-YYYYmmdd-HHMMSS`` (a fresh name, never
    an existing folder).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, root: str | os.PathLike, name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{name}-{stamp}"
        path, i = base, 1
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
        return cls(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def json(self, name: str, obj: Any) -> Path:
        return write_json(self.path / name, obj)

    def figure(self, name: str, fig: Any) -> Path:
        return save_figure(self.path / name, fig)

    def tensors(self, name: str, tensors: Mapping[str, Tensor]) -> Path:
        return write_tensors(self.path / name, tensors)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)
