"""Forward hooks that compute what happens inside a module run before the module's own hook points.

The wrap backend's TransformerLens hook points inside a module are PyTorch forward hooks on that
module: ``N.hook_scale`` / ``hook_normalized`` on a norm (:mod:`hooked.lm.backends.norms`), each
head's input on the q / k / v projections (:mod:`hooked.lm.backends.head_inputs`), ``hook_q`` /
``hook_k`` / ``hook_v`` on the same projections and ``hook_result`` on the output projection
(:mod:`hooked.lm.backends.projections`). Some of them recompute the module's output from its
input when edited, so they must run before the module's ``hook_out`` point (and any other forward
hook on it) sees the output: otherwise an edit at ``hook_out``, or the gradient a backward hook
there waits for, would be dropped, or the answer would depend on which hook was attached first.
Among themselves they run in a fixed order (``rank``: the per-head inputs, which recompute the
projection, before the per-head outputs, which read it), whatever order they were installed in.

:func:`inside_hook` registers such a hook; it is the one place that orders a module's forward
hooks (PyTorch keeps them in ``module._forward_hooks``, an ordered dict by handle id, which its
own ``prepend=True`` reorders the same way).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from torch import nn

# module -> {handle id: rank} of the inside hooks registered on it
_RANKS: weakref.WeakKeyDictionary[nn.Module, dict[int, int]] = weakref.WeakKeyDictionary()


def inside_hook(module: nn.Module, hook: Callable[..., Any], rank: int) -> Any:
    """``module.register_forward_hook(hook)``, run before every forward hook not registered through
    here and after the inside hooks of a lower ``rank`` (equal ranks: first installed, first run);
    returns PyTorch's handle."""
    handle = module.register_forward_hook(hook, prepend=True)
    hooks = cast(OrderedDict, module._forward_hooks)  # typed as a dict; PyTorch keeps an OrderedDict
    ranks = _RANKS.setdefault(module, {})
    for stale in [i for i in ranks if i not in hooks]:
        del ranks[stale]
    ranks[handle.id] = rank
    for hid in sorted(ranks, key=lambda i: (ranks[i], i), reverse=True):  # the lowest ends up first
        hooks.move_to_end(hid, last=False)
    return handle
