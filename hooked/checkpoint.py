"""Saving and loading models as ``model.safetensors`` + ``config.json`` (never pickle).

A checkpoint folder holds the parameters and buffers as safetensors and a JSON file naming the
model class, the keyword arguments that rebuild it, and free-form metadata (training settings,
metrics). Models opt in by exposing ``config``: a JSON-able dict of their constructor's keyword
arguments. Loading checks every tensor's name and shape and says which ones do not fit.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hooked.io import read_json, read_tensors, write_json, write_tensors

FORMAT = "hooked-checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRUSTED_PACKAGES = ("hooked", "analyses", "interventions")


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
    cls = type(model)
    write_tensors(directory / WEIGHTS, model.state_dict())
    write_json(
        directory / CONFIG,
        {
            "format": FORMAT,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "config": dict(config),
            "meta": dict(meta or {}),
        },
    )
    return directory


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    info = read_json(path)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{path} is not a hooked checkpoint config (expected format {FORMAT!r})")
    for key in ("class", "config"):
        if key not in info:
            raise ValueError(f"{path} has no {key!r} entry")
    return info


def load(
    directory: str | os.PathLike,
    cls: type[nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild the model saved in ``directory`` and load its weights.

    The class is taken from the config (only from this project's packages) unless ``cls`` is given.
    """
    info = read_config(directory)
    if cls is None:
        cls = _import_class(info["class"], Path(directory) / CONFIG)
    model = cls(**info["config"])
    load_weights(model, directory)
    return model.to(device)


def load_weights(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Load ``directory``'s weights into ``model``, checking names and shapes."""
    path = Path(directory) / WEIGHTS if Path(directory).is_dir() else Path(directory)
    tensors = read_tensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if wrong:
            parts.append("wrong shapes: " + "; ".join(wrong))
        raise ValueError(f"{path} does not fit {type(model).__name__}: " + ", ".join(parts))
    model.load_state_dict(tensors)
    return model


def _import_class(spec: str, where: Path) -> type[nn.Module]:
    module_name, _, qualname = spec.partition(":")
    if module_name.split(".")[0] not in TRUSTED_PACKAGES:
        raise ValueError(
            f"{where} names class {spec!r}, outside this project's packages {TRUSTED_PACKAGES}; "
            "pass cls=YourModel to checkpoint.load to load it"
        )
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"{where} names {spec!r}, which is not an nn.Module class")
    return obj
