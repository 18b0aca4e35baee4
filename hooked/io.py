"""Writing results: atomic files, JSON that understands tensors, safetensors, run folders.

Every writer here writes to a temporary file beside the target and renames it into place, so an
interrupted run never leaves a half-written file; the file gets the mode the user's umask gives
new files (the temporary file is created with ``0o666`` and the kernel applies the umask; the
process umask is never changed). Models and results are safetensors + JSON, never pickle.

:meth:`RunDir.prepare` checks an output folder before a command starts its work: not an empty
path, not a file, writable, and not holding a finished run unless ``overwrite`` (or ``resume``).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it,
    which would change it for a moment for every thread of the process).

    Linux reports it in ``/proc/self/status``; elsewhere, the mode a new file gets tells it.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    fd, path = _create_temp(Path(tempfile.gettempdir()), ".hooked-umask-", 0o777)
    try:
        return 0o777 & ~os.fstat(fd).st_mode
    finally:
        os.close(fd)
        os.unlink(path)


def _create_temp(folder: Path, prefix: str, mode: int = 0o666) -> tuple[int, Path]:
    """A new file in ``folder`` opened for writing, created with ``mode`` (the umask applies)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}.tmp"
        try:
            return os.open(path, flags, mode), path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {folder}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks: what files written here record of
    each other, so that a damaged or swapped file is found when it is read back."""
    import hashlib

    h = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def open_regular(path: str | os.PathLike) -> Any:
    """``path`` opened for reading in binary, refused unless it is a regular file: a FIFO would block
    the reader until some writer appears (forever, for a file a user put in the way), and a device
    such as ``/dev/zero`` never ends. The file is opened without blocking and checked with
    ``fstat``, so that what is checked is what is read."""
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a file") from None
    except NotADirectoryError:
        raise FileNotFoundError(f"no such file: {path} (a part of the path is not a folder)") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ValueError(f"{path} is a folder, not a file")
        if not stat.S_ISREG(mode):
            what = "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
            raise ValueError(f"{path} is {what}; expected a regular file")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike) -> Path:
    """``path``, if it is a regular file (see :func:`open_regular`); else a clear error naming it."""
    with open_regular(path):
        return Path(path)


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


def read_json(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """The JSON value in the regular file ``path`` (see :func:`open_regular`), at most ``max_bytes``
    long if given; nesting too deep for the parser is a ``ValueError`` naming the file."""
    path = Path(path)
    with open_regular(path) as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes} bytes; not read")
    try:
        return json.loads(data.decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{path} nests its JSON values too deeply to be read") from None


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

    path = check_regular(path)
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
    an existing folder); ``RunDir.prepare(path, finished="result.json")`` checks a folder the
    user named before the work starts. ``overwrite`` tells the command that the user allowed
    replacing earlier results there (``--overwrite``).
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False):
        if isinstance(path, str) and not path.strip():
            raise ValueError("the run folder's path is empty; name a folder")
        self.path = Path(path)
        self.overwrite = overwrite
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"the run folder {self.path} is an existing file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create the run folder {self.path}: {e.strerror or e}") from None

    @classmethod
    def create(cls, root: str | os.PathLike, name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{name}-{stamp}"
        path, i = base, 1
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
        run_dir = cls(path)
        run_dir.check_writable()
        return run_dir

    @classmethod
    def prepare(
        cls, path: str | os.PathLike, *, finished: str, overwrite: bool = False, resume: bool = False
    ) -> RunDir:
        """The run folder ``path``, checked before a command starts its work.

        Refused, with a message naming the folder: an empty path (which would mean the current
        folder), an existing file, a folder that cannot be created or written to, and a folder
        holding a finished run (its ``finished`` file, e.g. ``result.json``) unless ``overwrite``
        (then that file is removed first, so the folder never claims a finished run it does not
        hold) or ``resume`` (a command that reuses the work done there with the same settings).
        """
        if isinstance(path, str) and not path.strip():
            raise ValueError("the run folder's path is empty; name a folder (use . for the current one)")
        marker = Path(path) / finished
        if marker.is_file() and not (overwrite or resume):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(marker.stat().st_mtime))
            raise ValueError(
                f"{Path(path)} holds a finished run ({finished}, written {when}); pass --overwrite to "
                "replace it, or choose another folder"
            )
        run_dir = cls(path, overwrite=overwrite)
        run_dir.check_writable()
        if overwrite and not resume:
            marker.unlink(missing_ok=True)
        return run_dir

    def check_writable(self) -> None:
        """Raise a ValueError naming the folder if a file cannot be created in it."""
        try:
            fd, probe = _create_temp(self.path, ".hooked-write-check-")
            os.close(fd)
            probe.unlink()
        except OSError as e:
            raise ValueError(f"cannot write into the run folder {self.path}: {e.strerror or e}") from None

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
