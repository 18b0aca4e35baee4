"""Messages that name what was wrong and what was expected (issue 15's list of messages to mend)."""

from __future__ import annotations

import pytest
import torch
from jaxtyping import TypeCheckError
from torch import nn

import hooked
from hooked.protocol import collect_activations
from hooked.typecheck import Float, typechecked


@typechecked
def scaled(x: Float[torch.Tensor, "n d"], *, epsilon: float = 0.5) -> Float[torch.Tensor, "n d"]:
    return x * epsilon


class Branchy(hooked.HookedModule):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.hook_a = hooked.HookPoint()
        self.hook_b = hooked.HookPoint()

    def forward(self, x, skip: bool = True):
        x = self.hook_a(self.lin(x))
        if not skip:
            x = self.hook_b(x)
        return x.sum()


def test_a_hook_point_that_did_not_run_is_not_called_missing():
    model = Branchy()
    _, cache = model.run_with_cache(torch.randn(2, 4))
    with pytest.raises(KeyError) as e:
        cache["hook_b"]
    msg = str(e.value)
    assert "no hook point named" not in msg and "did not run" in msg and "hook_a" in msg
    with pytest.raises(ValueError, match=r"'hook_b' exist on Branchy but did not run"):
        collect_activations(model, [torch.randn(2, 4)], ["hook_b"])


def test_unknown_hook_message_reads_as_sentences():
    model = Branchy()
    with pytest.raises(KeyError) as e:
        model.run_with_cache(torch.randn(2, 4), names_filter="zzz")
    msg = str(e.value)
    assert "on Branchy. It has 2 hook points" in msg and "on Branchy It" not in msg
    with pytest.raises(KeyError) as e:
        model.run_with_cache(torch.randn(2, 4), names_filter="hook_c")
    assert "; did you mean: hook_" in str(e.value) and "? It has 2" in str(e.value)


def test_incl_bwd_with_stop_at_says_why():
    model = Branchy()
    with pytest.raises(ValueError, match=r"incl_bwd=True .* cannot be combined with stop_at='hook_a'") as e:
        model.run_with_cache(torch.randn(2, 4), incl_bwd=True, stop_at="hook_a")
    assert "NoneType" not in str(e.value)
    assert not any(hp.has_hooks() for hp in model.hook_dict.values())


def test_an_int_where_a_float_is_annotated_is_accepted_and_type_errors_are_short():
    x = torch.ones(3, 2)
    assert torch.equal(scaled(x, epsilon=1), x)  # PEP 484: an int is a float
    with pytest.raises(TypeCheckError) as e:
        scaled(x, epsilon="wide")
    msg = str(e.value)
    assert "'epsilon'" in msg and "wide" in msg and "Called with parameters" not in msg
    assert len(msg.splitlines()) <= 6
    with pytest.raises(TypeCheckError, match="'x'"):
        scaled(torch.ones(3))
