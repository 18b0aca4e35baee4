"""Fixtures of the dictionary tests: one torch thread (the tests' tensors are small, and on a
shared two-core machine a second thread only waits), and small activation stores with planted
sparse features."""

from __future__ import annotations

import pytest
import torch

import hooked


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Rows(hooked.HookedModule):
    """Passes its input through two hook points: ``hook_x`` (the input) and ``hook_y`` (the input
    rotated and doubled), so a store of its rows has a known SAE target and a known transcoder
    target (the planted features, rotated and doubled)."""

    def __init__(self, d_in: int, d_out: int | None = None, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(max(d_in, d_out or d_in), max(d_in, d_out or d_in), generator=g))
        self.map = torch.nn.Parameter(2.0 * q[:d_in, : d_out or d_in])  # a rotation, times 2
        self.hook_x = hooked.HookPoint()
        self.hook_y = hooked.HookPoint()

    def forward(self, x):
        x = self.hook_x(x)
        return self.hook_y(x @ self.map)


def planted(rows: int, d: int = 16, features: int = 32, k: int = 3, seed: int = 0):
    """``(X [rows, d], F [features, d])``: each row a sum of ``k`` random unit features ``F`` with
    magnitudes in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(features, d, generator=g)
    F /= F.norm(dim=1, keepdim=True)
    which = torch.rand(rows, features, generator=g).argsort(dim=1)[:, :k]
    acts = torch.zeros(rows, features).scatter_(1, which, torch.rand(rows, k, generator=g) + 0.5)
    return acts @ F, F


def write_store(path, X, d_out=None, seed=0):
    from hooked import store

    model = Rows(X.shape[1], d_out, seed)
    store.harvest(model, list(X.split(4096)), ["hook_x", "hook_y"], path, sequence=False, progress=False)
    return path, model


@pytest.fixture(scope="session")
def planted_store(tmp_path_factory):
    """A store of 16384 rows with 32 planted features in 16 dimensions (and ``hook_y``)."""
    X, F = planted(16384)
    path, model = write_store(tmp_path_factory.mktemp("planted") / "store", X)
    return path, X, F, model
