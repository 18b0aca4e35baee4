"""HookedGRU / HookedLSTM: drop-in for nn.GRU / nn.LSTM, per-step hooks, every execution mode."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import hooked
from hooked import at_step, read_only
from hooked.models.rnn import HookedGRU, HookedLSTM

PAIRS = [(HookedGRU, nn.GRU), (HookedLSTM, nn.LSTM)]


def make(cls, ref_cls, layers=1, batch_first=True, seed=0, d_in=5, d=7):
    torch.manual_seed(seed)
    ref = ref_cls(d_in, d, layers, batch_first=batch_first)
    m = cls(d_in, d, layers, batch_first=batch_first)
    m.load_state_dict(ref.state_dict())
    return m, ref


def h_n(state):
    return state if isinstance(state, torch.Tensor) else state[0]


def edit_identity(a, hook):
    return a * 1.0


MODES = {
    "no hooks": [],
    "unrolled": [(lambda n: True, edit_identity)],
    "segments": [(lambda n: True, at_step([1, 4], edit_identity))],
    "read only": [(lambda n: True, read_only(lambda a, hook: None))],
    "mixed": [
        (lambda n: n.startswith("hook_h"), at_step(2, edit_identity)),
        (lambda n: True, read_only(lambda a, hook: None)),
    ],
}


@pytest.mark.parametrize("cls,ref_cls", PAIRS)
def test_state_dict_and_constructor_are_pytorchs(cls, ref_cls):
    ref = ref_cls(4, 6, num_layers=2, batch_first=True)
    m = cls(4, 6, num_layers=2)
    assert list(m.state_dict()) == list(ref.state_dict())
    m.load_state_dict(ref.state_dict())
    ref.load_state_dict(m.state_dict())
    assert isinstance(m, ref_cls) and m.batch_first
    with pytest.raises(ValueError, match="bidirectional"):
        cls(4, 6, bidirectional=True)


@pytest.mark.parametrize("cls,ref_cls", PAIRS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_agrees_with_pytorch(cls, ref_cls, layers, mode):
    m, ref = make(cls, ref_cls, layers)
    x = torch.randn(3, 6, 5)
    out_ref, st_ref = ref(x)
    out, st = m.run_with_hooks(x, fwd_hooks=MODES[mode])
    assert torch.allclose(out, out_ref, atol=1e-6)
    assert torch.allclose(h_n(st), h_n(st_ref), atol=1e-6)
    if cls is HookedLSTM:
        assert torch.allclose(st[1], st_ref[1], atol=1e-6)
    # packed, variable lengths, unsorted
    lengths = torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_ref, st_ref = ref(packed)
    out, st = m.run_with_hooks(packed, fwd_hooks=MODES[mode])
    assert torch.equal(out.batch_sizes, out_ref.batch_sizes)
    assert torch.allclose(out.data, out_ref.data, atol=1e-6)
    assert torch.allclose(h_n(st), h_n(st_ref), atol=1e-6)


@pytest.mark.parametrize("cls,ref_cls", PAIRS)
def test_time_major_unbatched_and_initial_state(cls, ref_cls):
    m, ref = make(cls, ref_cls, layers=2, batch_first=False)
    x = torch.randn(6, 3, 5)  # [time, batch, features]
    h0 = torch.randn(2, 3, 7)
    hx = h0 if cls is HookedGRU else (h0, torch.randn(2, 3, 7))
    hooks = MODES["unrolled"]
    out_ref, st_ref = ref(x, hx)
    out, st = m.run_with_hooks(x, hx, fwd_hooks=hooks)
    assert out.shape == (6, 3, 7) and torch.allclose(out, out_ref, atol=1e-6)
    assert torch.allclose(h_n(st), h_n(st_ref), atol=1e-6)
    u = torch.randn(6, 5)  # unbatched
    out_ref, st_ref = ref(u)
    out, st = m.run_with_hooks(u, fwd_hooks=hooks)
    assert out.shape == (6, 7) and torch.allclose(out, out_ref, atol=1e-6)
    assert h_n(st).shape == (2, 7)
    with pytest.raises(ValueError, match="h_0 has shape"):
        m.run_with_hooks(
            x, torch.zeros(1, 3, 7) if cls is HookedGRU else (torch.zeros(1, 3, 7),) * 2, fwd_hooks=hooks
        )


def manual_gru(m: nn.GRU, x, edit=None):
    """The GRU equations written out, with an optional edit(t, h) -> h of the state."""
    w_ih, w_hh, b_ih, b_hh = m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0
    h = x.new_zeros(x.shape[0], m.hidden_size)
    outs = []
    for t in range(x.shape[1]):
        i_r, i_z, i_n = (x[:, t] @ w_ih.T + b_ih).chunk(3, 1)
        h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, 1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        if edit is not None:
            h = edit(t, h)
        outs.append(h)
    return torch.stack(outs, 1)


def manual_lstm(m: nn.LSTM, x, edit_c=None):
    w_ih, w_hh, b_ih, b_hh = m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0
    h = c = x.new_zeros(x.shape[0], m.hidden_size)
    outs = []
    for t in range(x.shape[1]):
        i, f, g, o = (x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if edit_c is not None:
            c = edit_c(t, c)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("steps", [[3], [0, 5], [1, 2, 3]])
def test_per_step_edit_equals_manual_unrolled_loop(steps):
    m, _ = make(HookedGRU, nn.GRU)
    x = torch.randn(4, 7, 5)
    delta = torch.randn(7)

    def shift(h, hook):
        return h + delta * (hook.step + 1)

    want = manual_gru(m, x, lambda t, h: h + delta * (t + 1) if t in steps else h)
    got, _ = m.run_with_hooks(x, fwd_hooks=[("hook_h_l0", at_step(steps, shift))])
    assert torch.allclose(got, want, atol=1e-5)
    first = min(steps)
    plain, _ = m(x)
    assert torch.equal(got[:, :first], plain[:, :first])  # steps before the edit are untouched
    assert not torch.allclose(got[:, first:], plain[:, first:])  # the edit carries forward
    # the same edit with an all-steps hook (fully unrolled) gives the same result
    got_all, _ = m.run_with_hooks(
        x, fwd_hooks=[("hook_h_l0", lambda h, hook: shift(h, hook) if hook.step in steps else h)]
    )
    assert torch.allclose(got_all, want, atol=1e-5)


def test_lstm_cell_state_edit_equals_manual_loop():
    m, _ = make(HookedLSTM, nn.LSTM)
    x = torch.randn(4, 7, 5)
    want = manual_lstm(m, x, lambda t, c: torch.zeros_like(c) if t == 3 else c)
    got, (h, c) = m.run_with_hooks(
        x, fwd_hooks=[("hook_c_l0", at_step(3, lambda c, hook: torch.zeros_like(c)))]
    )
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(h[0], want[:, -1], atol=1e-5)


@pytest.mark.parametrize("cls,ref_cls", PAIRS)
def test_only_hooked_steps_are_unrolled(cls, ref_cls, monkeypatch):
    m, ref = make(cls, ref_cls, layers=2)
    calls = []
    for kind in ("_cell", "_fused_cell"):
        original = getattr(cls, kind)

        def counting(self, layer, *args, _kind=kind, _original=original):
            calls.append((_kind, layer))
            return _original(self, layer, *args)

        monkeypatch.setattr(cls, kind, counting)
    x = torch.randn(2, 9, 5)
    m(x)
    m.run_with_cache(x)
    assert calls == []  # no hooks, and read-only hooks: fused kernels only
    m.run_with_hooks(x, fwd_hooks=[("hook_h_l1", at_step([2, 6], edit_identity))])
    assert calls == [("_fused_cell", 1)] * 2  # layer 0 fused, layer 1 two cells, PyTorch's own
    calls.clear()
    m.run_with_hooks(x, fwd_hooks=[("hook_h_l0", edit_identity)])
    assert calls == [("_fused_cell", 0)] * 9
    calls.clear()
    # a gate hooked at step 4 (and h at every step): that step runs the explicit cell, the rest fused
    gate = "hook_r_l0" if cls is HookedGRU else "hook_f_l0"
    out, _ = m.run_with_hooks(x, fwd_hooks=[("hook_h_l0", edit_identity), (gate, at_step(4, edit_identity))])
    assert calls == [("_fused_cell", 0)] * 4 + [("_cell", 0)] + [("_fused_cell", 0)] * 4
    assert torch.allclose(out, ref(x)[0], atol=1e-6)


def test_cache_is_per_step_stack_and_matches_unrolled_values():
    m, _ = make(HookedLSTM, nn.LSTM, layers=2)
    x = torch.randn(3, 5, 5)
    (out, _), cache = m.run_with_cache(x)
    assert cache["hook_c_l1"].shape == (3, 5, 7) and cache.is_stacked("hook_h_l0")
    assert torch.allclose(cache["hook_h_l1"], out, atol=1e-6)
    seen = {}

    def grab(a, hook):
        seen.setdefault(hook.name, []).append(a.detach())
        return a

    m.run_with_hooks(x, fwd_hooks=[(lambda n: True, grab)])  # every step unrolled
    for name, steps in seen.items():
        assert torch.allclose(torch.stack(steps, 1), cache[name], atol=1e-6), name


def test_gradients_flow_through_segments_and_backward_hooks_fire():
    m, ref = make(HookedGRU, nn.GRU)
    x = torch.randn(3, 8, 5)
    ref(x)[0].sum().backward()
    grads = []
    out, _ = m.run_with_hooks(
        x,
        fwd_hooks=[("hook_h_l0", at_step(4, edit_identity))],
        bwd_hooks=[("hook_h_l0", at_step([2, 5], lambda g, hook: grads.append(hook.step)))],
    )
    out.sum().backward()
    assert sorted(grads) == [2, 5]
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_step_offset_shifts_the_steps_hooks_see():
    m, _ = make(HookedGRU, nn.GRU)
    x = torch.randn(2, 4, 5)
    seen = []
    with m.hooks([("hook_h_l0", lambda h, hook: seen.append(hook.step))]):
        m(x)
        m(x, step_offset=4)
    assert seen == [0, 1, 2, 3, 4, 5, 6, 7]
    plain, _ = m(x)
    got, _ = m.run_with_hooks(
        x, step_offset=10, fwd_hooks=[("hook_h_l0", at_step(12, lambda h, hook: h * 0))]
    )
    assert torch.equal(got[:, :2], plain[:, :2]) and torch.equal(got[:, 2], torch.zeros_like(got[:, 2]))


@settings(max_examples=20, deadline=None)
@given(
    steps=st.sets(st.integers(0, 11), min_size=1, max_size=5),
    layers=st.integers(1, 2),
    lstm=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_segments_equal_full_unroll(steps, layers, lstm, seed):
    cls, ref_cls = PAIRS[int(lstm)]
    m, _ = make(cls, ref_cls, layers, seed=seed, d_in=3, d=4)
    x = torch.randn(2, 10, 3, generator=torch.Generator().manual_seed(seed))
    scale = torch.linspace(0.5, 1.5, 4)

    def edit(h, hook):
        return h * scale

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seg, _ = m.run_with_hooks(x, fwd_hooks=[(lambda n: n.startswith("hook_h"), at_step(steps, edit))])
    beyond = sorted(s for s in steps if s >= 10)  # past the 10 steps: reported, once per layer
    told = [str(w.message) for w in caught if str(w.message).startswith("at_step")]
    assert len(told) == (layers if beyond else 0) and all(f"step(s) {beyond}" in t for t in told)
    full, _ = m.run_with_hooks(
        x,
        fwd_hooks=[
            (lambda n: n.startswith("hook_h"), lambda h, hook: edit(h, hook) if hook.step in steps else h)
        ],
    )
    assert torch.allclose(seg, full, atol=1e-5)


def test_layers_inside_a_hooked_model_get_dotted_names():
    class Net(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.rnn = HookedLSTM(3, 4, num_layers=2)

        def forward(self, x):
            return self.rnn(x)[0]

    net = Net()
    assert "rnn.hook_h_l1" in net.hook_dict and "rnn.hook_c_l0" in net.hook_dict
    _, cache = net.run_with_cache(torch.randn(2, 5, 3), names_filter=lambda n: n.endswith("hook_h_l1"))
    assert cache["rnn.hook_h_l1"].shape == (2, 5, 4)


@pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)
@pytest.mark.parametrize("cls,ref_cls", PAIRS)
@pytest.mark.parametrize("layers", [1, 2])
def test_every_mode_agrees_with_cudnn(cls, ref_cls, layers):
    m, ref = make(cls, ref_cls, layers)
    m, ref = m.cuda(), ref.cuda()
    x = torch.randn(3, 6, 5, device="cuda")
    lengths = torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_ref, st_ref = ref(x)
    pout_ref, pst_ref = ref(packed)
    for mode, hooks in MODES.items():
        out, st = m.run_with_hooks(x, fwd_hooks=hooks)
        assert torch.allclose(out, out_ref, atol=1e-5), mode
        assert torch.allclose(h_n(st), h_n(st_ref), atol=1e-5), mode
        pout, pst = m.run_with_hooks(packed, fwd_hooks=hooks)
        assert torch.allclose(pout.data, pout_ref.data, atol=1e-5), mode
        assert torch.allclose(h_n(pst), h_n(pst_ref), atol=1e-5), mode
