"""``import hooked`` stays light: nothing heavier than torch, jaxtyping and beartype is imported."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "transformers",
    "transformer_lens",
    "matplotlib",
    "sklearn",
    "torch._dynamo",
    "nnsight",
    "datasets",
    "pyarrow",
    "accelerate",
)


def imported_after(code: str) -> list[str]:
    probe = f"import sys; {code}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_import_hooked_loads_no_heavy_module():
    assert imported_after("import hooked, hooked.models") == []


def test_listing_the_registry_loads_no_heavy_module():
    # the CLI imports every built-in model, analysis and repro module to list them
    assert (
        imported_after(
            "from hooked.registry import entries; [entries(k) for k in ('model', 'analysis', 'repro')]"
        )
        == []
    )


def test_stores_distributed_and_placement_import_their_engines_when_used():
    # pyarrow / datasets when a store is written or read, accelerate when a model is placed
    code = "import hooked.store, hooked.store.command, hooked.distributed, hooked.lm.loading.placement"
    assert imported_after(code) == []
