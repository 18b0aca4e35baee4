"""Dictionaries on disk in SAELens's layout: ``cfg.json`` + ``sae_weights.safetensors``.

:func:`save` writes a folder that SAELens (6.x) loads with ``SAE.load_from_disk``, and :func:`load`
reads folders that SAELens wrote (6.x configs, and the older flat ones it still reads), checking
them first: every tensor the architecture needs, with the right shape, a floating dtype and
finite values; anything else is an error that names the file and the key.

The layout (learned from SAELens's source, written here in our own code):

* ``cfg.json``: ``architecture`` (``standard``, ``topk``, ``jumprelu``, ``transcoder``,
  ``jumprelu_transcoder``, ``skip_transcoder``; a training checkpoint may say ``batchtopk``),
  ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
  ``normalize_activations``, ``reshape_activations``; ``k`` and
  ``rescale_acts_by_decoder_norm`` for ``topk``; ``d_out`` for transcoders; and ``metadata``
  with ``sae_lens_version``, ``hook_name`` (``hook_name_out`` for transcoders), ``model_name``
  and other facts. Configs older than 6.0 have ``hook_name`` / ``hook_point`` at the top, and
  ``activation_fn_str`` (``relu`` / ``topk`` with ``activation_fn_kwargs.k``).
* ``sae_weights.safetensors``: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae,
  d_out]``, ``b_dec [d_out]``, ``threshold [d_sae]`` (JumpReLU), ``W_skip [d_out, d_in]`` (skip
  transcoder); ``topk_threshold`` (a scalar) in a ``batchtopk`` training checkpoint.

A BatchTopK dictionary is saved as SAELens saves one for inference, a ``jumprelu`` with its learned
threshold, and ``metadata.hooked_kind = "batchtopk"`` tells :func:`load` to give its kind back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from hooked.io import file_sha256, read_json, read_tensors, write_json, write_tensors
from hooked.sae.dictionary import SAE, Transcoder

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
RUN = "run.json"  # a training run folder (hooked.sae.training) names its dictionaries there
SAE_LENS_VERSION = "6.0.0"  # the layout version written (SAELens reads 6.x configs as they are)

_SAE_ARCHS = {"standard": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}
_TRANSCODER_ARCHS = {
    "transcoder": "standard",
    "jumprelu_transcoder": "jumprelu",
    "skip_transcoder": "standard",
}
_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class SAEFileError(ValueError):
    """A dictionary folder that cannot be read as one; the message names the file and the key."""


# ---------------------------------------------------------------------- writing
def save(sae: SAE, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``sae`` to ``folder`` as ``cfg.json`` + ``sae_weights.safetensors`` (SAELens's layout).

    A new folder appears whole (written beside it, then renamed). An existing dictionary folder is
    replaced only with ``overwrite=True``; ``cfg.json`` records the weights' sha256, so a pair torn
    by a crash while overwriting is refused on load.
    """
    if not isinstance(sae, SAE):
        raise TypeError(f"hooked.sae.save needs an SAE or Transcoder, got {type(sae).__name__}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    if (folder / CFG).exists() and not overwrite:
        raise ValueError(f"{folder} already holds a dictionary ({CFG}); pass overwrite=True to replace it")
    tensors, cfg = _to_files(sae)
    if folder.is_dir():
        write_tensors(folder / WEIGHTS, tensors)
        cfg["metadata"]["hooked_weights_sha256"] = file_sha256(folder / WEIGHTS)
        write_json(folder / CFG, cfg)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_tensors(tmp / WEIGHTS, tensors)
        cfg["metadata"]["hooked_weights_sha256"] = file_sha256(tmp / WEIGHTS)
        write_json(tmp / CFG, cfg)
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _umask() -> int:
    from hooked.io import current_umask

    return current_umask()


def _to_files(sae: SAE) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the SAELens config of ``sae``."""
    tensors = {n: p.detach() for n, p in sae.named_parameters()}
    meta = {
        "sae_lens_version": SAE_LENS_VERSION,
        "sae_lens_training_version": SAE_LENS_VERSION,
        **sae.metadata,
        "hook_name": sae.hook,
        "hooked_kind": sae.kind,
    }
    cfg: dict[str, Any] = {
        "d_in": sae.d_in,
        "d_sae": sae.width,
        "dtype": str(sae.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": sae.normalize_activations,
        "reshape_activations": sae.reshape_activations,
    }
    kind = sae.kind
    if kind == "batchtopk":
        kind = "jumprelu"
        meta["k"] = sae.k
    if sae.is_transcoder:
        meta["hook_name_out"] = sae.hook_out
        cfg["d_out"] = sae.d_out
        if sae.has_skip:
            if kind != "standard":
                raise ValueError(f"SAELens has no skip transcoder of kind {sae.kind!r}; only a ReLU one")
            arch = "skip_transcoder"
        elif kind in ("standard", "jumprelu"):
            arch = "transcoder" if kind == "standard" else "jumprelu_transcoder"
        else:  # a TopK transcoder: SAELens has no such architecture; readable here
            arch = "topk_transcoder"
            cfg["k"] = sae.k
    else:
        arch = kind
        if kind == "topk":
            cfg["k"] = sae.k
            cfg["rescale_acts_by_decoder_norm"] = sae.rescale_acts_by_decoder_norm
    cfg["architecture"] = arch
    cfg["metadata"] = meta
    return tensors, cfg


# ---------------------------------------------------------------------- reading
def load(
    folder: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> SAE:
    """The dictionary saved in ``folder`` (by :func:`save`, or by SAELens), checked.

    Args:
        folder: holds ``cfg.json`` and ``sae_weights.safetensors``.
        device: where the parameters go.
        dtype: the parameters' dtype (default: the config's ``dtype``, as SAELens).
    """
    folder = Path(folder)
    if folder.is_dir() and not (folder / CFG).exists() and (folder / RUN).is_file():
        found = dictionary_folders(folder)
        if len(found) != 1:
            raise ValueError(
                f"{folder} is a training run with {len(found)} dictionaries ({', '.join(found)}); load one "
                "of "
                "their folders"
            )
        folder = next(iter(found.values()))
    cfg_path, weights_path = folder / CFG, folder / WEIGHTS
    if not folder.is_dir():
        raise FileNotFoundError(f"no such dictionary folder: {folder}")
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: a dictionary folder holds {CFG} and {WEIGHTS}")
    try:
        raw = read_json(cfg_path)
    except ValueError as e:
        raise SAEFileError(str(e)) from None
    if not isinstance(raw, dict):
        raise SAEFileError(f"{cfg_path} must hold a JSON object, got {type(raw).__name__}")
    cfg = _modern(raw)
    try:
        tensors = read_tensors(weights_path)
    except ValueError as e:
        raise SAEFileError(str(e)) from None
    recorded = cfg["metadata"].get("hooked_weights_sha256")
    if recorded is not None and recorded != file_sha256(weights_path):
        raise SAEFileError(
            f"{weights_path} does not match the sha256 {cfg_path} records: the weights were changed, or a "
            "save was interrupted while overwriting"
        )
    sae = _build(cfg, tensors, cfg_path, weights_path, dtype)
    return sae.to(device)


def _modern(raw: dict[str, Any]) -> dict[str, Any]:
    """A config in SAELens 6's shape (an older flat config is converted as SAELens converts it)."""
    cfg = dict(raw)
    meta = dict(cfg.get("metadata") or {})
    version = str(meta.get("sae_lens_version") or cfg.get("sae_lens_version") or "0")
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 6:
        renames = {"hook_point": "hook_name", "activation_fn_str": "activation_fn"}
        cfg = {renames.get(k, k): v for k, v in cfg.items()}
        cfg.setdefault("architecture", "standard")
        cfg.setdefault("apply_b_dec_to_input", True)
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if cfg.get("activation_fn") == "topk" and kwargs.get("k") is not None:
            cfg["architecture"] = "topk"
            cfg["k"] = kwargs["k"]
        for key in ("hook_name", "hook_name_out", "model_name", "hook_head_index", "context_size"):
            if key in cfg:
                meta.setdefault(key, cfg[key])
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool) or norm is None:
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    cfg["metadata"] = meta
    return cfg


