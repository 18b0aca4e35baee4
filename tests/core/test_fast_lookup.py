"""Hook points found by plain attribute lookup (hooked.fast_lookup): the copy in the parent's
``__dict__`` stays in step when a hook point is assigned, replaced, set to None or deleted, and
nothing a model exposes changes: state_dict, named_modules, hook_dict, pickling, deepcopy,
torch.compile."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import hooked
from hooked.fast_lookup import is_bound
from tests.toys import MLPStack


class PlainStack(nn.Module):
    """MLPStack's structure without HookedModule (for comparing what modules expose)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(PlainBlock() for _ in range(3))
        self.hook_out = hooked.HookPoint()


class PlainBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.hook_resid_pre = hooked.HookPoint()
        self.hook_mlp_out = hooked.HookPoint()


def found_directly(module: nn.Module, name: str) -> bool:
    """Normal attribute lookup finds it (no nn.Module.__getattr__), and it is the child module."""
    return module.__dict__.get(name) is module._modules.get(name) is not None


def test_hook_points_of_a_hooked_module_and_its_plain_blocks_are_plain_attributes(mlp):
    assert found_directly(mlp, "hook_out")
    for block in mlp.blocks:
        assert found_directly(block, "hook_resid_pre") and found_directly(block, "hook_mlp_out")
        assert "lin" not in block.__dict__  # only hook points are copied
    assert "0" not in mlp.blocks.__dict__  # containers are indexed through _modules anyway


def test_assigned_replaced_none_and_deleted_stay_in_step(mlp):
    x = torch.randn(2, 8)
    block = mlp.blocks[1]
    old = block.hook_mlp_out
    new = hooked.HookPoint()
    block.hook_mlp_out = new  # replaced
    assert block.hook_mlp_out is new and mlp.hook_dict["blocks.1.hook_mlp_out"] is new
    fired = []
    mlp.add_hook("blocks.1.hook_mlp_out", lambda a, hook: fired.append(hook is new))
    old.add_hook(lambda a, hook: fired.append("old"))
    mlp(x)
    assert fired == [True]
    mlp.reset_hooks()

    block.add_module("hook_mlp_out", old)  # replaced through add_module
    assert block.hook_mlp_out is old
    block.hook_mlp_out = nn.Identity()  # replaced by another kind of module
    assert type(block.hook_mlp_out) is nn.Identity and "blocks.1.hook_mlp_out" not in mlp.hook_dict
    block.hook_mlp_out = hooked.HookPoint()
    block.hook_mlp_out = None  # set to None: nn.Module keeps the name, with None
    assert block.hook_mlp_out is None and "blocks.1.hook_mlp_out" not in mlp.hook_dict
    block.hook_mlp_out = new
    del block.hook_mlp_out  # nn.Module.__delattr__ removes from _modules only
    assert not hasattr(block, "hook_mlp_out") and "hook_mlp_out" not in block.__dict__
    with pytest.raises(AttributeError):
        block.hook_mlp_out  # noqa: B018
    block.hook_mlp_out = new  # assigned again
    assert found_directly(block, "hook_mlp_out")
    del mlp.hook_out
    assert not hasattr(mlp, "hook_out")
    mlp.hook_out = hooked.HookPoint()
    assert found_directly(mlp, "hook_out")
    assert torch.equal(mlp(x), MLPStack()(x))


def test_a_hook_point_added_to_a_block_later_is_found_and_kept_in_step(mlp):
    block = mlp.blocks[0]
    block.lin2 = nn.Linear(8, 8)
    block.hook_extra = hooked.HookPoint()
    assert "blocks.0.hook_extra" in mlp.hook_dict and found_directly(block, "hook_extra")
    blank = nn.Module()  # a plain module with no hook point yet, attached to the model
    mlp.extra = blank
    blank.hook_new = hooked.HookPoint()  # found normally until the model lists its hook points
    assert blank.hook_new is blank._modules["hook_new"]
    assert "extra.hook_new" in mlp.hook_dict and found_directly(blank, "hook_new")
    del blank.hook_new
    assert not hasattr(blank, "hook_new")


def test_names_a_class_attribute_shadows_are_not_copied():
    class Block(nn.Module):
        def hook_a(self):  # a method: it wins over a submodule of the same name in nn.Module
            return "method"

    class Model(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.block._modules["hook_a"] = hooked.HookPoint()  # add_module refuses the name

        def forward(self, x):
            return x

    m = Model()
    assert "block.hook_a" in m.hook_dict and m.block.hook_a() == "method"


def test_state_dict_named_modules_and_hook_dict_are_unchanged(mlp):
    plain = PlainStack()
    assert list(mlp.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in mlp.named_modules()] == [n for n, _ in plain.named_modules()]
    assert list(mlp.hook_dict) == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_mlp_out",
        "blocks.2.hook_resid_pre",
        "blocks.2.hook_mlp_out",
        "hook_out",
    ]
    assert len(list(mlp.modules())) == len(list(plain.modules())) and len(list(mlp.parameters())) == 6
    assert mlp.blocks[0].hook_resid_pre in set(mlp.modules())


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_keep_their_own_copies_in_step(mlp, how):
    x = torch.randn(2, 8)
    if how == "deepcopy":
        twin = copy.deepcopy(mlp)
    elif how == "pickle":
        twin = pickle.loads(pickle.dumps(mlp))
    else:
        buf = io.BytesIO()
        torch.save(mlp, buf)
        buf.seek(0)
        twin = torch.load(buf, weights_only=False)  # a whole module: our own object, in memory
    assert torch.equal(twin(x), mlp(x))
    block, orig = twin.blocks[0], mlp.blocks[0]
    assert found_directly(block, "hook_resid_pre") and block.hook_resid_pre is not orig.hook_resid_pre
    assert is_bound(block) and is_bound(twin)
    assert list(twin.state_dict()) == list(mlp.state_dict())
    with twin.hooks(fwd_hooks=[("hook_out", lambda a, hook: a * 0)]):
        assert torch.equal(twin(x), torch.zeros(2, 8)) and not torch.equal(mlp(x), torch.zeros(2, 8))
    del block.hook_resid_pre
    assert not hasattr(block, "hook_resid_pre") and hasattr(orig, "hook_resid_pre")


def test_a_plain_block_copied_alone_still_deletes_correctly(mlp):
    block = copy.deepcopy(mlp.blocks[2])  # a plain nn.Module: nothing rebinds its copy
    assert block.hook_mlp_out is block._modules["hook_mlp_out"]
    del block.hook_mlp_out
    assert not hasattr(block, "hook_mlp_out")
    block.hook_resid_pre = None
    assert block.hook_resid_pre is None


@pytest.mark.slow
def test_torch_compile_sees_the_same_model():
    torch._dynamo.reset()
    model = MLPStack()
    x = torch.randn(2, 8)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(x), model(x))
    with model.hooks(fwd_hooks=[("blocks.1.hook_mlp_out", lambda a, hook: a * 0)]):
        want = model(x)
        assert torch.allclose(compiled(x), want)
    model.blocks[1].hook_mlp_out = hooked.HookPoint()  # replaced after compiling
    model.add_hook("blocks.1.hook_mlp_out", lambda a, hook: a * 0)
    assert torch.allclose(compiled(x), want)
