"""``remove_batch_dim``: drops the batch axis of every entry, per-step (ragged) ones included, or refuses
naming the entry; it never keeps sample 0 of a bigger batch."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooked.cache import ActivationCache
from tests.toys import TinyRNN


@settings(max_examples=80, deadline=None)
@given(
    batch=st.integers(1, 3),
    steps=st.integers(1, 4),
    ragged=st.booleans(),
    time_dim=st.sampled_from([0, 1, 2]),
    d=st.integers(1, 3),
)
def test_per_step_entries(batch, steps, ragged, time_dim, d):
    calls = [torch.randn(batch, d + (t if ragged and steps > 1 else 0)) for t in range(steps)]
    cache = ActivationCache.from_calls({"h": calls, "once": [torch.randn(batch, 2)]}, {"h": time_dim}, {"h"})
    if batch != 1:
        with pytest.raises(ValueError, match="needs batch size 1") as e:
            cache.remove_batch_dim()
        assert "'h'" in str(e.value) or "'once'" in str(e.value)
        return
    out = cache.remove_batch_dim()
    assert [t.tolist() for t in out.steps("h")] == [c[0].tolist() for c in calls]
    assert torch.equal(out["once"], cache["once"][0])
    if not (ragged and steps > 1):  # stacked: the same stack of the steps without their batch axis
        assert out.time_dim("h") == max(time_dim - 1, 0)
        assert torch.equal(out["h"], torch.stack([c[0] for c in calls], dim=out.time_dim("h")))


def test_ragged_batch_of_three_is_refused_not_cut_to_sample_0():
    calls = [torch.randn(3, 2), torch.randn(3, 5)]
    cache = ActivationCache.from_calls({"h": calls}, {"h": 1}, {"h"})
    with pytest.raises(ValueError, match=r"steps of 'h' have shapes \[\(3, 2\), \(3, 5\)\]"):
        cache.remove_batch_dim()


def test_per_step_scalars_have_no_batch_axis():
    cache = ActivationCache.from_calls({"s": [torch.tensor(1.0), torch.tensor(2.0)]}, {"s": 1}, {"s"})
    with pytest.raises(ValueError, match="'s' has shape"):
        cache.remove_batch_dim()


def test_time_major_steps_of_batch_one():
    # stacked on axis 0: [time, batch=1, d]; the old code took the time axis for the batch
    calls = [torch.full((1, 2), float(t)) for t in range(3)]
    cache = ActivationCache.from_calls({"h": calls}, {"h": 0}, {"h"})
    out = cache.remove_batch_dim()
    assert out["h"].tolist() == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]] and out.time_dim("h") == 0


def test_run_with_cache_remove_batch_dim_on_a_recurrent_model():
    rnn = TinyRNN()
    x = torch.randn(1, 5, 3)
    _, cache = rnn.run_with_cache(x, remove_batch_dim=True)
    _, full = rnn.run_with_cache(x)
    assert torch.equal(cache["hook_h"], full["hook_h"][0]) and cache.time_dim("hook_h") == 0
    with pytest.raises(ValueError, match="hook_h"):
        rnn.run_with_cache(torch.randn(2, 5, 3), remove_batch_dim=True)
