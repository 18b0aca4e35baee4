"""The manifest of an activation store: what it holds, where, and the settings that made it.

``manifest.json`` (written atomically, last, by rank 0) names the store's format, the model (its
class and a fingerprint of its parameters), every hook's row shape and dtype, whether rows are
tokens or samples, the shards (file, rows, first row, batches, bytes, sha256, and a sha256 of every
byte of the inputs they were computed from) and the settings. Settings that differ refuse a resume;
a manifest read back is checked field by field, and the shards' sizes always (their hashes on
request).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hooked.errors import HookedError
from hooked.io import read_json

FORMAT = "hooked-store/1"
MANIFEST = "manifest.json"
SHARD_KEYS = {
    "file": str,
    "rows": int,
    "first_row": int,
    "sequences": int,
    "first_sequence": int,
    "bytes": int,
    "sha256": str,
    "inputs_sha256": str,
}
TOP_KEYS = {
    "format": str,
    "model": dict,
    "hooks": dict,
    "sequence": bool,
    "columns": list,
    "rows": int,
    "sequences": int,
    "shards": list,
    "settings": dict,
}


COLUMN_DTYPES = ("float16", "float32", "float64", "int32", "int64", "bool")
"""The dtypes a hook's column can have (``float16`` to ``float64`` for floating activations)."""


class StoreError(HookedError, ValueError):
    """An activation store that cannot be written, resumed or read as asked; the message says why."""


def require(module: str) -> Any:
    """Import ``module`` (pyarrow, datasets), or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"activation stores need {module}: `pip install pyarrow datasets filelock` "
            "(or `pip install 'hooked[scale]'`)"
        ) from None


def model_fingerprint(model: Any) -> dict[str, Any]:
    """The model's class, parameter count and a sha256 over its parameters' and buffers' names,
    shapes, dtypes and an evenly spaced sample of up to 4096 values each (offloaded ``meta``
    tensors contribute their shape only), so that another model or other weights are noticed
    without hashing every byte of a large model."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    params = list(model.named_parameters()) if hasattr(model, "named_parameters") else []
    buffers = list(model.named_buffers()) if hasattr(model, "named_buffers") else []
    count = sum(t.numel() for _, t in params)
    for name, t in [*params, *buffers]:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.device.type != "meta" and t.numel():
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            h.update(flat[::step][:4096].to("cpu", torch.float64).numpy().tobytes())
    return {"class": type(model).__qualname__, "parameters": count, "sha256": h.hexdigest()}


def different_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Readable ``key: old -> new`` lines for every setting that differs."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}")
    return lines


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_manifest(manifest: Any, where: str | os.PathLike) -> dict[str, Any]:
    """``manifest`` if it has every field with the right type (else a StoreError naming the field)."""
    if not isinstance(manifest, dict):
        raise StoreError(f"{where}: the manifest must be a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise StoreError(
            f"{where}: not a hooked activation store of format {FORMAT!r} (format {manifest.get('format')!r})"
        )
    for key, kind in TOP_KEYS.items():
        if not isinstance(manifest.get(key), kind) or (kind is int and isinstance(manifest.get(key), bool)):
            raise StoreError(
                f"{where}: manifest field {key!r} must be a {kind.__name__}, got {manifest.get(key)!r:.80}"
            )
    for name, info in manifest["hooks"].items():
        if not (
            isinstance(info, dict)
            and isinstance(info.get("shape"), list)
            and all(type(n) is int and n > 0 for n in info["shape"])
            and info.get("dtype") in COLUMN_DTYPES
        ):
            raise StoreError(
                f"{where}: manifest hook {name!r} needs a shape (a list of positive integers) and a dtype "
                f"(one of {', '.join(COLUMN_DTYPES)}), got {info!r:.120}"
            )
    ids = ["row", "sequence", "position"] if manifest["sequence"] else ["row", "sequence"]
    if manifest["columns"] != ids + list(manifest["hooks"]):
        raise StoreError(
            f"{where}: manifest columns {manifest['columns']!r:.200} are not the id columns {ids} and then "
            "the hooks"
        )
    first = 0
    for i, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict):
            raise StoreError(f"{where}: manifest shard {i} must be an object")
        for key, kind in SHARD_KEYS.items():
            value = shard.get(key)
            if not isinstance(value, kind) or (
                isinstance(value, int) and (isinstance(value, bool) or value < 0)
            ):
                what = "a non-negative int" if kind is int else f"a {kind.__name__}"
                raise StoreError(
                    f"{where}: manifest shard {i} field {key!r} must be {what}, got {value!r:.80}"
                )
        if "batches" in shard and not (type(shard["batches"]) is int and shard["batches"] > 0):
            raise StoreError(f"{where}: manifest shard {i} field 'batches' must be a positive int")
        if shard["first_row"] != first or "/" in shard["file"] or shard["file"].startswith("."):
            raise StoreError(
                f"{where}: manifest shard {i} ({shard['file']}) is out of order or has a bad file name"
            )
        first += shard["rows"]
    if first != manifest["rows"]:
        raise StoreError(f"{where}: the shards hold {first} rows, the manifest says {manifest['rows']}")
    return manifest


def read_manifest(store: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """The checked manifest of a finished store; every shard's size is checked, its sha256 with ``verify``."""
    store = store_folder(store, "read_manifest")
    path = store / MANIFEST
    if not path.is_file():
        partial = store.with_name(store.name + ".partial")
        if partial.exists():
            raise StoreError(
                f"{store} is not finished: {partial} holds a harvest that is under way or was interrupted "
                "(run the same harvest again to resume it)"
            )
        raise StoreError(f"{store} is not an activation store (no {MANIFEST})")
    try:
        manifest = check_manifest(read_json(path), path)
    except ValueError as e:
        raise StoreError(str(e)) from None
    for shard in manifest["shards"]:
        check_shard(store / shard["file"], shard, verify=verify)
    return manifest


def store_folder(store: Any, caller: str, argument: str = "store") -> Path:
    """``store`` as a Path, or an error naming ``caller``, the argument and what it was given."""
    if not isinstance(store, (str, os.PathLike)) or isinstance(store, bytes):
        raise TypeError(f"{caller}: {argument} must be a store's folder (a path), got {type(store).__name__}")
    if not os.fspath(store):
        raise ValueError(f"{caller}: {argument} is an empty path")
    return Path(store)


def check_shard(path: Path, shard: Mapping[str, Any], *, verify: bool) -> None:
    """A shard file exists with the recorded size (and, with ``verify``, the recorded sha256)."""
    if not path.is_file():
        raise StoreError(f"shard {path} is missing")
    size = path.stat().st_size
    if size != shard["bytes"]:
        raise StoreError(
            f"shard {path} has {size} bytes, the manifest says {shard['bytes']} (truncated or replaced?)"
        )
    if verify and file_sha256(path) != shard["sha256"]:
        raise StoreError(f"shard {path} does not match its sha256 in the manifest (the file was changed)")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
