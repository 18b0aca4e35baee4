"""Hooked GRU and LSTM layers: drop-in ``nn.GRU`` / ``nn.LSTM`` with a hook point per step.

:class:`HookedGRU` and :class:`HookedLSTM` *are* ``nn.GRU`` / ``nn.LSTM`` (subclasses): same
constructor (``batch_first`` defaults to True here), same parameters and ``state_dict`` keys
(``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ...), same outputs
(``output, h_n`` and ``output, (h_n, c_n)``), ``PackedSequence`` and unbatched inputs included, so
``HookedLSTM(...).load_state_dict(nn_lstm.state_dict())`` works and either can replace the other.

Hook points (all ``recurrent=True``: cached as ``[batch, time, hidden]``), for each layer ``k``:

* ``hook_h_l{k}``: the hidden state h_t after reading x_t (the layer's output at step t).
* ``hook_c_l{k}``: (LSTM) the cell state c_t, before h_t = o_t * tanh(c_t) is computed from it.
* gates, after their nonlinearity: GRU ``hook_r_l{k}``, ``hook_z_l{k}``, ``hook_n_l{k}``
  (reset, update, candidate); LSTM ``hook_i_l{k}``, ``hook_f_l{k}``, ``hook_g_l{k}``,
  ``hook_o_l{k}`` (input, forget, cell candidate, output).

Within a step the points run in that order (gates, c, h); an edit changes everything after it in
the step and every later step. ``hook.step`` is t (plus ``step_offset``, see ``forward``); layers run
one after the other (all steps of layer 0, then layer 1), as cuDNN does. With a
``PackedSequence``, a row past its length keeps its state: hooks still see (and may edit) it, and
its gates there are computed from padding.

Speed design (what runs, per layer, decided at every forward from the attached hooks):

1. **No hook on any layer**: ``nn.GRU.forward`` itself, i.e. the fused kernel (cuDNN on a GPU).
2. **Hooks that only read** (``hook_point.read_only``, e.g. ``run_with_cache``): the layer runs
   fused, then the steps are handed to the hooks afterwards. h comes from the kernel's output;
   gates (only if a gate is hooked) are recomputed for all steps in two batched matmuls; the LSTM
   cell state (only if hooked) by an elementwise scan over time.
3. **Editing hooks at a few steps** (``at_step``; ``hook_point.active_steps()`` is a set): fused
   segments between the hooked steps, and only the hooked steps unrolled as explicit cells. A hook
   at 1 step of 256 costs 2 fused calls and one cell step.
4. **Editing hooks at every step**: the cells are unrolled over the whole sequence.

An unrolled step where only h is hooked runs PyTorch's fused cell (``torch.gru_cell`` /
``torch.lstm_cell``); a step where a gate or the LSTM's c is hooked runs the cell as explicit
tensor operations with those hook points inside (its input projection computed for all such steps
in one matmul).

Reading and editing hooks combine: edits split the sequence into fused segments, reads are handed
over segment by segment, in step order. Backward hooks count as editing (the gradient must flow
through the hooked tensor). Outputs agree with the plain PyTorch module to float tolerance in every
mode (tests/models/test_rnn.py); with dropout between layers, masks are drawn per layer (same
distribution as PyTorch, not the same random numbers).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from hooked.checkpoint import loadable
from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule

__all__ = ["HookedGRU", "HookedLSTM"]


class _Plan(NamedTuple):
    """Which steps of one layer hooks need: ``edit`` (unrolled cells) and ``read`` (handed over);
    ``None`` means every step."""

    edit: frozenset[int] | None
    read: frozenset[int] | None


class _HookedRNN(HookedModule):
    """What HookedGRU and HookedLSTM share; ``_torch_cls`` is the PyTorch class they extend."""

    _torch_cls: type[nn.RNNBase]
    _gates: tuple[str, ...]
    _states: tuple[str, ...]  # in call order within a step
    # set by nn.RNNBase, the other base class of HookedGRU and HookedLSTM
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    _flat_weights_names: list[str]

    def _setup(self, kind: str, config: dict[str, Any]) -> None:
        if self.bidirectional:
            raise ValueError(
                f"{kind}: bidirectional=True is not supported (per-step hooks follow one direction "
                "of time); use two layers on the sequence and its reverse"
            )
        if getattr(self, "proj_size", 0):
            raise ValueError(f"{kind}: proj_size > 0 is not supported; use proj_size=0")
        self.config = config
        self._points: list[dict[str, HookPoint]] = []
        for layer in range(self.num_layers):
            points = {}
            for name in (*self._gates, *self._states):
                hp = HookPoint(recurrent=True)
                self.add_module(f"hook_{name}_l{layer}", hp)
                points[name] = hp
            self._points.append(points)

    # ------------------------------------------------------------------ forward
    def forward(self, input: Tensor | PackedSequence, hx: Any = None, *, step_offset: int = 0) -> Any:
        """Like ``nn.GRU`` / ``nn.LSTM``; ``step_offset`` is added to the step the hooks see (a
        decoder that continues an encoder's sequence with the same layer passes the encoder's
        length, so that both halves share one time axis)."""
        if isinstance(input, Tensor) and input.dim() in (2, 3):
            time_axis = 1 if input.dim() == 3 and self.batch_first else 0
            if input.shape[time_axis] == 0:  # PyTorch refuses it too; say so in the layer's words
                raise ValueError(
                    f"{type(self).__name__}: the input {tuple(input.shape)} has no time steps (axis "
                    f"{time_axis}); a recurrent layer needs a sequence of length >= 1"
                )
        plans = [self._plan(layer) for layer in range(self.num_layers)]
        if all(p is None for p in plans):
            return self._torch_cls.forward(self, input, hx)
        return self._hooked_forward(input, hx, plans, step_offset)

    def _plan(self, layer: int) -> _Plan | None:
        edit: set[int] | None = set()
        read: set[int] | None = set()
        used = False
        for hp in self._points[layer].values():
            steps = hp.active_steps()
            if steps is not None and not steps:
                continue
            used = True
            if hp.read_only:
                read = None if steps is None or read is None else read | steps
            else:
                edit = None if steps is None or edit is None else edit | steps
        if not used:
            return None
        return _Plan(None if edit is None else frozenset(edit), None if read is None else frozenset(read))

    def _hooked_forward(self, input: Any, hx: Any, plans: list[_Plan | None], offset: int) -> Any:
        kind = type(self).__name__
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input, batch_first=True)
            lengths = lengths.to(x.device)
            batched = True
        else:
            if not isinstance(input, Tensor) or input.dim() not in (2, 3):
                raise ValueError(
                    f"{kind}: input must be a [batch, time, features] tensor (batch_first="
                    f"{self.batch_first}), an unbatched [time, features] tensor or a PackedSequence; "
                    f"got {type(input).__name__} {tuple(getattr(input, 'shape', ()))}"
                )
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(0)
            if batched and not self.batch_first:
                x = x.transpose(0, 1)
            lengths = None
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{kind}: input has {x.shape[-1]} features, expected input_size={self.input_size}"
            )
        state0 = self._initial_state(hx, x, batched)

        layer_in = x
        finals: list[tuple[Tensor, ...]] = []
        for layer in range(self.num_layers):
            state = tuple(s[layer] for s in state0)
            out, state = self._run_layer(layer, layer_in, state, lengths, plans[layer], offset)
            finals.append(state)
            if layer < self.num_layers - 1 and self.dropout and self.training:
                out = F.dropout(out, self.dropout, training=True)
            layer_in = out
        out = layer_in
        final = tuple(torch.stack([f[i] for f in finals]) for i in range(len(self._states)))
        # _states is ("h",) or ("c", "h"): PyTorch returns h_n first
        h_n = final[-1]
        c_n = final[0] if len(final) == 2 else None

        if packed:
            assert lengths is not None  # set with x from the PackedSequence
            order = input.sorted_indices
            rows = out if order is None else out[order]
            lens = lengths if order is None else lengths[order]
            data = pack_padded_sequence(rows, lens.cpu(), batch_first=True, enforce_sorted=True).data
            out = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif not batched:
            out, h_n = out.squeeze(0), h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return (out, h_n) if c_n is None else (out, (h_n, c_n))

    def _initial_state(self, hx: Any, x: Tensor, batched: bool) -> tuple[Tensor, ...]:
        """h0 (and c0) as [layers, batch, hidden], in the order of ``_states``."""
        kind = type(self).__name__
        batch = x.shape[0]
        shape = (self.num_layers, batch, self.hidden_size)
        n = len(self._states)
        if hx is None:
            zero = x.new_zeros(shape)
            return (zero,) * n
        parts = (hx,) if n == 1 else tuple(hx)
        if n == 2 and len(parts) != 2:
            raise ValueError(f"{kind}: hx must be a pair (h_0, c_0)")
        want = shape if batched else (self.num_layers, self.hidden_size)
        out = []
        for name, t in zip(("h_0", "c_0"), parts):
            if not isinstance(t, Tensor) or tuple(t.shape) != want:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{kind}: {name} has shape {got}, expected {want}")
            out.append(t if batched else t.unsqueeze(1))
        if n == 2:  # given as (h, c); kept in _states order (c, h)
            out = [out[1], out[0]]
        return tuple(out)

    # ------------------------------------------------------------------ one layer
    def _weights(self, layer: int) -> list[Tensor]:
        k = 4 if self.bias else 2
        return [getattr(self, name) for name in self._flat_weights_names[layer * k : (layer + 1) * k]]

    def _run_layer(
        self,
        layer: int,
        x: Tensor,
        state: tuple[Tensor, ...],
        lengths: Tensor | None,
        plan: _Plan | None,
        offset: int,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        steps = x.shape[1]
        if plan is None:
            return self._fused(layer, x, state, lengths)
        if plan.edit is None:
            edit = list(range(steps))
        else:
            edit = sorted(s - offset for s in plan.edit if 0 <= s - offset < steps)
        if plan.read is None:
            read = None
        else:
            read = {s - offset for s in plan.read if 0 <= s - offset < steps}
        w = self._weights(layer)
        # steps where a gate (or the LSTM's c) is hooked run as explicit cells; the others, where
        # only h is hooked, as PyTorch's fused cell (torch.gru_cell / torch.lstm_cell)
        inner = self._inner_steps(layer)
        explicit = [s for s in edit if inner is None or s + offset in inner]
        column = {s: i for i, s in enumerate(explicit)}  # step -> its column of xw
        # the input projection of every explicit step (only those), in one matmul
        xw = None
        if explicit:
            idx = torch.tensor(explicit, device=x.device, dtype=torch.long)
            xw = F.linear(x.index_select(1, idx), w[0], w[2] if self.bias else None)
        valid = None if lengths is None else torch.arange(steps, device=x.device)[None, :] < lengths[:, None]

        outs: list[Tensor] = []
        start = 0
        for s in [*edit, steps]:
            if s > start:  # a fused segment [start, s)
                seg_len = None if lengths is None else (lengths - start).clamp(0, s - start)
                seg_out, seg_state = self._fused(layer, x[:, start:s], state, seg_len)
                wanted = range(start, s) if read is None else sorted(t for t in read if start <= t < s)
                if wanted:
                    self._hand_over(
                        layer, x[:, start:s], state, seg_out, seg_state, seg_len, start, wanted, offset
                    )
                outs.append(seg_out)
                state = seg_state
            if s < steps:
                v = None if valid is None else valid[:, s, None]
                if s in column:
                    assert xw is not None  # computed for every step in `column`
                    h, state = self._cell(layer, xw[:, column[s]], state, v, s + offset)
                else:
                    h, state = self._fused_cell(layer, x[:, s], state, v, s + offset)
                outs.append(h[:, None])
            start = s + 1
        for hp in self._points[layer].values():
            hp.ran_steps(offset + steps)  # steps the fused kernels ran count as reached
        out = torch.cat(outs, dim=1)
        if valid is not None:  # as PyTorch: zeros past a row's length (the next layer's input)
            out = out.masked_fill(~valid[..., None], 0.0)
        return out, state

    def _inner_steps(self, layer: int) -> frozenset[int] | None:
        """Steps at which a hook point inside the cell (a gate, the LSTM's c) has a hook; None = all."""
        steps: set[int] = set()
        for name in (*self._gates, *self._states[:-1]):
            active = self._points[layer][name].active_steps()
            if active is None:
                return None
            steps |= active
        return frozenset(steps)

    def _fused(
        self, layer: int, x: Tensor, state: tuple[Tensor, ...], seg_len: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One layer over a segment with the fused kernel; rows with ``seg_len`` (packed) stop
        updating after their length, and rows of length 0 pass their state through."""
        w = self._weights(layer)
        if seg_len is None:
            out, *final = self._vf(x, None, tuple(s[None] for s in state), w)
            return out, tuple(f[0] for f in final)
        active = seg_len > 0
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x.new_zeros(*x.shape[:2], self.hidden_size), state
        packed = pack_padded_sequence(x[idx], seg_len[idx].cpu(), batch_first=True, enforce_sorted=False)
        hx = tuple(s[idx][packed.sorted_indices][None] for s in state)
        data, *final = self._vf(packed.data, packed.batch_sizes, hx, w)
        out_sub, _ = pad_packed_sequence(
            PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices),
            batch_first=True,
            total_length=x.shape[1],
        )
        out = x.new_zeros(*x.shape[:2], self.hidden_size).index_copy(0, idx, out_sub)
        new = tuple(s.index_copy(0, idx, f[0][packed.unsorted_indices]) for s, f in zip(state, final))
        return out, new

    def _hand_over(
        self,
        layer: int,
        x: Tensor,
        state_in: tuple[Tensor, ...],
        out: Tensor,
        state_end: tuple[Tensor, ...],
        seg_len: Tensor | None,
        start: int,
        steps: Any,
        offset: int,
    ) -> None:
        """Give read-only hooks the values of steps a fused segment computed."""
        points = self._points[layer]
        h_end = state_end[-1]
        valid = None
        if seg_len is not None:
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < seg_len[:, None]
            out = torch.where(valid[..., None], out, h_end[:, None])  # rows past their end keep state
        gates_used = any(points[g].active_steps() != frozenset() for g in self._gates)
        c_used = "c" in points and points["c"].active_steps() != frozenset()
        gates = cells = None
        if gates_used or c_used:
            h_prev = torch.cat([state_in[-1][:, None], out[:, :-1]], dim=1)
            gates = self._all_gates(layer, x, h_prev)
            if c_used:
                cells = self._cell_scan(gates, state_in[0], valid)
        for t in steps:
            step = t + offset
            local = t - start
            if gates_used:
                assert gates is not None  # computed above when gates_used
                for g in self._gates:
                    points[g](gates[g][:, local], step=step)
            if c_used:
                assert cells is not None  # computed above when c_used
                points["c"](cells[:, local], step=step)
            points["h"](out[:, local], step=step)

    # implemented by the subclasses
    def _vf(self, x: Tensor, batch_sizes: Tensor | None, hx: tuple[Tensor, ...], w: list[Tensor]) -> tuple:
        raise NotImplementedError

    def _cell(
        self, layer: int, xw: Tensor, state: tuple[Tensor, ...], valid: Tensor | None, step: int
    ) -> tuple:
        raise NotImplementedError

    def _fused_cell(
        self, layer: int, x: Tensor, state: tuple[Tensor, ...], valid: Tensor | None, step: int
    ) -> tuple:
        raise NotImplementedError

    def _all_gates(self, layer: int, x: Tensor, h_prev: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _cell_scan(self, gates: dict[str, Tensor], c0: Tensor, valid: Tensor | None) -> Tensor:
        raise NotImplementedError


@loadable
class HookedGRU(_HookedRNN, nn.GRU):
    """``nn.GRU`` with hook points ``hook_r_l{k}``, ``hook_z_l{k}``, ``hook_n_l{k}`` and
    ``hook_h_l{k}`` at every step (see the module docstring for the execution modes).

    Args:
        input_size: features of x_t.
        hidden_size: features of h_t.
        num_layers: stacked layers.
        bias: use the biases b_ih, b_hh.
        batch_first: inputs and outputs are [batch, time, features] (default here: True).
        dropout: dropout on the outputs of every layer but the last (training only).
    """

    _torch_cls = nn.GRU
    _gates = ("r", "z", "n")
    _states = ("h",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
    ):
        nn.GRU.__init__(
            self,
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            device=device,
            dtype=dtype,
        )
        config = dict(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
        )
        self._setup("HookedGRU", config)

    def _vf(self, x, batch_sizes, hx, w):
        if batch_sizes is None:
            return _VF.gru(x, hx[0], w, self.bias, 1, 0.0, self.training, False, True)
        return _VF.gru(x, batch_sizes, hx[0], w, self.bias, 1, 0.0, self.training, False)

    def _cell(self, layer, xw, state, valid, step):
        (h,) = state
        w = self._weights(layer)
        p = self._points[layer]
        gh = F.linear(h, w[1], w[3] if self.bias else None)
        i_r, i_z, i_n = xw.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = p["r"](torch.sigmoid(i_r + h_r), step=step)
        z = p["z"](torch.sigmoid(i_z + h_z), step=step)
        n = p["n"](torch.tanh(i_n + r * h_n), step=step)
        new = n + z * (h - n)  # (1 - z) * n + z * h
        if valid is not None:
            new = torch.where(valid, new, h)
        new = p["h"](new, step=step)
        return new, (new,)

    def _fused_cell(self, layer, x, state, valid, step):
        (h,) = state
        w = self._weights(layer)
        new = torch.gru_cell(x, h, w[0], w[1], w[2] if self.bias else None, w[3] if self.bias else None)
        if valid is not None:
            new = torch.where(valid, new, h)
        new = self._points[layer]["h"](new, step=step)
        return new, (new,)

    def _all_gates(self, layer, x, h_prev):
        w = self._weights(layer)
        gi = F.linear(x, w[0], w[2] if self.bias else None)
        gh = F.linear(h_prev, w[1], w[3] if self.bias else None)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        return {"r": r, "z": torch.sigmoid(i_z + h_z), "n": torch.tanh(i_n + r * h_n)}


@loadable
class HookedLSTM(_HookedRNN, nn.LSTM):
    """``nn.LSTM`` with hook points ``hook_i_l{k}``, ``hook_f_l{k}``, ``hook_g_l{k}``,
    ``hook_o_l{k}``, ``hook_c_l{k}`` and ``hook_h_l{k}`` at every step (see the module docstring).

    Args:
        input_size: features of x_t.
        hidden_size: features of h_t and c_t.
        num_layers: stacked layers.
        bias: use the biases b_ih, b_hh.
        batch_first: inputs and outputs are [batch, time, features] (default here: True).
        dropout: dropout on the outputs of every layer but the last (training only).
    """

    _torch_cls = nn.LSTM
    _gates = ("i", "f", "g", "o")
    _states = ("c", "h")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
    ):
        nn.LSTM.__init__(
            self,
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
            device=device,
            dtype=dtype,
        )
        config = dict(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
        )
        self._setup("HookedLSTM", config)

    def _vf(self, x, batch_sizes, hx, w):
        c, h = hx
        if batch_sizes is None:
            out, h_n, c_n = _VF.lstm(x, (h, c), w, self.bias, 1, 0.0, self.training, False, True)
        else:
            out, h_n, c_n = _VF.lstm(x, batch_sizes, (h, c), w, self.bias, 1, 0.0, self.training, False)
        return out, c_n, h_n

    def _cell(self, layer, xw, state, valid, step):
        c, h = state
        w = self._weights(layer)
        p = self._points[layer]
        gates = xw + F.linear(h, w[1], w[3] if self.bias else None)
        i, f, g, o = gates.chunk(4, dim=1)
        i = p["i"](torch.sigmoid(i), step=step)
        f = p["f"](torch.sigmoid(f), step=step)
        g = p["g"](torch.tanh(g), step=step)
        o = p["o"](torch.sigmoid(o), step=step)
        c_new = f * c + i * g
        if valid is not None:
            c_new = torch.where(valid, c_new, c)
        c_new = p["c"](c_new, step=step)
        h_new = o * torch.tanh(c_new)
        if valid is not None:
            h_new = torch.where(valid, h_new, h)
        h_new = p["h"](h_new, step=step)
        return h_new, (c_new, h_new)

    def _fused_cell(self, layer, x, state, valid, step):
        c, h = state
        w = self._weights(layer)
        h_new, c_new = torch.lstm_cell(
            x, (h, c), w[0], w[1], w[2] if self.bias else None, w[3] if self.bias else None
        )
        if valid is not None:
            c_new = torch.where(valid, c_new, c)
            h_new = torch.where(valid, h_new, h)
        h_new = self._points[layer]["h"](h_new, step=step)
        return h_new, (c_new, h_new)

    def _all_gates(self, layer, x, h_prev):
        w = self._weights(layer)
        gates = F.linear(x, w[0], w[2] if self.bias else None) + F.linear(
            h_prev, w[1], w[3] if self.bias else None
        )
        i, f, g, o = gates.chunk(4, dim=-1)
        return {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "g": torch.tanh(g), "o": torch.sigmoid(o)}

    def _cell_scan(self, gates, c0, valid):
        """c_t = f_t * c_{t-1} + i_t * g_t over the segment (elementwise; rows past their end keep c)."""
        ig = gates["i"] * gates["g"]
        f = gates["f"]
        c = c0
        cells = []
        for t in range(f.shape[1]):
            new = f[:, t] * c + ig[:, t]
            c = new if valid is None else torch.where(valid[:, t, None], new, c)
            cells.append(c)
        return torch.stack(cells, dim=1)
