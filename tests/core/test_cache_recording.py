"""What ``run_with_cache`` records, on the paths it takes (issue 28): a point of ``hooked.wrap`` with
nothing attached is read through a PyTorch hook of its own, the other points through one recording
hook attached in bulk. Each test checks a cache against an independent recording (PyTorch hooks
written here) or against the other path, and that nothing is left attached, also after errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch
from torch import Tensor, nn

import hooked
from tests.toys import MLPStack


def first_tensor(x) -> Tensor | None:
    """The tensor a hook on a module's input or output sees, found here without hooked's code."""
    if isinstance(x, Tensor):
        return x
    values = x.values() if isinstance(x, Mapping) else x if isinstance(x, (tuple, list)) else ()
    return next((v for v in values if isinstance(v, Tensor)), None)


def by_hand(module: nn.Module, run: Callable[[], object]) -> dict[str, list[Tensor]]:
    """Every module's input and output at each call, stored by hand-written PyTorch hooks, keyed as
    ``hooked.wrap`` names them, in the order they ran."""
    kept: dict[str, list[Tensor]] = {}
    handles = []
    for path, sub in module.named_modules():
        prefix = f"{path}." if path else ""

        def pre(mod, args, kwargs, name=prefix + "hook_in"):
            x = first_tensor(args)
            x = first_tensor(kwargs) if x is None else x
            if x is not None:
                kept.setdefault(name, []).append(x.detach())

        def post(mod, args, out, name=prefix + "hook_out"):
            x = first_tensor(out)
            if x is not None:
                kept.setdefault(name, []).append(x.detach())

        handles.append(sub.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(sub.register_forward_hook(post))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return kept


def no_live_point(model) -> bool:
    """Nothing attached to any hook point of ``model`` (``hooked.hook_point.any_live`` is global:
    other tests' models may hold hooks)."""
    return not any(hp._live for hp in model.hook_dict.values())


def torch_hooks(module: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules()
    )


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, h):
        return self.lin(h), None  # a tuple: its first tensor is seen


class KeywordOnly(nn.Module):
    def forward(self, *, x):
        return x * 2  # no positional argument: the input is the first tensor keyword


