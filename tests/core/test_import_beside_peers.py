"""hooked imports and works in a process where a peer library was imported first, in either order.

nnsight 0.8 mounts an unhashable ``.save`` method on ``object`` at import, which broke beartype's
import (and so ``hooked.typecheck``) when nnsight came first. Each case runs in a fresh process,
since the order of imports is what is tested. nnsight, pyvene and TransformerLens are test extras
(``.[peers]``, installed by ``.ci/install``): a missing one fails here rather than skipping.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# what a user does next: typechecked public API, a HookedModule, wrap of a plain module, a cache
USE_HOOKED = """
import torch
import hooked
from hooked.models import ToyReLU
from hooked.typecheck import typechecked, Float

model = ToyReLU(5, 2, seed=0)
out, cache = model.run_with_cache(torch.rand(3, 5))
assert cache["hook_hidden"].shape == (3, 1, 2), cache["hook_hidden"].shape


@typechecked
def double(x: Float[torch.Tensor, "n 3"]) -> Float[torch.Tensor, "n 3"]:
    return 2 * x


assert torch.equal(double(torch.ones(2, 3)), torch.full((2, 3), 2.0))
try:
    double(torch.ones(2, 4))  # the shape check still runs
except TypeError as e:
    assert "x" in str(e), e
else:
    raise AssertionError("the shape check did not run")
wrapped = hooked.wrap(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
_, c = wrapped.run_with_cache(torch.rand(2, 4))
assert len(c) > 0
print("HOOKED-OK")
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "first",
    [
        "import nnsight",
        pytest.param("import nnsight, pyvene, transformer_lens", marks=pytest.mark.slow),
        pytest.param("import pyvene", marks=pytest.mark.slow),
        pytest.param("import transformer_lens", marks=pytest.mark.slow),
    ],
)
def test_hooked_imports_and_runs_after_a_peer(first):
    done = _run(first + "\n" + USE_HOOKED)
    assert done.returncode == 0 and "HOOKED-OK" in done.stdout, done.stderr[-3000:]


def test_nnsight_keeps_its_save_method_after_hooked_is_imported():
    # hiding the mount during beartype's import must put it back: nnsight's `x.save()` still resolves
    done = _run(
        """
        import nnsight, torch
        before = object.__dict__["save"]
        import hooked.typecheck
        assert object.__dict__["save"] is before
        try:
            torch.ones(1).save()
        except ValueError as e:  # nnsight's own "save() was called outside a trace"
            assert "trace" in str(e), e
        print("SAVE-OK")
        """
    )
    assert done.returncode == 0 and "SAVE-OK" in done.stdout, done.stderr[-3000:]


@pytest.mark.slow
def test_peers_import_after_hooked():
    done = _run("import hooked, hooked.typecheck\nimport nnsight, pyvene, transformer_lens\n" + USE_HOOKED)
    assert done.returncode == 0 and "HOOKED-OK" in done.stdout, done.stderr[-3000:]


def test_any_unhashable_method_on_object_is_hidden_only_during_the_import():
    # the same failure without nnsight: an unhashable callable written into `object`'s dict
    done = _run(
        """
        import ctypes, gc
        import torch  # as nnsight does: libraries that scan object's attributes come first

        class Unhashable:
            __hash__ = None
            def __call__(self, *a):
                return "mounted"

        real = next(r for r in gc.get_referents(object.__dict__) if isinstance(r, dict))
        real["probe_method"] = Unhashable()
        ctypes.pythonapi.PyType_Modified(ctypes.py_object(object))
        try:
            frozenset(v for v in vars(object).values() if callable(v))
        except TypeError:
            pass
        else:
            raise AssertionError("the probe did not make object's attributes unhashable")

        import hooked.typecheck  # imports beartype
        import beartype
        assert isinstance(vars(object)["probe_method"], Unhashable)  # put back
        print("PROBE-OK")
        """
    )
    assert done.returncode == 0 and "PROBE-OK" in done.stdout, done.stderr[-3000:]


def test_nothing_is_hidden_when_object_is_untouched():
    from hooked._object_mounts import objects_attributes_hidden

    before = dict(vars(object))
    with objects_attributes_hidden() as hidden:
        assert hidden == {} or all(callable(v) for v in hidden.values())
    assert dict(vars(object)) == before
