"""``hook.step`` counts the calls of a hook point within one forward pass of one thread, in every
way a model gets called: ``model(x)``, ``model.forward(x)``, the module inside ``hooked.wrap``
called directly, transformers' ``generate`` on a wrapped model, a ``hooked.forward_pass()`` block,
a bare HookPoint in a plain module, several threads, nested hooked models, and after a forward
that raised. (The rule: the outermost forward running in a thread is the pass; see hooked/_steps.py.)"""

from __future__ import annotations

import sys
import threading
import warnings
from collections import defaultdict

import pytest
import torch
from torch import nn

import hooked
from hooked import at_step
from interventions.patching import patch, source_activations
from tests.toys import TinyRNN


def recorder(seen: list):
    def record(act, hook):
        seen.append(hook.step)

    return record


def zero(act, hook):
    return act * 0


# ---------------------------------------------------------------------------- model.forward
def test_direct_forward_calls_are_passes(rnn):
    x = torch.randn(2, 5, 3)
    seen = []
    rnn.add_perma_hook("hook_h", recorder(seen))
    rnn.forward(x)
    rnn.forward(x)
    rnn(x)
    assert seen == [0, 1, 2, 3, 4] * 3


def test_at_step_fires_after_a_direct_forward(rnn):
    """The issue's case: after one ``model.forward(x)`` with a hook attached, an ``at_step(2)``
    edit used to see steps 5.. and silently not fire."""
    x = torch.randn(2, 5, 3)
    rnn.add_perma_hook("hook_h", lambda a, hook: None)
    rnn.forward(x)
    got = rnn.run_with_hooks(x, fwd_hooks=[("hook_h", at_step(2, zero))])
    want = rnn.manual(x, lambda t, h: h * 0 if t == 2 else h)
    assert torch.allclose(got, want)
    assert not torch.allclose(got, rnn(x))


def test_patching_a_recurrent_hook_after_a_direct_forward(rnn):
    """Used to raise ``IndexError: select(): index 5 out of range``."""
    x, clean = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    rnn.add_perma_hook("hook_h", lambda a, hook: None)
    rnn.forward(x)
    patched = patch(rnn, x, source_activations(rnn, clean, ["hook_h"]), "hook_h")
    assert torch.allclose(patched, rnn.manual(clean), atol=1e-6)  # every step patched: the clean run
    at_3 = patch(rnn, x, source_activations(rnn, clean, ["hook_h"]), "hook_h", position=3)
    clean_h = rnn.manual(clean)
    assert torch.allclose(at_3, rnn.manual(x, lambda t, h: clean_h[:, 3] if t == 3 else h), atol=1e-6)


# ---------------------------------------------------------------------------- hooked.wrap
class Shared(nn.Module):
    """A plain module that runs one submodule twice per forward."""

    def __init__(self, d: int = 3):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return self.lin(torch.tanh(self.lin(x)))


def test_wrapped_module_called_directly_counts_per_call():
    torch.manual_seed(0)
    sh = Shared()
    wsh = hooked.wrap(sh)
    seen = []
    wsh.add_perma_hook("lin.hook_out", recorder(seen))
    x = torch.randn(2, 3)
    sh(x)
    sh(x)
    wsh(x)
    assert seen == [0, 1] * 3
    # an edit at the second call only, however the module is called
    edited = wsh.run_with_hooks(x, fwd_hooks=[("lin.hook_out", at_step(1, zero))])
    assert torch.equal(edited, torch.zeros(2, 3))
    with wsh.hooks(fwd_hooks=[("lin.hook_out", at_step(0, zero))]):
        direct = sh(x)
    assert torch.allclose(direct, sh.lin(torch.zeros(2, 3)))


def test_wrap_pass_hooks_exist_only_while_a_point_is_live():
    sh = Shared()
    wsh = hooked.wrap(sh)
    assert not sh._forward_pre_hooks and not sh._forward_hooks
    handle = wsh.add_hook("lin.hook_out", lambda a, hook: None)
    assert len(sh._forward_pre_hooks) == 1 and len(sh._forward_hooks) == 1
    handle.remove()
    assert not sh._forward_pre_hooks and not sh._forward_hooks


class Interrupt(BaseException):
    """Like a KeyboardInterrupt: not an Exception, so PyTorch's always_call hooks do not run."""