class Toy(nn.Module):
    """Tuple and dict outputs, a keyword-only input, a module called twice, one with no tensor out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Linear(4, 6)
        self.pair = Pair()
        self.shared = nn.Linear(6, 6)
        self.act = nn.Tanh()
        self.kw = KeywordOnly()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h, _ = self.pair(self.emb(x))
        h = self.shared(self.act(self.shared(h)))  # shared runs twice: two steps
        return {"logits": self.head(self.kw(x=h))}


def same_cache(cache: hooked.ActivationCache, want: dict[str, list[Tensor]]) -> None:
    assert list(cache) == list(want)  # the same names, in the order they ran
    for name, tensors in want.items():
        got = cache.steps(name)
        assert len(got) == len(tensors), name
        for g, w in zip(got, tensors):
            assert torch.equal(g, w), name


def test_a_cache_of_every_module_of_a_wrap_equals_hand_written_pytorch_hooks():
    net = Toy()
    model = hooked.wrap(net, inputs=True)
    x = torch.randn(2, 5, 4)
    want = by_hand(net, lambda: net(x))
    assert len(want["shared.hook_out"]) == 2
    for names in (model.module_hook_names, None):
        out, cache = model.run_with_cache(x, names_filter=names)
        same_cache(cache, want)
        assert torch.equal(out["logits"], net(x)["logits"])
        assert cache.nbytes == sum(t.numel() * t.element_size() for ts in want.values() for t in ts)
    assert torch_hooks(net) == 0 and model.list_hooks() == {} and no_live_point(model)


def test_module_hook_names_lists_the_points_wrap_made():
    net = Toy()
    outs = hooked.wrap(net)
    assert outs.module_hook_names == list(outs.hook_dict)
    assert all(n == "hook_out" or n.endswith(".hook_out") for n in outs.module_hook_names)
    both = hooked.wrap(net, inputs=True, names="shared")
    assert both.module_hook_names == ["shared.hook_in", "shared.hook_out"]
    both.unwrap()
    assert both.module_hook_names == []


def _read_only(act, hook):
    return None


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"pos_slice": -1},
        {"pos_slice": [0, 3]},
        {"clone": True},
        {"device": "cpu"},
        {"remove_batch_dim": True},
    ],
    ids=str,
)
def test_points_read_directly_record_what_a_recording_hook_records(options):
    """A hook on every point makes every point live, so the cache records through hooks: the
    direct path must give the same cache, key for key and step for step."""
    net = Toy()
    model = hooked.wrap(net, inputs=True)
    x = torch.randn(1 if options.get("remove_batch_dim") else 2, 5, 4)
    _, direct = model.run_with_cache(x, **options)
    with model.hooks(fwd_hooks=[(lambda name: True, hooked.read_only(_read_only))]):
        _, hooked_path = model.run_with_cache(x, **options)
        assert len(model.list_hooks()) == len(model.hook_dict)  # only the cache's own are gone
    assert list(direct) == list(hooked_path)
    for name in direct:
        assert direct.is_stacked(name) == hooked_path.is_stacked(name)
        assert torch.equal(direct[name], hooked_path[name]), name


def test_the_cache_sees_what_hooks_attached_before_it_made_of_the_activation():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    model = hooked.wrap(net, inputs=True)
    x = torch.randn(4, 3)
    with model.hooks(fwd_hooks=[("0.hook_out", lambda a, hook: a * 0 - 1)]):
        _, cache = model.run_with_cache(x)
    assert torch.equal(cache["0.hook_out"], torch.full((4, 3), -1.0))
    assert torch.equal(cache["1.hook_in"], torch.full((4, 3), -1.0))  # read directly: what ReLU got
    assert torch.equal(cache["1.hook_out"], torch.zeros(4, 3))
    assert torch.equal(cache["hook_out"], net[2](torch.zeros(4, 3)))


def test_the_cache_holds_views_of_the_activations_not_copies():
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh())
    model = hooked.wrap(net, inputs=True)
    seen = {}
    handle = net[0].register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        _, cache = model.run_with_cache(torch.randn(5, 3))
    finally:
        handle.remove()
    t = cache["0.hook_out"]
    assert t.untyped_storage().data_ptr() == seen["out"].untyped_storage().data_ptr()
    assert t.shape == seen["out"].shape and not t.requires_grad


def test_an_in_place_edit_after_a_directly_read_point_is_detected():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True))
    model = hooked.wrap(net)
    x = torch.randn(6, 3)
    before = net[0](x).detach()
    with pytest.warns(UserWarning, match="in place"):
        _, cache = model.run_with_cache(x)
    assert torch.equal(cache["0.hook_out"], before.clamp_min(0))
    _, cloned = model.run_with_cache(x, clone=True)
    assert torch.equal(cloned["0.hook_out"], before)


def test_stop_at_a_directly_read_point_records_it_and_ends_the_forward():
    net = Toy()
    model = hooked.wrap(net, inputs=True)
    x = torch.randn(2, 5, 4)
    want = by_hand(net, lambda: net(x))
    out, cache = model.run_with_cache(x, stop_at="pair.hook_out")
    assert out is None
    assert list(cache) == list(want)[: list(want).index("pair.hook_out") + 1]
    assert torch.equal(cache["pair.hook_out"], want["pair.hook_out"][0])
    assert torch_hooks(net) == 0 and no_live_point(model)


class Boom(RuntimeError):
    pass


def test_nothing_stays_attached_when_the_forward_raises():
    net = Toy()
    model = hooked.wrap(net, inputs=True)
    x = torch.randn(2, 5, 4)
    calls = []

    def fail_second_call(module, args):
        calls.append(1)
        if len(calls) == 2:
            raise Boom

    handle = net.shared.register_forward_pre_hook(fail_second_call)
    kept = model.add_hook("emb.hook_out", hooked.read_only(_read_only))  # a user's hook: it stays
    try:
        with pytest.raises(Boom):
            model.run_with_cache(x)
    finally:
        handle.remove()
    assert list(model.list_hooks()) == ["emb.hook_out"]
    kept.remove()
    assert torch_hooks(net) == 0 and model.list_hooks() == {} and no_live_point(model)
    out, cache = model.run_with_cache(x)  # and the next cache is whole
    same_cache(cache, by_hand(net, lambda: net(x)))


def test_nothing_stays_attached_when_a_hooked_module_forward_raises():
    class Fails(MLPStack):
        def forward(self, x):
            super().forward(x)
            raise Boom

    model = Fails()
    with pytest.raises(Boom):
        model.run_with_cache(torch.randn(2, 8), incl_bwd=False)
    assert model.list_hooks() == {} and no_live_point(model)


class Refuses(hooked.HookPoint):
    """A hook point that refuses hooks once live (as a point whose switch cannot be acquired)."""

    def _refresh(self):
        super()._refresh()
        if self._live:
            self._fwd.clear()
            self._bwd.clear()
            super()._refresh()
            raise Boom


class WithRefusing(MLPStack):
    def __init__(self):
        super().__init__()
        self.hook_refuses = Refuses()

    def forward(self, x):
        return self.hook_refuses(super().forward(x))


@pytest.mark.parametrize("how", ["run_with_cache", "hooks", "add_hook"])
def test_attaching_in_bulk_is_all_or_nothing(how):
    model = WithRefusing()
    with pytest.raises(Boom):
        if how == "run_with_cache":
            model.run_with_cache(torch.randn(2, 8))
        elif how == "hooks":
            with model.hooks(fwd_hooks=[(lambda name: True, _read_only)]):
                pass
        else:
            model.add_hook(lambda name: True, _read_only)
    assert model.list_hooks() == {} and no_live_point(model)


def test_a_hooked_module_cache_equals_pytorch_hooks_on_its_hook_points():
    model = MLPStack(n_blocks=3)
    kept: dict[str, Tensor] = {}
    handles = [
        hp.register_forward_hook(lambda m, args, out, name=name: kept.setdefault(name, out.detach()))
        for name, hp in model.hook_dict.items()
    ]
    try:
        x = torch.randn(4, 8)
        out, cache = model.run_with_cache(x)
    finally:
        for h in handles:
            h.remove()
    assert list(cache) == list(kept)
    for name, t in kept.items():
        assert torch.equal(cache[name], t), name
    assert torch.equal(out, model(x))
    assert cache.nbytes == sum(t.numel() * t.element_size() for t in kept.values())
    assert model.list_hooks() == {} and no_live_point(model)
