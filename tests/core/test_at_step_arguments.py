"""``at_step`` arguments: a step is an int >= 0 (a Python or numpy integer, not a bool or a string or a
float), given alone or as an iterable of them; anything else is a TypeError / ValueError naming
what came. A step the sequence never reaches is reported, not silently skipped.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hooked
from tests.toys import TinyRNN


def zero(act, hook):
    return act * 0


def _fires_at(steps_arg, length: int = 3) -> list[int]:
    rnn = TinyRNN()
    seen = []

    def record(act, hook):
        seen.append(hook.step)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rnn.run_with_hooks(
            torch.randn(1, length, 3), fwd_hooks=[("hook_h", hooked.at_step(steps_arg, record))]
        )
    return seen


@pytest.mark.parametrize(("steps", "expected"), [(1, [1]), ([0, 2], [0, 2]), (range(2), [0, 1]), ({2}, [2])])
def test_valid_steps_fire_exactly_there(steps, expected):
    assert _fires_at(steps) == expected


@pytest.mark.parametrize("bad", ["12", "1", True, False, 1.5, 2.0, [1, 1.5], [True], b"\x01", None, [None]])
def test_bad_steps_are_refused_naming_what_came(bad):
    with pytest.raises(TypeError, match="at_step") as e:
        hooked.at_step(bad, zero)
    assert type(bad).__name__ in str(e.value) or repr(bad) in str(e.value)


def test_numpy_integers_are_steps():
    assert _fires_at(np.int64(2)) == [2]
    assert _fires_at(np.arange(2)) == [0, 1]


def test_no_steps_at_all_is_refused():
    with pytest.raises(ValueError, match="at_step"):
        hooked.at_step([], zero)


def test_negative_steps_are_refused():
    with pytest.raises(ValueError, match="at_step"):
        hooked.at_step(-1, zero)


def test_a_step_the_sequence_never_reaches_is_reported():
    rnn = TinyRNN()
    x = torch.randn(1, 3, 3)
    with pytest.warns(UserWarning, match=r"hook_h.*10"):
        out = rnn.run_with_hooks(x, fwd_hooks=[("hook_h", hooked.at_step(10, zero))])
    assert torch.equal(out, rnn(x))  # it ran unedited, and the user was told


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.integers(-5, 20),
        st.lists(st.integers(0, 20), max_size=4),
        st.text(max_size=3),
        st.floats(allow_nan=True),
        st.booleans(),
    )
)
def test_any_argument_gives_the_steps_or_a_clear_error(arg):
    valid = (isinstance(arg, int) and not isinstance(arg, bool) and arg >= 0) or (
        isinstance(arg, list) and len(arg) > 0
    )
    if valid:
        expected = sorted({arg} if isinstance(arg, int) else set(arg))
        assert _fires_at(arg, length=21) == expected
    else:
        with pytest.raises((TypeError, ValueError), match="at_step"):
            hooked.at_step(arg, zero)
