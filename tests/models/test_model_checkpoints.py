"""Every model class with a ``config`` is a registered checkpoint class and round-trips exactly."""

from __future__ import annotations

import pytest
import torch

from hooked import checkpoint, registry
from hooked.models.rnn import HookedGRU, HookedLSTM
from hooked.protocol import split_batch

CHEAP = [n for n in registry.entries("model") if n not in ("smollm2-135m", "tiny-llama", "digits-ae")]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("name", CHEAP)
def test_registered_models_round_trip(name, tmp_path):
    model, data = registry.get("model", name).call(options={})
    assert checkpoint.class_name(type(model)) in checkpoint._CLASSES
    checkpoint.save(model, tmp_path / "ck")
    back = checkpoint.load(tmp_path / "ck")
    assert type(back) is type(model)
    _same(model, back)
    args, kwargs = split_batch(data)
    model.eval(), back.eval()
    with torch.no_grad():
        out, again = model(*args, **kwargs), back(*args, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    again = again[0] if isinstance(again, tuple) else again
    assert torch.equal(out, again)


@pytest.mark.parametrize("cls", [HookedGRU, HookedLSTM])
def test_recurrent_layers_round_trip(cls, tmp_path):
    torch.manual_seed(0)
    layer = cls(3, 5, num_layers=2)
    checkpoint.save(layer, tmp_path / "ck")
    back = checkpoint.load(tmp_path / "ck")
    _same(layer, back)
    x = torch.randn(2, 4, 3)
    assert torch.equal(layer(x)[0], back(x)[0])
