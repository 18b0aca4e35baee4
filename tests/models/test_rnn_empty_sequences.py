"""HookedGRU / HookedLSTM on a sequence with no steps: a clear error in every execution mode (PyTorch's
own layers refuse it too), and a batch with no rows still runs."""

from __future__ import annotations

import pytest
import torch

import hooked
from hooked.models.rnn import HookedGRU, HookedLSTM


def _modes(layer):
    yield "plain", lambda x: layer(x)
    yield "cache", lambda x: layer.run_with_cache(x)
    yield (
        "edit every step",
        lambda x: layer.run_with_hooks(x, fwd_hooks=[("hook_h_l0", lambda a, hook: a * 2)]),
    )
    yield (
        "edit one step",
        lambda x: layer.run_with_hooks(
            x, fwd_hooks=[("hook_h_l0", hooked.at_step(0, lambda a, hook: a * 2))]
        ),
    )


@pytest.mark.parametrize("cls", [HookedGRU, HookedLSTM])
@pytest.mark.parametrize(
    ("batch_first", "shape", "axis"), [(True, (2, 0, 3), 1), (False, (0, 2, 3), 0), (True, (0, 3), 0)]
)
def test_zero_steps_is_a_clear_error(cls, batch_first, shape, axis):
    layer = cls(3, 4, batch_first=batch_first)
    for mode, run in _modes(layer):
        with pytest.raises(
            ValueError, match=rf"{cls.__name__}: the input .* has no time steps \(axis {axis}\)"
        ):
            run(torch.randn(shape))
        assert not any(hp.has_hooks() for hp in layer.hook_dict.values()), mode  # hooks removed


@pytest.mark.parametrize("cls", [HookedGRU, HookedLSTM])
def test_a_batch_of_no_rows_matches_pytorch(cls):
    layer = cls(3, 4)
    x = torch.randn(0, 5, 3)
    plain = layer(x)[0]
    out, cache = layer.run_with_cache(x)
    assert plain.shape == out[0].shape == (0, 5, 4) and cache["hook_h_l0"].shape == (0, 5, 4)
