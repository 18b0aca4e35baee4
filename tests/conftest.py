"""Fixtures shared by every test folder (the models themselves are in :mod:`tests.toys`)."""

from __future__ import annotations

import pytest

from tests.toys import MLPStack, TinyRNN


@pytest.fixture
def mlp():
    return MLPStack()


@pytest.fixture
def rnn():
    return TinyRNN()
