"""Language models larger than one device: split over devices, offloaded to the CPU or to disk.

``hooked.lm.load(name, device_map=..., max_memory=..., offload_folder=...)`` loads the model
through accelerate (``from_pretrained(device_map=...)``, :func:`from_pretrained_kwargs`), which puts each
layer on a GPU, the CPU, or on disk (weights read into memory just for the layer's forward), and
moves activations between them. The hooked backends wrap that model as usual, so hooks, caches,
patching and DAS run unchanged (``interventions`` move replacements to the device of the
activation they replace).

A layer offloaded to disk or CPU has ``meta`` tensors as parameters between forwards. Code that
reads weights gets them with :func:`materialized` (a context in which the offloaded weights of the
chosen modules are loaded) or :func:`parameter` (one weight as a real tensor); :func:`offloaded`
lists them and :func:`require_real_weights` raises a clear error instead of letting ``meta``
tensors through. TransformerLens's bridge already refuses to read ``meta`` weights (``W_in``
etc.) with an error; inside :func:`materialized` it reads the real ones.

``device_map``: ``"auto"`` / ``"balanced"`` / ``"sequential"`` (accelerate fills the devices in
``max_memory`` order, then the CPU, then disk), a device (``"cpu"``, ``"cuda:0"``) or a dict
``{module path: device}`` with ``"disk"`` for offloaded modules. ``max_memory``: ``{0: "10GiB",
"cpu": "30GiB"}``. Offloaded weights go to ``offload_folder`` (default: a folder under the hooked
cache, one per model and map).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from hooked.errors import HookedError

DeviceMap = str | Mapping[str, Any]


class OffloadedWeightsError(HookedError, RuntimeError):
    """Weights were read that are offloaded (``meta`` tensors) outside :func:`materialized`."""


class PlacementError(HookedError, OSError):
    """A model cannot be split as asked; the message says what to install or pass instead."""


def from_pretrained_kwargs(
    name_or_path: str | os.PathLike,
    device_map: DeviceMap | None,
    max_memory: Mapping[Any, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The ``from_pretrained`` arguments that split a model (what :func:`hooked.lm.load` passes
    on for ``device_map`` / ``max_memory``): the map (default ``"auto"``), the memory budget and
    the folder for offloaded weights (default: one under the hooked cache per model and map;
    weights read from safetensors files are not copied there)."""
    if importlib.util.find_spec("accelerate") is None:
        raise PlacementError(
            "device_map needs accelerate: `pip install accelerate` (or `pip install 'hooked[scale]'`)"
        )
    device_map = "auto" if device_map is None else device_map
    if not isinstance(device_map, (str, Mapping)):
        raise PlacementError(
            f"device_map must be 'auto', 'balanced', 'sequential', a device or a dict, got {device_map!r}"
        )
    folder = offload_folder or _offload_folder(str(name_or_path), device_map, max_memory)
    kwargs: dict[str, Any] = {"device_map": device_map, "offload_folder": str(folder)}
    if max_memory is not None:
        kwargs["max_memory"] = dict(max_memory)
    return kwargs


def execution_device(model: Any) -> str:
    """The first device of a split model's map that is not disk (where its inputs go)."""
    for device in device_map_of(model).values():
        if device not in ("disk", "meta"):
            return device
    return "cpu"


def _offload_folder(source: str, device_map: DeviceMap, max_memory: Any) -> Path:
    from hooked.offline import cache_dir

    key = json.dumps([source, device_map, max_memory], sort_keys=True, default=str)
    return cache_dir() / "offload" / hashlib.sha256(key.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------- where things are
def _hf_model(model: Any) -> nn.Module:
    """The transformers model inside a hooked LM (any backend), or ``model`` itself."""
    from hooked.lm.backends.backend import backend_of

    try:
        return backend_of(model).hf
    except TypeError:
        return model


def device_map_of(model: Any) -> dict[str, str]:
    """``{module path: device}`` of a model loaded with a device map (``{}`` otherwise)."""
    hf = _hf_model(model)
    return {
        k: str(v) if not isinstance(v, int) else f"cuda:{v}"
        for k, v in getattr(hf, "hf_device_map", {}).items()
    }


def offloaded(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers whose values are not in memory (``meta`` tensors)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return [n for n, t in named if t.device.type == "meta"]


def require_real_weights(model: nn.Module, what: str = "this") -> None:
    """Raise :class:`OffloadedWeightsError` if any weight of ``model`` is offloaded (``meta``)."""
    names = offloaded(model)
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise OffloadedWeightsError(
            f"{what} reads weights, but {len(names)} are offloaded to CPU or disk and have no values "
            f"in place ({shown}); read them inside hooked.lm.loading.placement.materialized(model, ...) "
            "or with hooked.lm.loading.placement.parameter(model, name)"
        )


@contextlib.contextmanager
def materialized(model: nn.Module, *prefixes: str) -> Iterator[nn.Module]:
    """Inside, the offloaded weights of ``model``'s modules under ``prefixes`` (module paths; all
    without) are loaded onto their execution device, and put back after.

    Loading a whole model that does not fit defeats the split: name the layers to read, e.g.
    ``materialized(model, "model.layers.20")``.
    """
    from accelerate.utils import align_module_device, has_offloaded_params

    chosen = [
        m
        for name, m in model.named_modules()
        if has_offloaded_params(m)
        and (not prefixes or any(_under(name, p) or _under(p, name) for p in prefixes))
    ]
    with contextlib.ExitStack() as stack:
        for m in chosen:
            stack.enter_context(align_module_device(m))
        yield model


def parameter(model: nn.Module, name: str) -> Tensor:
    """The parameter or buffer ``name`` of ``model`` as a real tensor (a copy if it was offloaded)."""
    tensors = dict([*model.named_parameters(), *model.named_buffers()])
    if name not in tensors:
        raise KeyError(f"{type(model).__name__} has no parameter or buffer named {name!r}")
    if tensors[name].device.type != "meta":
        return tensors[name]
    module_path = name.rpartition(".")[0]
    with materialized(model, module_path):
        value = dict([*model.named_parameters(), *model.named_buffers()])[name]
        if value.device.type == "meta":
            raise OffloadedWeightsError(f"{name} is offloaded and accelerate could not load it")
        return value.detach().clone()


def _under(name: str, prefix: str) -> bool:
    """Whether module path ``name`` is ``prefix`` or inside it (everything is inside the root "")."""
    return name == prefix or prefix == "" or name.startswith(prefix + ".")
