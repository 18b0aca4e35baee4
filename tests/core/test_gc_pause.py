"""``run_with_cache`` holds the cyclic collector off while it records, and leaves it as it found it."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import hooked


@pytest.fixture
def model():
    return hooked.wrap(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), inputs=True)


def test_the_collector_is_off_while_recording_and_on_again_after(model):
    seen = []
    model.add_hook("0.hook_out", lambda act, hook: seen.append(gc.isenabled()))
    try:
        assert gc.isenabled()
        _, cache = model.run_with_cache(torch.ones(2, 3))
    finally:
        model.reset_hooks()
    assert seen == [False] and gc.isenabled()
    assert torch.equal(cache["hook_out"], model(torch.ones(2, 3)))  # the recording is unchanged


def test_a_raising_forward_turns_it_on_again(model):
    def boom(act, hook):
        raise RuntimeError("boom")

    model.add_hook("1.hook_out", boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            model.run_with_cache(torch.ones(2, 3))
    finally:
        model.reset_hooks()
    assert gc.isenabled()


def test_a_collector_switched_off_by_the_caller_stays_off(model):
    gc.disable()
    try:
        model.run_with_cache(torch.ones(2, 3))
        assert not gc.isenabled()
    finally:
        gc.enable()
