"""hooked: named hook points, interventions and analyses for any PyTorch model.

The core is small: :class:`HookPoint` (an identity module to place wherever an activation should
be readable or editable), :class:`HookedModule` (the base class that names hook points and runs
``run_with_hooks`` / ``run_with_cache``), and :class:`ActivationCache`. Analyses and
interventions are written against :class:`Hookable`, which TransformerLens's ``TransformerBridge``
satisfies too. Heavy dependencies (transformers, transformer_lens, matplotlib) load only when a
feature that needs them is used.
"""

from typing import TYPE_CHECKING

from hooked._steps import forward_pass
from hooked.cache import ActivationCache
from hooked.errors import HookedError, HookReturnError, StopForward, UnknownHookError
from hooked.hook_fns import at_step, read_only
from hooked.hook_point import HookHandle, HookPoint
from hooked.hooked_module import HookedModule
from hooked.protocol import Hookable
from hooked.registry import register_analysis, register_model, register_repro

__version__ = "0.1.0"


if TYPE_CHECKING:  # loaded on first use (below); named here for type checkers
    from hooked.wrapping import Wrapped, unwrap, wrap


def __getattr__(name: str):
    # Loaded on first use, so that `import hooked` stays light.
    if name in ("wrap", "unwrap", "Wrapped"):
        from hooked import wrapping

        return getattr(wrapping, name)
    if name in ("lm", "sae"):
        import importlib

        return importlib.import_module(f"hooked.{name}")
    raise AttributeError(f"module 'hooked' has no attribute {name!r}")


__all__ = [
    "ActivationCache",
    "HookHandle",
    "HookPoint",
    "Hookable",
    "HookedError",
    "HookedModule",
    "HookReturnError",
    "StopForward",
    "UnknownHookError",
    "at_step",
    "forward_pass",
    "read_only",
    "unwrap",
    "wrap",
    "Wrapped",
    "register_analysis",
    "register_model",
    "register_repro",
]
