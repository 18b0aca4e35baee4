"""Checks of a Hugging Face model folder on disk, before transformers reads it, and the manifest
of a cached GGUF conversion.

* :func:`check_folder`: raises :class:`FolderError` naming the file that is missing or damaged (no
  ``config.json``, a ``config.json`` that is not JSON, no weights, a ``.safetensors`` file shorter
  than its own header says (an interrupted download or copy), a shard an index names that is not
  there, no tokenizer) and what to do about it. transformers' own messages for these cases are
  long, generic, or say nothing of the file.
* :func:`write_manifest` / :func:`manifest_problem`: a cached conversion carries
  ``hooked-manifest.json`` with the size and SHA-256 of every file. Each load compares the sizes
  (and the hashes of the small files, and the safetensors headers): a truncated
  ``model.safetensors`` or a deleted ``config.json`` is found at once, and
  :func:`hooked.lm.converted_folder` converts again instead of failing on every load.
  ``manifest_problem(folder, full=True)`` also re-hashes the large files (a second or two per GB).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from hooked.io import current_umask, file_sha256

MANIFEST = "hooked-manifest.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
SMALL = 1 << 20  # files up to this size are hashed on every check


class FolderError(ValueError):
    """A model folder on disk is missing a file or has a damaged one (the message names it)."""


# ---------------------------------------------------------------------- a model folder
def check_folder(folder: str | os.PathLike, *, tokenizer: bool = True) -> None:
    """Raise :class:`FolderError` if ``folder`` cannot be a loadable causal LM folder."""
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise FolderError(
            f"{config} is missing, so {folder} is not a Hugging Face model folder; save the model with "
            "model.save_pretrained(folder) (which writes config.json), or pass the folder that has it"
        )
    try:
        json.loads(config.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FolderError(
            f"{config} is not valid JSON ({e}); it is damaged: save the model again with "
            "model.save_pretrained(folder), or copy config.json from the original model"
        ) from None
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights and not any(folder.glob("*.safetensors")):
        raise FolderError(
            f"{folder} has no weights (none of {', '.join(WEIGHT_FILES)}); save the model with "
            "model.save_pretrained(folder)"
        )
    for index in folder.glob("*.index.json"):
        _check_index(index)
    for file in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            raise FolderError(
                f"{file} is damaged: {problem}; an interrupted download or copy leaves such a file. Copy or "
                "save the model again (model.save_pretrained(folder))"
            )
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FolderError(
            f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:2])}); save the model's "
            "tokenizer there with tokenizer.save_pretrained(folder), or pass tokenizer=FOLDER_OR_HUB_NAME "
            "to lm.load"
        )


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a ``.safetensors`` file's layout (None if nothing): a header that is
    cut off or not JSON, or less tensor data than the header describes. Reads only the header."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"it has {size} bytes, less than the 8-byte header length"
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if 8 + n > size:
            return f"its header says {n} bytes of metadata, but the file has only {size} bytes"
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"its header is not valid JSON ({e})"
    ends = [
        int(v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    ]
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        return f"it has {size:,} bytes but its header describes {expected:,} (truncated)"
    return None


def _check_index(index: Path) -> None:
    try:
        weight_map = json.loads(index.read_text()).get("weight_map", {})
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise FolderError(f"{index} is not a valid shard index ({e}); save the model again") from None
    missing = sorted({f for f in weight_map.values() if not (index.parent / f).is_file()})
    if missing:
        raise FolderError(
            f"{index} names shards that are not in {index.parent}: {', '.join(missing[:5])}; copy the "
            "missing files or save the model again"
        )


# ---------------------------------------------------------------------- the manifest of a conversion
def write_manifest(folder: str | os.PathLike, source: dict[str, Any] | None = None) -> Path:
    """Write ``hooked-manifest.json``: size and SHA-256 of every file in ``folder``."""
    from hooked.io import write_json

    folder = Path(folder)
    files = {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    return write_json(folder / MANIFEST, {"source": source or {}, "files": files})


def manifest_problem(folder: str | os.PathLike, *, full: bool = False) -> str | None:
    """Why the cached folder does not match its manifest (None when it does): a missing file, a
    wrong size, a wrong hash (small files always, all with ``full=True``), a damaged safetensors
    file, or no manifest at all."""
    folder = Path(folder)
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"it has no {MANIFEST}"
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        return f"its {MANIFEST} is damaged ({e})"
    for name, info in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != info["size"]:
            return f"{name} has {size:,} bytes, its manifest says {info['size']:,}"
        if (full or size <= SMALL) and file_sha256(path) != info["sha256"]:
            return f"{name} does not match the SHA-256 in its manifest"
        if path.suffix == ".safetensors":
            problem = safetensors_problem(path)
            if problem:
                return f"{name}: {problem}"
    return None


def usual_permissions(folder: str | os.PathLike) -> None:
    """Give ``folder`` and the files in it the modes of the user's umask (``mkdtemp`` and some
    writers make 0700 / 0600)."""
    umask = current_umask()
    folder = Path(folder)
    os.chmod(folder, 0o777 & ~umask)
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~umask)
