"""The residual stream's hook names on any backend (TransformerLens names on the bridge, module
paths on ``hooked.wrap``), so analyses need not know which backend they run on."""

from __future__ import annotations

import re
from typing import Any


def residual_hooks(model: Any) -> list[str]:
    """The residual stream's hook names: entering each layer, then leaving the last one.

    ``n_layers + 1`` names: ``blocks.{i}.hook_resid_pre`` ... ``blocks.{L-1}.hook_resid_post``
    on the bridge; ``<layers>.{i}.hook_in`` ... ``<layers>.{L-1}.hook_out`` on ``hooked.wrap``
    (the decoder layers' inputs and last output).
    """
    names = model.hook_dict
    if "blocks.0.hook_resid_pre" in names:
        n = 1 + max(
            int(m.group(1)) for k in names if (m := re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", k))
        )
        return [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    stacks: dict[str, set[int]] = {}
    for k in names:
        m = re.fullmatch(r"(.+)\.(\d+)\.hook_in", k)
        if m and f"{m.group(1)}.{m.group(2)}.hook_out" in names:
            stacks.setdefault(m.group(1), set()).add(int(m.group(2)))
    stacks = {p: s for p, s in stacks.items() if s == set(range(len(s))) and len(s) > 1}
    if not stacks:
        raise ValueError(
            f"cannot find the residual stream of {type(model).__name__}: expected TransformerLens names "
            "(blocks.N.hook_resid_pre) or a stack of layers wrapped with inputs (hooked.wrap(m, inputs=True))"
        )
    prefix = max(stacks, key=lambda p: (len(stacks[p]), -p.count(".")))
    n = len(stacks[prefix])
    return [f"{prefix}.{i}.hook_in" for i in range(n)] + [f"{prefix}.{n - 1}.hook_out"]


def residual_labels(n_layers: int) -> list[str]:
    """Labels for :func:`residual_hooks`' names: ``pre 0`` ... ``pre L-1``, ``post L-1``."""
    return [f"pre {i}" for i in range(n_layers)] + [f"post {n_layers - 1}"]
