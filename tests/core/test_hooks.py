"""Behaviour of HookPoint and HookedModule that users rely on."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hooked
from hooked import HookReturnError, UnknownHookError, at_step, read_only
from tests.toys import MLPStack


def identity(act, hook):
    return act


def test_names_are_dotted_module_paths(mlp):
    names = list(mlp.hook_dict)
    assert names == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_mlp_out",
        "blocks.2.hook_resid_pre",
        "blocks.2.hook_mlp_out",
        "hook_out",
    ]
    assert all(mlp.hook_dict[n].name == n for n in names)
    assert "blocks.0.lin" in mlp.mod_dict and "" not in mlp.mod_dict


def test_hook_points_added_after_construction_are_found(mlp):
    mlp.extra = hooked.HookPoint()
    assert "extra" in mlp.hook_dict


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 16),
    batch=st.integers(1, 5),
    n_blocks=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_identity_hooks_leave_outputs_bit_identical(d, batch, n_blocks, seed):
    model = MLPStack(d, n_blocks, seed)
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(seed))
    plain = model(x)
    hooked_out = model.run_with_hooks(
        x, fwd_hooks=[(lambda n: True, identity)], bwd_hooks=[(lambda n: True, identity)]
    )
    assert torch.equal(plain, hooked_out)
    _, cache = model.run_with_cache(x)
    assert torch.equal(cache["hook_out"], plain)


def test_cache_equals_hand_written_forward(mlp):
    x = torch.randn(5, 8)
    out, cache = mlp.run_with_cache(x)
    resid = x
    for i, block in enumerate(mlp.blocks):
        assert torch.equal(cache[f"blocks.{i}.hook_resid_pre"], resid)
        mlp_out = torch.tanh(block.lin(resid))
        assert torch.allclose(cache[f"blocks.{i}.hook_mlp_out"], mlp_out)
        resid = resid + mlp_out
    assert torch.allclose(out, resid)
    assert not any(t.requires_grad for t in cache.values())


def test_editing_hook_changes_downstream(mlp):
    x = torch.randn(2, 8)

    def zero_mlp(act, hook):
        return torch.zeros_like(act)

    out = mlp.run_with_hooks(x, fwd_hooks=[(lambda n: n.endswith("mlp_out"), zero_mlp)])
    assert torch.equal(out, x)  # every block's contribution removed: the residual is the input


def test_hooks_are_gone_after_run_and_after_exception(mlp):
    x = torch.randn(2, 8)
    mlp.run_with_hooks(x, fwd_hooks=[(lambda n: True, identity)], bwd_hooks=[("hook_out", identity)])
    assert not any(hp.has_hooks() for hp in mlp.hook_points())

    def boom(act, hook):
        raise RuntimeError("boom")

    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom") as info:
        mlp.run_with_hooks(
            x, fwd_hooks=[("blocks.0.hook_resid_pre", identity), ("blocks.1.hook_mlp_out", boom)]
        )
    assert "blocks.1.hook_mlp_out" in "".join(getattr(info.value, "__notes__", []))
    assert not any(hp.has_hooks() for hp in mlp.hook_points())
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    # run_with_cache removes its recording hooks too when the forward raises
    handle = mlp.add_hook("hook_out", boom)
    with pytest.raises(RuntimeError):
        mlp.run_with_cache(x)
    handle.remove()
    assert not any(hp.has_hooks() for hp in mlp.hook_points())


def test_backward_hooks_see_gradients(mlp):
    x = torch.randn(3, 8)
    seen = {}

    def grab(grad, hook):
        seen[hook.name] = grad.clone()

    out = mlp.run_with_hooks(x, bwd_hooks=[("blocks.1.hook_resid_pre", grab), ("hook_out", grab)])
    # the hooks were removed from the hook points, but are bound to this forward's graph
    assert not any(hp.has_hooks() for hp in mlp.hook_points())
    (out**2).sum().backward()
    assert torch.allclose(seen["hook_out"], 2 * out.detach())

    # compare with autograd on the activation itself
    _, cache = mlp.run_with_cache(x, names_filter="blocks.1.hook_resid_pre")
    resid = cache["blocks.1.hook_resid_pre"].clone().requires_grad_(True)
    rest = resid
    for block in mlp.blocks[1:]:
        rest = block(rest)
    (g,) = torch.autograd.grad((rest**2).sum(), resid)
    assert torch.allclose(seen["blocks.1.hook_resid_pre"], g, atol=1e-6)


def test_backward_hook_can_replace_gradient(mlp):
    x = torch.randn(3, 8, requires_grad=True)
    out = mlp.run_with_hooks(x, bwd_hooks=[("blocks.0.hook_resid_pre", lambda g, hook: torch.zeros_like(g))])
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_incl_bwd_caches_gradients(mlp):
    x = torch.randn(3, 8)

    class Loss(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.net = mlp

        def forward(self, x):
            return (self.net(x) ** 2).sum()

    out, cache = Loss().run_with_cache(x, incl_bwd=True)
    assert torch.allclose(cache["net.hook_out_grad"], 2 * cache["net.hook_out"])
    with pytest.raises(ValueError, match="scalar"):
        mlp.run_with_cache(x, incl_bwd=True)
    assert not any(hp.has_hooks() for hp in mlp.hook_points())


def test_nested_hooks_blocks_remove_only_their_own(mlp):
    x = torch.randn(2, 8)
    calls = []

    def record(tag):
        return lambda act, hook: calls.append((tag, hook.name))

    with mlp.hooks(fwd_hooks=[("hook_out", record("outer"))]):
        with mlp.hooks(
            fwd_hooks=[("hook_out", record("inner")), ("blocks.0.hook_resid_pre", record("inner"))]
        ):
            mlp(x)
        assert [h for h in mlp.hook_dict["hook_out"].fwd_hooks]  # the outer hook is still there
        assert not mlp.hook_dict["blocks.0.hook_resid_pre"].has_hooks()
        mlp(x)
    assert not any(hp.has_hooks() for hp in mlp.hook_points())
    assert calls == [
        ("inner", "blocks.0.hook_resid_pre"),
        ("outer", "hook_out"),
        ("inner", "hook_out"),
        ("outer", "hook_out"),
    ]


def test_hooks_block_removes_on_exception(mlp):
    with pytest.raises(KeyError):
        with mlp.hooks(fwd_hooks=[("hook_out", identity)]):
            raise KeyError("body failed")
    assert not mlp.hook_dict["hook_out"].has_hooks()


def test_add_hook_prepend_permanent_and_reset(mlp):
    order = []
    mlp.add_hook("hook_out", lambda a, hook: order.append("first"))
    mlp.add_hook("hook_out", lambda a, hook: order.append("perm"), is_permanent=True)
    mlp.add_hook("hook_out", lambda a, hook: order.append("pre"), prepend=True)
    mlp(torch.randn(1, 8))
    assert order == ["pre", "first", "perm"]
    mlp.reset_hooks()
    assert len(mlp.hook_dict["hook_out"].fwd_hooks) == 1  # the permanent one stays
    mlp.reset_hooks(including_permanent=True)
    assert not mlp.hook_dict["hook_out"].has_hooks()


def test_handle_removes_exactly_its_hooks(mlp):
    h1 = mlp.add_hook(lambda n: n.endswith("resid_pre"), identity)
    h2 = mlp.add_hook("hook_out", identity)
    assert len(h1) == 3
    h1.remove()
    assert [n for n, hp in mlp.hook_dict.items() if hp.has_hooks()] == ["hook_out"]
    h2.remove()
    assert not any(hp.has_hooks() for hp in mlp.hook_points())


def test_unknown_hook_name_suggests_close_names(mlp):
    with pytest.raises(UnknownHookError) as info:
        mlp.run_with_hooks(torch.randn(1, 8), fwd_hooks=[("blocks.0.hook_resid_pr", identity)])
    assert "blocks.0.hook_resid_pre" in str(info.value)
    with pytest.raises(KeyError):  # also a KeyError, as a dict lookup would be
        mlp.add_hook("nope", identity)


def test_all_or_nothing_when_one_spec_is_bad(mlp):
    with pytest.raises(UnknownHookError):
        mlp.run_with_hooks(torch.randn(1, 8), fwd_hooks=[("hook_out", identity), ("bad.name", identity)])
    assert not any(hp.has_hooks() for hp in mlp.hook_points())
    with pytest.raises(TypeError, match="callable"):
        mlp.run_with_hooks(torch.randn(1, 8), fwd_hooks=[("hook_out", identity)], bwd_hooks=[("hook_out", 3)])
    assert not any(hp.has_hooks() for hp in mlp.hook_points())


def test_non_callable_and_bad_direction(mlp):
    with pytest.raises(TypeError, match="callable"):
        mlp.add_hook("hook_out", "not a function")
    with pytest.raises(ValueError, match="dir"):
        mlp.add_hook("hook_out", identity, dir="sideways")


def test_wrong_replacement_names_hook_and_shapes(mlp):
    x = torch.randn(2, 8)
    with pytest.raises(HookReturnError) as info:
        mlp.run_with_hooks(x, fwd_hooks=[("blocks.1.hook_mlp_out", lambda a, hook: a[:, :3])])
    msg = str(info.value)
    assert "blocks.1.hook_mlp_out" in msg and "(2, 3)" in msg and "(2, 8)" in msg
    with pytest.raises(HookReturnError, match="float64"):
        mlp.run_with_hooks(x, fwd_hooks=[("hook_out", lambda a, hook: a.double())])
    with pytest.raises(HookReturnError, match="list"):
        mlp.run_with_hooks(x, fwd_hooks=[("hook_out", lambda a, hook: [a])])
    assert not any(hp.has_hooks() for hp in mlp.hook_points())


# ---------------------------------------------------------------------------- recurrence
def test_per_step_cache_is_stacked_in_order(rnn):
    x = torch.randn(2, 5, 3)
    out, cache = rnn.run_with_cache(x)
    assert cache["hook_h"].shape == (2, 5, 4)
    assert torch.equal(cache["hook_h"], out)
    steps = cache.steps("hook_h")
    assert len(steps) == 5 and all(torch.equal(s, out[:, t]) for t, s in enumerate(steps))
    # a one-step sequence of a recurrent hook point still has a time axis
    _, cache1 = rnn.run_with_cache(x[:, :1])
    assert cache1["hook_h"].shape == (2, 1, 4)


def test_step_edit_changes_the_rest_of_the_recurrence(rnn):
    x = torch.randn(2, 6, 3)

    def edit(t, h):
        return h * 0 + 0.5 if t == 2 else h

    def hook(act, hook):
        return edit(hook.step, act)

    got = rnn.run_with_hooks(x, fwd_hooks=[("hook_h", hook)])
    want = rnn.manual(x, edit)
    assert torch.allclose(got, want)
    assert not torch.allclose(got[:, 3:], rnn(x)[:, 3:])  # later steps changed
    assert torch.equal(got[:, :2], rnn(x)[:, :2])  # earlier steps did not


def test_at_step_runs_only_at_its_steps(rnn):
    x = torch.randn(2, 6, 3)
    seen = []
    hook = at_step([1, 4], lambda a, hook: seen.append(hook.step))
    rnn.run_with_hooks(x, fwd_hooks=[("hook_h", hook)])
    assert seen == [1, 4]
    assert rnn.hook_dict["hook_h"].active_steps() == frozenset()
    with rnn.hooks(fwd_hooks=[("hook_h", hook)]):
        assert rnn.hook_dict["hook_h"].active_steps() == frozenset({1, 4})
        assert not rnn.hook_dict["hook_h"].read_only
    with rnn.hooks(fwd_hooks=[("hook_h", read_only(hook)), ("hook_h", read_only(identity))]):
        assert rnn.hook_dict["hook_h"].active_steps() is None  # one hook wants every step
        assert rnn.hook_dict["hook_h"].read_only


def test_step_counter_restarts_every_forward(rnn):
    x = torch.randn(1, 3, 3)
    seen = []
    with rnn.hooks(fwd_hooks=[("hook_h", lambda a, hook: seen.append(hook.step))]):
        rnn(x)
        rnn(x)
    assert seen == [0, 1, 2, 0, 1, 2]


def test_recurrent_gradients_cached_in_step_order(rnn):
    x = torch.randn(2, 4, 3)

    class Loss(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(x)[:, -1].sum()

    _, cache = Loss().run_with_cache(x, incl_bwd=True)
    grads = cache["rnn.hook_h_grad"]
    assert grads.shape == (2, 4, 4)
    # the last step's gradient is the loss's direct gradient (all ones); earlier steps differ
    assert torch.allclose(grads[:, -1], torch.ones(2, 4))
    assert not torch.allclose(grads[:, 0], torch.ones(2, 4))


# ---------------------------------------------------------------------------- the cache
def test_cache_does_not_keep_the_model_alive():
    model = MLPStack()
    _, cache = model.run_with_cache(torch.randn(2, 8, requires_grad=True))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert len(cache) == 7


def test_cache_api(mlp):
    x = torch.randn(4, 8)
    _, cache = mlp.run_with_cache(x, names_filter=lambda n: n.endswith("resid_pre"))
    assert list(cache.keys()) == [f"blocks.{i}.hook_resid_pre" for i in range(3)]
    assert cache.nbytes == 3 * 4 * 8 * 4
    stacked = cache.stack(lambda n: True)
    assert stacked.shape == (3, 4, 8)
    assert torch.equal(stacked[1], cache["blocks.1.hook_resid_pre"])
    half = cache.to(dtype=torch.float16)
    assert half["blocks.0.hook_resid_pre"].dtype == torch.float16 and cache.nbytes == 2 * half.nbytes
    with pytest.raises(UnknownHookError):
        cache["blocks.0.hook_mlp_out"]
    _, one = mlp.run_with_cache(x[:1], names_filter=["hook_out"], remove_batch_dim=True)
    assert one["hook_out"].shape == (8,)


def test_cache_device_and_names_filter_forms(mlp):
    x = torch.randn(2, 8)
    _, by_name = mlp.run_with_cache(x, names_filter="hook_out", device="cpu")
    _, by_list = mlp.run_with_cache(x, names_filter=["hook_out", "blocks.2.hook_mlp_out"])
    assert list(by_name) == ["hook_out"]
    assert list(by_list) == ["blocks.2.hook_mlp_out", "hook_out"]  # the order they ran in, as TL
    with pytest.raises(UnknownHookError):
        mlp.run_with_cache(x, names_filter=["hook_outt"])


def test_stop_at_ends_the_forward_early(mlp):
    x = torch.randn(2, 8)
    calls = []
    mlp.add_hook("hook_out", lambda a, hook: calls.append(1))
    out, cache = mlp.run_with_cache(x, names_filter="blocks.0.hook_mlp_out", stop_at="blocks.0.hook_mlp_out")
    assert out is None and calls == []
    _, full = mlp.run_with_cache(x)
    assert torch.equal(cache["blocks.0.hook_mlp_out"], full["blocks.0.hook_mlp_out"])
    mlp.reset_hooks()
    with pytest.raises(UnknownHookError):
        mlp.run_with_cache(x, stop_at="hook_ot")


def test_in_place_edit_after_cache_is_detected():
    class InPlace(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.hook_a = hooked.HookPoint()

        def forward(self, x):
            a = self.hook_a(x * 2)
            return a.mul_(3)

    m = InPlace()
    x = torch.ones(2)
    with pytest.warns(UserWarning, match="in place"):
        _, cache = m.run_with_cache(x)
    assert torch.equal(cache["hook_a"], torch.full((2,), 6.0))
    _, cloned = m.run_with_cache(x, clone=True)
    assert torch.equal(cloned["hook_a"], torch.full((2,), 2.0))


def test_inactive_hook_point_is_the_identity_object():
    hp = hooked.HookPoint()
    x = torch.randn(3)
    assert hp(x) is x
    assert hp.forward(x) is x


def test_protocol_is_satisfied(mlp):
    assert isinstance(mlp, hooked.Hookable)
    assert not isinstance(torch.nn.Linear(2, 2), hooked.Hookable)


def test_step_counter_restarts_after_a_failed_forward(rnn):
    x = torch.randn(1, 4, 3)
    seen = []

    def fail_at_2(act, hook):
        seen.append(hook.step)
        if hook.step == 2:
            raise RuntimeError("stop")

    handle = rnn.add_hook("hook_h", fail_at_2)
    with pytest.raises(RuntimeError):
        rnn(x)
    handle.remove()
    with rnn.hooks(fwd_hooks=[("hook_h", lambda a, hook: seen.append(hook.step))]):
        rnn(x)
    assert seen == [0, 1, 2, 0, 1, 2, 3]