@pytest.mark.parametrize("exc", [RuntimeError, Interrupt])
def test_steps_restart_after_an_interrupted_direct_call(exc):
    sh = Shared()
    wsh = hooked.wrap(sh)
    seen = []

    def fail_at_1(act, hook):
        seen.append(hook.step)
        if hook.step == 1 and len(seen) == 2:
            raise exc("stop")

    wsh.add_perma_hook("lin.hook_out", fail_at_1)
    with pytest.raises(exc):
        sh(torch.randn(2, 3))
    sh(torch.randn(2, 3))
    wsh(torch.randn(2, 3))
    assert seen == [0, 1, 0, 1, 0, 1]


def test_generate_on_a_wrapped_model_counts_steps_per_forward():
    """transformers' ``generate`` calls the wrapped module once per new token: each call is a
    pass. Checked against a plain PyTorch forward hook doing the same edit on a twin model."""
    from hooked.models.lm import tiny_llama_hf

    hf, twin = tiny_llama_hf(layers=2, d_model=32), tiny_llama_hf(layers=2, d_model=32)
    shift = torch.randn(32, generator=torch.Generator().manual_seed(1))
    wrapped = hooked.wrap(hf)
    seen = []
    wrapped.add_perma_hook("model.layers.0.hook_out", recorder(seen))
    wrapped.add_perma_hook("model.layers.0.hook_out", at_step(0, lambda a, hook: a + shift))
    twin.model.layers[0].register_forward_hook(
        lambda m, args, out: (
            ((out[0] if isinstance(out, tuple) else out) + shift,) if isinstance(out, tuple) else out + shift
        )
    )
    tokens = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(0))
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    got = wrapped.generate(tokens, **kw)
    want = twin.generate(tokens, **kw)
    assert seen == [0, 0, 0, 0]  # one call of the layer per forward, 4 forwards
    assert torch.equal(got, want)
    assert not torch.equal(got, tiny_llama_hf(layers=2, d_model=32).generate(tokens, **kw))