def _build(
    cfg: dict[str, Any],
    tensors: dict[str, Tensor],
    cfg_path: Path,
    weights_path: Path,
    dtype: torch.dtype | None,
) -> SAE:
    arch = cfg.get("architecture")
    meta = cfg["metadata"]
    if arch not in _SAE_ARCHS and arch not in _TRANSCODER_ARCHS and arch != "topk_transcoder":
        known = ", ".join([*_SAE_ARCHS, *_TRANSCODER_ARCHS, "topk_transcoder"])
        raise SAEFileError(f"{cfg_path}: architecture {arch!r} is not one this library reads ({known})")
    for key in ("d_in", "d_sae"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SAEFileError(f"{cfg_path}: {key} must be a positive integer, got {value!r}")
    d_in, width = cfg["d_in"], cfg["d_sae"]
    if dtype is None:
        name = str(cfg.get("dtype", "float32")).removeprefix("torch.")
        if name not in _DTYPES:
            raise SAEFileError(f"{cfg_path}: dtype {cfg.get('dtype')!r} is not one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[name]
    norm = cfg.get("normalize_activations", "none")
    if norm == "expected_average_only_in":
        warnings.warn(
            f"{cfg_path}: normalize_activations='expected_average_only_in' needs a scaling factor that the "
            "folder does not hold; like SAELens's loader, the dictionary reads activations unscaled",
            stacklevel=3,
        )
    if "scaling_factor" in tensors:
        if not torch.all(tensors["scaling_factor"] == 1):
            raise SAEFileError(
                f"{weights_path}: key 'scaling_factor' holds values other than 1 (a finetuning scaling "
                "factor); "
                "this library does not read those"
            )
        del tensors["scaling_factor"]
    hook = meta.get("hook_name")
    if arch == "batchtopk" or (arch == "jumprelu" and meta.get("hooked_kind") == "batchtopk"):
        kind = "batchtopk"
    elif arch == "topk_transcoder":
        kind = "topk"
    else:
        kind = _SAE_ARCHS.get(arch) or _TRANSCODER_ARCHS[arch]
    k = cfg.get("k", meta.get("k"))
    if kind == "batchtopk" and "topk_threshold" in tensors:
        t = tensors.pop("topk_threshold")
        _check_tensor(t, "topk_threshold", (), weights_path)
        tensors["threshold"] = t.reshape(()).expand(width).clone()
    if kind == "batchtopk" and k is None:
        kind = "jumprelu"  # no k recorded: it is a JumpReLU as far as anything here can tell
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    k = cast("int | None", k)  # any other JSON value: the constructor refuses it (SAEFileError below)
    try:
        if arch in _TRANSCODER_ARCHS or arch == "topk_transcoder":
            d_out = cfg.get("d_out")
            if isinstance(d_out, bool) or not isinstance(d_out, int) or d_out < 1:
                raise SAEFileError(
                    f"{cfg_path}: a transcoder needs d_out (a positive integer), got {d_out!r}"
                )
            sae: SAE = Transcoder(
                d_in,
                d_out,
                width,
                kind,
                k=k,
                hook=hook,
                hook_out=meta.get("hook_name_out"),
                skip=arch == "skip_transcoder",
                metadata=_kept(meta),
                dtype=dtype,
            )
        else:
            sae = SAE(
                d_in,
                width,
                kind,
                k=k,
                hook=hook,
                apply_b_dec_to_input=cfg.get("apply_b_dec_to_input", True),
                normalize_activations=norm,
                reshape_activations=cfg.get("reshape_activations", "none"),
                rescale_acts_by_decoder_norm=cfg.get("rescale_acts_by_decoder_norm", False),
                metadata=_kept(meta),
                dtype=dtype,
            )
    except (ValueError, TypeError) as e:
        raise SAEFileError(f"{cfg_path}: {e}") from None
    own = dict(sae.named_parameters())
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing:
        raise SAEFileError(
            f"{weights_path}: key {missing[0]!r} is missing (a {arch!r} dictionary needs {', '.join(own)})"
        )
    if extra:
        raise SAEFileError(
            f"{weights_path}: unexpected key {extra[0]!r} for a {arch!r} dictionary (it has {', '.join(own)})"
        )
    with torch.no_grad():
        for name, p in own.items():
            _check_tensor(tensors[name], name, tuple(p.shape), weights_path)
            p.copy_(tensors[name].to(dtype))
    return sae


def _check_tensor(t: Tensor, key: str, shape: tuple[int, ...], path: Path) -> None:
    if not t.is_floating_point():
        raise SAEFileError(f"{path}: key {key!r} has dtype {t.dtype}; expected a floating dtype")
    if tuple(t.shape) != shape and not (shape == () and t.numel() == 1):
        raise SAEFileError(f"{path}: key {key!r} has shape {tuple(t.shape)}; expected {shape}")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise SAEFileError(
            f"{path}: key {key!r} holds {int(bad.sum())} non-finite value(s) (NaN or inf) of {t.numel()}"
        )


def _kept(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata a loaded dictionary carries on (not what :func:`save` writes afresh)."""
    drop = {"hooked_weights_sha256", "hooked_kind", "hook_name", "hook_name_out"}
    return {k: v for k, v in meta.items() if k not in drop}


def dictionary_folders(path: str | os.PathLike) -> dict[str, Path]:
    """``{name: folder}`` of the dictionaries of a finished training run, or of a dictionary folder."""
    path = Path(path)
    if (path / CFG).is_file():
        return {path.name: path}
    if (path / RUN).is_file():
        info = read_json(path / RUN)
        if not isinstance(info, dict) or not info.get("finished"):
            raise ValueError(
                f"{path} is a training run that has not finished; run the same training again to resume it"
            )
        return {name: path / name for name in info.get("dictionaries", [])}
    raise FileNotFoundError(
        f"{path} is neither a dictionary folder ({CFG}) nor a training run folder ({RUN})"
    )
