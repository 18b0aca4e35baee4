"""Saving and loading models as ``model.safetensors`` + ``config.json`` (never pickle).

A checkpoint folder holds the parameters and buffers as safetensors and a JSON file naming the
model class, the keyword arguments that rebuild it, and free-form metadata (training settings,
metrics). Models opt in by exposing ``config``: a JSON-able dict of their constructor's keyword
arguments. Loading checks the weights file against the SHA-256 the config records, and every
tensor's name, shape and dtype, and says which ones do not fit; nothing is cast silently (a
float64 checkpoint rebuilt by :func:`load` gives a float64 model).

Only registered classes are rebuilt from a config: a class registers with the
:func:`loadable` decorator (the project's models do), and ``config.json`` names it as
``module:QualName``, looked up in that table. Loading never imports the module a config names and
never walks attributes, so a config cannot make the loading process run code; any other class is
loaded by passing it (``load(path, cls=MyModel)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from hooked.io import file_sha256, read_json, read_tensors, write_json, write_tensors

FORMAT = "hooked-checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"

M = TypeVar("M", bound=type[nn.Module])
_CLASSES: dict[str, type[nn.Module]] = {}


def loadable(cls: M) -> M:
    """Class decorator: :func:`load` may rebuild ``cls`` from a checkpoint's config."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"checkpoint.loadable needs an nn.Module class, got {cls!r}")
    _CLASSES[class_name(cls)] = cls
    return cls


def class_name(cls: type) -> str:
    """How a checkpoint's config names ``cls``: ``module:QualName``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def save(
    model: nn.Module,
    directory: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``directory``; ``config`` defaults to ``model.config``."""
    if config is None:
        config = getattr(model, "config", None)
    if config is None:
        raise ValueError(
            f"checkpoint.save: {type(model).__name__} has no `config` attribute; pass "
            "config={...} with the keyword arguments that rebuild the model"
        )
    directory = Path(directory)
    weights = write_tensors(directory / WEIGHTS, model.state_dict())
    write_json(
        directory / CONFIG,
        {
            "format": FORMAT,
            "class": class_name(type(model)),
            "config": dict(config),
            "meta": dict(meta or {}),
            "weights_sha256": file_sha256(weights),
        },
    )
    return directory


MAX_CONFIG_BYTES = 64 * 2**20
MAX_CONFIG_DEPTH = 64
"""A config.json is read only if it is at most this large and nests its values at most this deep."""


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of a checkpoint folder (a regular file of bounded size and depth)."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"checkpoint: expected a checkpoint folder's path, got {type(directory).__name__}")
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"no such checkpoint folder: {directory}")
    path = Path(directory) / CONFIG
    info = read_json(path, max_bytes=MAX_CONFIG_BYTES)
    if _depth(info) > MAX_CONFIG_DEPTH:
        raise ValueError(f"{path} nests its values more than {MAX_CONFIG_DEPTH} levels deep; not loaded")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{path} is not a hooked checkpoint config (expected format {FORMAT!r})")
    for key in ("class", "config"):
        if key not in info:
            raise ValueError(f"{path} has no {key!r} entry")
    if not isinstance(info["class"], str) or not isinstance(info["config"], dict):
        raise ValueError(f"{path}: 'class' must be a string and 'config' an object of keyword arguments")
    return info


def load(
    directory: str | os.PathLike,
    cls: type[nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild the model saved in ``directory`` and load its weights.

    The class is the registered one (:func:`loadable`) that the config names, unless ``cls`` is
    given. A model whose floating-point tensors were all saved in one dtype other than the one
    it is built in (a float64 model) is converted to that dtype before loading, so the weights
    load exactly.
    """
    from hooked.checks import torch_device

    device = torch_device(device)
    info = read_config(directory)
    if cls is None:
        cls = _registered_class(info["class"], Path(directory) / CONFIG)
    try:
        model = cls(**info["config"])
    except Exception as e:  # a config a constructor refuses (an unknown keyword, a bad value)
        raise ValueError(
            f"{Path(directory) / CONFIG}: its config does not rebuild {cls.__name__}: {e}"
        ) from None
    tensors = _read_weights(directory)
    saved = {t.dtype for t in tensors.values() if t.is_floating_point()}
    own = {t.dtype for t in model.state_dict().values() if t.is_floating_point()}
    if len(saved) == 1 and len(own) == 1 and saved != own:
        model = model.to(next(iter(saved)))
    _load_checked(model, tensors, _weights_path(directory))
    return model.to(device)


def load_weights(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Load ``directory``'s weights into ``model``, checking names, shapes and dtypes (no casts)."""
    _load_checked(model, _read_weights(directory), _weights_path(directory))
    return model


def _weights_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / WEIGHTS if Path(directory).is_dir() else Path(directory)


def _read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights, checked against the hash the folder's config records (when it records one)."""
    path = _weights_path(directory)
    config = Path(directory) / CONFIG
    if Path(directory).is_dir() and config.is_file() and path.is_file():
        recorded = read_config(directory).get("weights_sha256")
        if recorded is not None and recorded != file_sha256(path):
            raise ValueError(
                f"{path} does not match the hash {config} records: the weights were damaged or replaced"
            )
    return read_tensors(path)


def _load_checked(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tensors[k].shape != own[k].shape
    ]
    dtypes = [
        f"{k}: file {_short(tensors[k].dtype)} vs model {_short(own[k].dtype)}"
        for k in own
        if k in tensors and tensors[k].dtype != own[k].dtype
    ]
    if missing or unexpected or wrong or dtypes:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if wrong:
            parts.append("wrong shapes: " + "; ".join(wrong))
        if dtypes:
            parts.append(
                "other dtypes (not cast: convert the model, e.g. model.to(torch.float64), or the file): "
                + "; ".join(dtypes)
            )
        raise ValueError(f"{path} does not fit {type(model).__name__}: " + ", ".join(parts))
    model.load_state_dict(tensors)


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value (without recursion)."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        v, d = todo.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            todo += [(x, d + 1) for x in v.values()]
        elif isinstance(v, list):
            todo += [(x, d + 1) for x in v]
    return deepest


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _registered_class(spec: str, where: Path) -> type[nn.Module]:
    """The registered class ``spec`` names; never imports a module or walks attributes."""
    if spec not in _CLASSES:
        from hooked import registry

        registry.load_entry_points()  # the built-in and installed models register their classes
    if spec not in _CLASSES:
        known = ", ".join(sorted(_CLASSES)) or "none"
        raise ValueError(
            f"{where} names class {spec!r}, which is not a registered checkpoint class (registered: "
            f"{known}); decorate the class with loadable (from hooked.checkpoint import loadable), or pass "
            "cls=YourModel to checkpoint.load"
        )
    return _CLASSES[spec]
