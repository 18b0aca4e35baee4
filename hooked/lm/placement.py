"""Language models larger than one device: split over devices, offloaded to the CPU or to disk.

``hooked.lm.load(name, device_map=..., max_memory=..., offload_folder=...)`` comes here: the
transformers model is loaded through accelerate (``from_pretrained(device_map=...)``), which puts
each layer on a GPU, the CPU, or on disk (weights read into memory just for the layer's forward),
and moves activations between them. The hooked backends wrap that model as usual, so hooks,
caches, patching and DAS run unchanged (``interventions`` move replacements to the device of the
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

import torch
from torch import Tensor, nn

from hooked.errors import HookedError

DeviceMap = str | Mapping[str, Any]


class OffloadedWeightsError(HookedError, RuntimeError):
    """Weights were read that are offloaded (``meta`` tensors) outside :func:`materialized`."""


def load_placed(
    name_or_path: str | os.PathLike,
    *,
    device_map: DeviceMap | None,
    max_memory: Mapping[Any, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    dtype: torch.dtype | str = torch.float32,
    backend: str = "bridge",
) -> Any:
    """What :func:`hooked.lm.load` returns for a ``device_map`` / ``max_memory``: the model split
    by accelerate, wrapped by ``backend`` (see :mod:`hooked.lm`)."""
    from hooked.lm import loading

    if importlib.util.find_spec("accelerate") is None:
        raise loading.LMLoadError(
            "device_map needs accelerate: `pip install accelerate` (or `pip install 'hooked[scale]'`)"
        )
    if backend not in loading.BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(loading.BACKENDS)}, got {backend!r}")
    transformers = loading._import_transformers()
    dtype = loading._dtype(dtype)
    source, local = loading.resolve(name_or_path)
    device_map = "auto" if device_map is None else device_map
    folder = Path(offload_folder) if offload_folder else _offload_folder(source, device_map, max_memory)
    kwargs: dict[str, Any] = dict(
        dtype=dtype, device_map=device_map, offload_folder=str(folder), local_files_only=local
    )
    if max_memory is not None:
        kwargs["max_memory"] = dict(max_memory)
    try:
        hf = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs).eval()
    except (OSError, ValueError, KeyError) as e:
        raise loading.LMLoadError(
            f"could not load {source} with device_map={device_map!r}, max_memory={max_memory!r}: "
            f"{loading._first_line(e)}"
        ) from None
    tokenizer = _tokenizer(transformers, source, local)
    hf.tokenizer = tokenizer
    if backend == "hf":
        return hf
    if backend == "wrap":
        return loading.wrap_lm(hf, tokenizer)
    first = next(iter(device_map_of(hf).values()), "cpu")
    device = "cpu" if first in ("disk", "meta") else first
    return loading.bridge(hf, tokenizer, loading.official_name(name_or_path), device=device, dtype=dtype)


def _tokenizer(transformers: Any, source: str, local: bool) -> Any:
    """The folder's tokenizer; None for a folder that has none (e.g. a bare model saved for tests)."""
    path = Path(source)
    if (
        local
        and path.is_dir()
        and not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    ):
        return None
    return transformers.AutoTokenizer.from_pretrained(source, local_files_only=local)


def _offload_folder(source: str, device_map: DeviceMap, max_memory: Any) -> Path:
    from hooked.offline import cache_dir

    key = json.dumps([source, device_map, max_memory], sort_keys=True, default=str)
    return cache_dir() / "offload" / hashlib.sha256(key.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------- where things are
def _hf_model(model: Any) -> nn.Module:
    """The transformers model inside a hooked LM (``hooked.wrap`` or the bridge), or ``model``."""
    for attr in ("module", "original_model"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and hasattr(inner, "hf_device_map"):
            return inner
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
            f"in place ({shown}); read them inside hooked.lm.placement.materialized(model, ...) or with "
            "hooked.lm.placement.parameter(model, name)"
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
