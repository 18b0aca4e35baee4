"""Checkpoints load exactly what was saved or fail naming the file and what does not fit: dtypes and
shapes checked, no silent casts, damaged files found, and only registered classes rebuilt."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hooked import checkpoint
from hooked.io import read_json, write_json, write_tensors


@checkpoint.loadable
class Tiny(nn.Module):
    def __init__(self, d: int = 3, dtype: str = "float32"):
        super().__init__()
        self.config = dict(d=d, dtype=dtype)
        self.lin = nn.Linear(d, d, dtype=getattr(torch, dtype))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        return self.lin(x)


def test_float64_weights_load_exactly_not_as_inf(tmp_path):
    model = Tiny().double()
    with torch.no_grad():
        model.lin.weight.mul_(1e300)
    checkpoint.save(model, tmp_path / "ck")
    back = checkpoint.load(tmp_path / "ck")  # rebuilt as float32 by its config, then made float64
    assert back.lin.weight.dtype == torch.float64
    assert torch.equal(back.lin.weight, model.lin.weight) and torch.isfinite(back.lin.weight).all()
    with pytest.raises(ValueError, match=r"other dtypes.*lin.weight: file float64 vs model float32"):
        checkpoint.load_weights(Tiny(), tmp_path / "ck")  # into a float32 model: refused, not cast


def test_int8_weights_are_not_cast_silently(tmp_path):
    model = Tiny()
    state = {k: v.to(torch.int8) if k == "lin.weight" else v for k, v in model.state_dict().items()}
    write_tensors(tmp_path / "w.safetensors", state)
    target = Tiny()
    before = target.lin.weight.clone()
    with pytest.raises(ValueError, match="lin.weight: file int8 vs model float32"):
        checkpoint.load_weights(target, tmp_path / "w.safetensors")
    assert torch.equal(target.lin.weight, before)  # nothing half-loaded


def test_shapes_names_and_buffers_are_checked(tmp_path):
    checkpoint.save(Tiny(3), tmp_path / "ck")
    with pytest.raises(ValueError, match=r"wrong shapes: lin.weight: file \(3, 3\) vs model \(4, 4\)"):
        checkpoint.load_weights(Tiny(4), tmp_path / "ck")
    state = Tiny().state_dict()
    state["steps"] = torch.zeros((), dtype=torch.int32)
    write_tensors(tmp_path / "b.safetensors", state)
    with pytest.raises(ValueError, match="steps: file int32 vs model int64"):
        checkpoint.load_weights(Tiny(), tmp_path / "b.safetensors")
    del state["steps"]
    state["extra"] = torch.ones(1)
    write_tensors(tmp_path / "c.safetensors", state)
    with pytest.raises(ValueError, match=r"missing \['steps'\], unexpected \['extra'\]"):
        checkpoint.load_weights(Tiny(), tmp_path / "c.safetensors")


def test_round_trip_is_exact(tmp_path):
    model = Tiny(5)
    checkpoint.save(model, tmp_path / "ck", meta={"note": "x"})
    back = checkpoint.load(tmp_path / "ck")
    assert type(back) is Tiny and back.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


def _with_class(tmp_path, spec: str):
    checkpoint.save(Tiny(), tmp_path / "ck")
    info = read_json(tmp_path / "ck" / "config.json")
    info["class"] = spec
    write_json(tmp_path / "ck" / "config.json", info)
    return tmp_path / "ck"


@pytest.mark.parametrize(
    "spec",
    [
        "hooked.__main__:X",
        "hooked.checkpoint:torch.nn.Linear",
        "torch.nn:Linear",
        "hooked.cli:main",
        "os:system",
        "hooked.checkpoint:Tiny",
        "tests.core.test_checkpoint_safety:Tiny.forward",
    ],
)
def test_only_registered_classes_are_rebuilt(tmp_path, spec):
    had_main = "hooked.__main__" in sys.modules
    folder = _with_class(tmp_path, spec)
    with pytest.raises(ValueError, match="not a registered checkpoint class") as e:
        checkpoint.load(folder)
    assert repr(spec) in str(e.value) and "config.json" in str(e.value)
    assert had_main or "hooked.__main__" not in sys.modules  # the named module was never imported
    assert isinstance(checkpoint.load(folder, cls=Tiny), Tiny)  # the caller may name the class


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_any_class_string_is_refused_unless_registered(tmp_path_factory, spec):
    folder = _with_class(tmp_path_factory.mktemp("ck"), spec)
    if spec in checkpoint._CLASSES:
        checkpoint.load(folder)
        return
    with pytest.raises(ValueError, match="not a registered checkpoint class"):
        checkpoint.load(folder)


def test_a_config_that_does_not_rebuild_the_class_is_a_clear_error(tmp_path):
    checkpoint.save(Tiny(), tmp_path / "ck")
    info = read_json(tmp_path / "ck" / "config.json")
    info["config"]["bogus"] = 1
    write_json(tmp_path / "ck" / "config.json", info)
    with pytest.raises(ValueError, match="does not rebuild Tiny"):
        checkpoint.load(tmp_path / "ck")


@settings(max_examples=60, deadline=None)
@given(
    which=st.sampled_from(["model.safetensors", "config.json"]),
    how=st.sampled_from(["flip", "truncate", "delete"]),
    where=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 7),
)
def test_damaged_checkpoints_fail_clearly(tmp_path_factory, which, how, where, bit):
    folder = tmp_path_factory.mktemp("ck")
    model = Tiny()
    checkpoint.save(model, folder)
    path = folder / which
    data = bytearray(path.read_bytes())
    i = int(where * len(data))
    if how == "flip":
        data[i] ^= 1 << bit
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[:i]))
    else:
        path.unlink()
    try:
        back = checkpoint.load(folder)
    except (ValueError, FileNotFoundError) as e:
        assert str(folder) in str(e)
    else:  # a change that leaves the meaning intact (a JSON space, a key's case...) loads exactly
        assert which == "config.json"
        for k, v in model.state_dict().items():
            assert torch.equal(back.state_dict()[k], v)


def test_old_checkpoints_without_a_hash_still_load(tmp_path):
    checkpoint.save(Tiny(), tmp_path / "ck")
    info = json.loads((tmp_path / "ck" / "config.json").read_text())
    del info["weights_sha256"]
    write_json(tmp_path / "ck" / "config.json", info)
    assert isinstance(checkpoint.load(tmp_path / "ck"), Tiny)