# ---------------------------------------------------------------------------- bare hook points
class Bare(nn.Module):
    """A plain nn.Module (not a HookedModule) with a HookPoint it runs three times."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.hp = hooked.HookPoint()

    def forward(self, x):
        for _ in range(3):
            x = self.hp(torch.tanh(self.lin(x)))
        return x


def test_bare_hook_point_in_a_plain_module():
    torch.manual_seed(0)
    m = Bare()
    seen = []
    m.hp.add_hook(recorder(seen))
    x = torch.randn(2, 3)
    m(x)
    m(x)
    m.forward(x)
    nn.Sequential(m)(x)  # inside a plain container: the container's call is the pass
    assert seen == [0, 1, 2] * 4
    m.hp.add_hook(at_step(1, zero))
    out = m(x)
    want = torch.tanh(m.lin(torch.zeros(2, 3)))  # step 1 zeroed; step 2 runs on zeros
    assert torch.allclose(out, want)


def test_hook_point_called_outside_any_module_is_a_pass_of_its_own():
    hp = hooked.HookPoint()
    seen = []
    hp.add_hook(recorder(seen))
    hp(torch.ones(1))
    hp(torch.ones(1))
    hp(torch.ones(1), step=4)  # an explicit step is taken as given
    assert seen == [0, 0, 4]


# ---------------------------------------------------------------------------- threads
def _run_in_threads(models, n_forwards: int, x: torch.Tensor) -> None:
    errors = []

    def work(m):
        try:
            for _ in range(n_forwards):
                m(x)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(m,)) for m in models]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors


@pytest.mark.parametrize("shared", [True, False], ids=["one shared model", "a model each"])
def test_two_threads_never_see_each_others_steps(shared):
    steps, n = 4, 300
    models = [TinyRNN()] * 2 if shared else [TinyRNN(), TinyRNN(seed=1)]
    seen: dict[int, list[int]] = defaultdict(list)

    def record(act, hook):
        seen[threading.get_ident()].append(hook.step)

    for m in set(models):
        m.add_perma_hook("hook_h", at_step(range(steps), record))  # fires only at steps 0..3
    _run_in_threads(models, n, torch.randn(1, steps, 3))
    assert sorted(len(v) for v in seen.values()) == [n * steps] * 2
    assert all(v == list(range(steps)) * n for v in seen.values())


def test_threads_on_a_wrapped_module_called_directly():
    sh = Shared()
    wsh = hooked.wrap(sh)
    seen: dict[int, list[int]] = defaultdict(list)
    wsh.add_perma_hook("lin.hook_out", lambda a, hook: seen[threading.get_ident()].append(hook.step))
    _run_in_threads([sh, sh], 200, torch.randn(2, 3))
    assert [v == [0, 1] * 200 for v in seen.values()] == [True, True]


# ---------------------------------------------------------------------------- nesting
class Twice(hooked.HookedModule):
    """A hooked model that runs a hooked RNN twice per forward."""

    def __init__(self):
        super().__init__()
        self.rnn = TinyRNN()

    def forward(self, x):
        return self.rnn(x) + self.rnn(x)


def test_nested_hooked_models_count_in_the_outermost_pass():
    model = Twice()
    x = torch.randn(1, 3, 3)
    seen = []
    with model.hooks(fwd_hooks=[("rnn.hook_h", recorder(seen))]):
        model(x)
        model.rnn(x)  # the inner model alone is a pass of its own
        model.forward(x)
    assert seen == [0, 1, 2, 3, 4, 5] + [0, 1, 2] + [0, 1, 2, 3, 4, 5]


def test_hook_step_inside_backward_hooks_is_the_forward_step(rnn):
    x = torch.randn(2, 4, 3, requires_grad=True)
    seen = []
    with rnn.hooks(bwd_hooks=[("hook_h", recorder(seen))]):
        rnn(x).sum().backward()
    assert seen == [3, 2, 1, 0]


def test_explicit_steps_of_recurrent_layers_still_count():
    from hooked.models.rnn import HookedGRU

    gru = HookedGRU(3, 4, num_layers=1)
    x = torch.randn(2, 6, 3)
    seen = []
    with gru.hooks(fwd_hooks=[("hook_h_l0", at_step([1, 4], recorder(seen)))]):
        gru(x)
        gru.forward(x)
        gru(x, step_offset=2)  # steps 2..7: the hook sees 4
    assert seen == [1, 4, 1, 4, 4]


def test_a_copied_wrap_counts_on_its_own_module():
    import copy

    wsh = hooked.wrap(Shared())
    twin = copy.deepcopy(wsh)
    seen = []
    twin.add_perma_hook("lin.hook_out", recorder(seen))
    assert twin.module._forward_pre_hooks and not wsh.module._forward_pre_hooks
    twin.module(torch.randn(2, 3))
    twin.module(torch.randn(2, 3))
    assert seen == [0, 1, 0, 1]


@pytest.mark.parametrize(
    "steps, error",
    [("12", TypeError), (True, TypeError), (1.5, TypeError), ([1, 2.0], TypeError), (-1, ValueError)],
)
def test_at_step_refuses_what_is_not_a_step(steps, error):
    with pytest.raises(error, match="at_step"):
        at_step(steps, zero)


def test_at_step_takes_ints_of_any_kind():
    import numpy as np

    assert at_step(np.int64(3), zero).steps == {3}
    assert at_step(torch.tensor(2), zero).steps == {2}
    assert at_step(range(3), zero).steps == {0, 1, 2}
    with pytest.raises(ValueError, match="at_step: no steps"):
        at_step([], zero)


# ---------------------------------------------------------------------------- steps never reached
@pytest.mark.parametrize("how", ["HookedModule", "wrap", "wrapped module called directly"])
def test_a_step_never_reached_is_reported_when_the_forward_ends(how):
    """``Shared`` runs ``lin`` twice per forward: a hook at step 1 fires, one at step 3 is reported
    (naming the hook point and the step), and the output is the unedited one."""
    torch.manual_seed(0)
    x = torch.randn(2, 3)
    if how == "HookedModule":
        model, name = TinyRNN(), "hook_h"
        x, ran = torch.randn(1, 2, 3), model
    else:
        model, name = hooked.wrap(Shared()), "lin.hook_out"
        ran = model if how == "wrap" else model.module
    plain = ran(x)
    with model.hooks(fwd_hooks=[(name, at_step([1, 3], zero))]):
        with pytest.warns(UserWarning, match=rf"at_step: .*{name}.*step\(s\) \[3\].*ran only 2 step"):
            out = ran(x)
    assert not torch.equal(out, plain)  # step 1 was edited
    with model.hooks(fwd_hooks=[(name, at_step(3, zero))]):
        with pytest.warns(UserWarning, match=name):
            assert torch.equal(ran(x), plain)
    with model.hooks(fwd_hooks=[(name, at_step(1, zero))]), warnings.catch_warnings():
        warnings.simplefilter("error")  # reached: nothing to report
        ran(x)


def test_a_forward_that_raises_reports_no_unreached_step():
    rnn = TinyRNN()
    with rnn.hooks(fwd_hooks=[("hook_h", at_step(5, zero))]), warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError):
            rnn(torch.randn(1, 2, 4))  # wrong feature size: raises after no step


def test_the_unreached_step_warning_names_the_line_that_ran_the_forward():
    rnn, wsh = TinyRNN(), hooked.wrap(Shared())
    hp = hooked.HookPoint()
    hp.add_hook(at_step(5, zero))
    runs = {
        "HookedModule": (rnn, "hook_h", lambda: rnn(torch.randn(1, 2, 3))),
        "wrapped module called directly": (wsh, "lin.hook_out", lambda: wsh.module(torch.randn(2, 3))),
    }
    for model, name, run in runs.values():
        with model.hooks(fwd_hooks=[(name, at_step(5, zero))]), pytest.warns(UserWarning) as told:
            run()
        assert [w.filename for w in told] == [__file__]
    with pytest.warns(UserWarning) as told, hooked.forward_pass():
        hp(torch.ones(1))
    assert [w.filename for w in told] == [__file__]


# ---------------------------------------------------------------------------- forward_pass
def test_forward_pass_makes_several_forwards_one_pass(rnn):
    """A recurrence driven from Python: two forwards of 3 steps in one block are steps 0..5, so
    ``at_step(4, ...)`` edits step 1 of the second forward (checked against the recurrence by hand);
    after the block each forward is a pass again."""
    x1, x2 = torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    seen = []
    with rnn.hooks(fwd_hooks=[("hook_h", recorder(seen)), ("hook_h", at_step(4, zero))]):
        with hooked.forward_pass(), warnings.catch_warnings():
            warnings.simplefilter("error")  # step 4 is reached in the block: nothing to report
            first = rnn(x1)
            second = rnn(x2)
        with pytest.warns(UserWarning, match=r"step\(s\) \[4\].*ran only 3 step"):
            third = rnn(x2)
    assert seen == [0, 1, 2, 3, 4, 5, 0, 1, 2]
    assert torch.allclose(first, rnn.manual(x1), atol=1e-6)
    assert torch.allclose(second, rnn.manual(x2, lambda t, h: h * 0 if t == 1 else h), atol=1e-6)
    assert torch.allclose(third, rnn.manual(x2), atol=1e-6)


def test_forward_pass_gives_bare_hook_points_one_pass():
    m, hp = Bare(), hooked.HookPoint()
    seen, alone = [], []
    m.hp.add_hook(recorder(seen))
    hp.add_hook(recorder(alone))
    x = torch.randn(2, 3)
    with hooked.forward_pass():
        m(x)
        m.forward(x)
        hp(x)
        hp(x)
        with hooked.forward_pass():  # a block inside a forward joins its pass
            hp(x)
    m(x)
    hp(x)
    assert seen == [0, 1, 2, 3, 4, 5] + [0, 1, 2]
    assert alone == [0, 1, 2] + [0]


def test_a_forward_pass_block_that_raises_reports_nothing_and_leaves_nothing():
    hp = hooked.HookPoint()
    seen = []
    hp.add_hook(recorder(seen))
    hp.add_hook(at_step(3, zero))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(KeyError), hooked.forward_pass():
            hp(torch.ones(1))
            raise KeyError("stop")
    with pytest.warns(UserWarning, match=r"ran only 2 step"), hooked.forward_pass():
        hp(torch.ones(1))
        hp(torch.ones(1))
    assert seen == [0, 0, 1]


class PlainAround(nn.Module):
    """A plain module with a bare hook point around two forwards of a hooked RNN."""

    def __init__(self):
        super().__init__()
        self.hp = hooked.HookPoint()
        self.rnn = TinyRNN()

    def forward(self, x):
        x = self.hp(x)
        return self.hp(self.rnn(x) + self.rnn(x))


def test_a_forward_inside_a_plain_module_is_a_pass_whatever_ran_before_it():
    """A bare hook point's pass (the plain module's call) is no forward: the HookedModule forwards
    inside it are passes of their own, as they are when no bare hook point has a hook."""
    m = PlainAround()
    bare, inner = [], []
    handle = m.hp.add_hook(recorder(bare))
    x = torch.randn(1, 3, 3)
    with m.rnn.hooks(fwd_hooks=[("hook_h", recorder(inner))]):
        m(x)
        handle.remove()
        m(x)
    assert bare == [0, 1]
    assert inner == [0, 1, 2, 0, 1, 2] * 2
