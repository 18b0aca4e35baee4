"""The zoo member: a hooked 2 x 32 LSTM with a linear head, and the same network as a function of
stacked parameters, so that many members run (and train) as one computation.

* :class:`ZooLSTM` is what one zoo member loads as: a :class:`~hooked.HookedModule` holding a
  :class:`~hooked.models.rnn.HookedLSTM` (a drop-in ``nn.LSTM`` with per-step hook points on
  h, c and the gates of every layer) under ``lstm`` and an ``nn.Linear`` under ``head``
  (state-dict keys ``lstm.weight_ih_l0``, ..., ``head.weight``, ``head.bias``, as ``nn.LSTM``'s),
  with hook points on the input, the LSTM's top-layer output and the logits.
* :func:`stacked_lstm` runs M members at once from a dict of parameters stacked on a leading
  member axis (the same keys): one einsum for the input projections of all time steps and one
  batched matmul per step for the recurrence. The zoo trains through it, samples through it,
  and the probing encoders interrogate members through it.
* :class:`LSTMLayout` names the parameter tensors and their shapes; :func:`permute_hidden`
  applies hidden-unit permutations (the symmetry of the weights the DWS layers respect).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from hooked.checkpoint import loadable
from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule
from hooked.models.rnn import HookedLSTM
from hooked.typecheck import Float, typechecked

Params = dict[str, Tensor]
State = tuple[Tensor, Tensor]  # (h, c), each [layers, members, batch, hidden]


@dataclass(frozen=True)
class LSTMLayout:
    """Sizes of a zoo member: ``d_in`` inputs, ``layers`` x ``hidden`` LSTM, ``d_out`` outputs."""

    d_in: int
    d_out: int
    hidden: int = 32
    layers: int = 2

    def __post_init__(self) -> None:
        for name in ("d_in", "d_out", "hidden", "layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"LSTMLayout: {name} must be a positive int, got {v!r}")

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape (one member), in ``ZooLSTM.state_dict()`` order."""
        H, out = self.hidden, {}
        for l in range(self.layers):
            d = self.d_in if l == 0 else H
            out[f"lstm.weight_ih_l{l}"] = (4 * H, d)
            out[f"lstm.weight_hh_l{l}"] = (4 * H, H)
            out[f"lstm.bias_ih_l{l}"] = (4 * H,)
            out[f"lstm.bias_hh_l{l}"] = (4 * H,)
        out["head.weight"] = (self.d_out, H)
        out["head.bias"] = (self.d_out,)
        return out

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, config: Mapping) -> LSTMLayout:
        return cls(**{k: int(config[k]) for k in ("d_in", "d_out", "hidden", "layers")})


@loadable
class ZooLSTM(HookedModule):
    """One zoo member: ``HookedLSTM(d_in, hidden, layers)`` + ``Linear(hidden, d_out)``.

    Hook points: ``hook_in`` (the input, [batch, time, d_in]), the LSTM's per-step points
    ``lstm.hook_h_l{k}``, ``lstm.hook_c_l{k}`` and gates ``lstm.hook_{i,f,g,o}_l{k}`` (cached as
    [batch, time, hidden]), ``hook_lstm_out`` (the top layer's output, [batch, time, hidden]) and
    ``hook_logits`` ([batch, time, d_out]). With no hook on the LSTM it runs PyTorch's fused kernel.

    Args:
        d_in: input size (6 one-hot symbols for the formal languages, pixels per tile for digits).
        d_out: output size (6 symbols / 10 classes).
        hidden: LSTM hidden size.
        layers: LSTM layers.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int = 32, layers: int = 2):
        super().__init__()
        self.layout = LSTMLayout(d_in, d_out, hidden, layers)
        self.config = self.layout.to_json()
        self.lstm = HookedLSTM(d_in, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, d_out)
        self.hook_in = HookPoint()
        self.hook_lstm_out = HookPoint()
        self.hook_logits = HookPoint()

    @typechecked
    def forward(
        self, x: Float[Tensor, "batch time d_in"], state: State | None = None, *, return_state: bool = False
    ) -> Float[Tensor, "batch time d_out"] | tuple[Float[Tensor, "batch time d_out"], State]:
        """Logits for every step; ``state`` is ``(h, c)``, each [layers, batch, hidden]."""
        if x.shape[-1] != self.layout.d_in:
            raise ValueError(
                f"ZooLSTM: x has {x.shape[-1]} features per step, expected d_in={self.layout.d_in}"
            )
        out, new_state = self.lstm(self.hook_in(x), state)
        logits = self.hook_logits(self.head(self.hook_lstm_out(out)))
        return (logits, new_state) if return_state else logits

    def stacked_params(self) -> Params:
        """This model's parameters with a member axis of one, as :func:`stacked_lstm` takes them."""
        return {k: v.detach()[None] for k, v in self.state_dict().items()}


# ---------------------------------------------------------------------- functional, stacked
def check_params(params: Mapping[str, Tensor], layout: LSTMLayout, what: str = "params") -> int:
    """The member count of a stacked parameter dict; raises naming any missing/odd tensor."""
    shapes = layout.shapes
    missing = [k for k in shapes if k not in params]
    extra = [k for k in params if k not in shapes]
    if missing or extra:
        raise ValueError(f"{what}: missing {missing} / unexpected {extra} for layout {layout}")
    m = None
    for k, shape in shapes.items():
        t = params[k]
        if tuple(t.shape[1:]) != shape or (m is not None and t.shape[0] != m):
            raise ValueError(
                f"{what}[{k!r}] has shape {tuple(t.shape)}, expected [members, {', '.join(map(str, shape))}]"
                + (f" with members={m}" if m is not None else "")
            )
        m = t.shape[0]
    return int(m)


def init_params(members: int, layout: LSTMLayout, generator: torch.Generator | None = None) -> Params:
    """Fresh stacked parameters drawn as PyTorch initialises ``nn.LSTM`` and ``nn.Linear``."""
    out = {}
    for k, shape in layout.shapes.items():
        fan = layout.hidden  # nn.LSTM: U(-1/sqrt(hidden), 1/sqrt(hidden)); nn.Linear: 1/sqrt(fan_in)
        bound = 1.0 / math.sqrt(fan)
        out[k] = (torch.rand((members, *shape), generator=generator) * 2 - 1) * bound
    return out


@typechecked
def stacked_lstm(
    params: Mapping[str, Tensor],
    x: Float[Tensor, "members batch time d_in"] | Float[Tensor, "batch time d_in"],
    state: State | None = None,
) -> tuple[Float[Tensor, "members batch time d_out"], State]:
    """Run M members at once: ``x`` [M, batch, time, d_in] (or [batch, time, d_in], shared by
    all members) -> logits [M, batch, time, d_out] and the final ``(h, c)`` [layers, M, batch, hidden].

    ``params`` holds ``ZooLSTM`` state-dict keys with a leading member axis. Gradients flow to
    whichever of ``params`` and ``x`` require them.
    """
    head_w = params["head.weight"]
    m, hidden = head_w.shape[0], head_w.shape[-1]
    layers = sum(1 for k in params if k.startswith("lstm.weight_ih_l"))
    shared = x.dim() == 3
    batch = x.shape[0] if shared else x.shape[1]
    if not shared and x.shape[0] != m:
        raise ValueError(f"stacked_lstm: x has {x.shape[0]} members on axis 0, params have {m}")
    if state is None:
        z = x.new_zeros(layers, m, batch, hidden)
        state = (z, z)
    h_all, c_all = state
    # time-major [T, M, B, 4H]: unbinding along time keeps the backward pass linear in T
    seq = x
    hs, cs = [], []
    for l in range(layers):
        w_ih, w_hh = params[f"lstm.weight_ih_l{l}"], params[f"lstm.weight_hh_l{l}"]
        bias = params[f"lstm.bias_ih_l{l}"] + params[f"lstm.bias_hh_l{l}"]
        if l == 0:
            eq = "bti,mgi->tmbg" if shared else "mbti,mgi->tmbg"
        else:
            eq = "tmbi,mgi->tmbg"
        pre = torch.einsum(eq, seq, w_ih) + bias[:, None]
        w_hh_t = w_hh.transpose(1, 2)
        h, c = h_all[l], c_all[l]
        outs = []
        for pre_t in pre.unbind(0):
            gates = torch.baddbmm(pre_t, h, w_hh_t)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        seq = torch.stack(outs, 0)
        hs.append(h)
        cs.append(c)
    logits = torch.einsum("tmbh,mvh->mbtv", seq, head_w) + params["head.bias"][:, None, None]
    return logits, (torch.stack(hs), torch.stack(cs))


def member_params(params: Mapping[str, Tensor], index: int) -> dict[str, Tensor]:
    """One member's parameters as a ``ZooLSTM`` state dict."""
    return {k: v[index] for k, v in params.items()}


def load_member(params: Mapping[str, Tensor], index: int, layout: LSTMLayout) -> ZooLSTM:
    """Member ``index`` of stacked ``params`` as a hooked :class:`ZooLSTM`."""
    model = ZooLSTM(**layout.to_json())
    model.load_state_dict({k: v.detach().clone() for k, v in member_params(params, index).items()})
    return model


@typechecked
def flatten_params(params: Mapping[str, Tensor], layout: LSTMLayout) -> Float[Tensor, "members n_params"]:
    """[M, n_params]: every tensor flattened, in the layout's order."""
    return torch.cat([params[k].flatten(1) for k in layout.shapes], dim=1)


# ---------------------------------------------------------------------- symmetry
def random_permutations(
    members: int, layout: LSTMLayout, generator: torch.Generator | None = None, device=None
) -> list[Tensor]:
    """One random permutation of the hidden units per layer and member: ``layers`` x [M, hidden]."""
    return [
        torch.rand(members, layout.hidden, generator=generator).argsort(dim=1).to(device)
        for _ in range(layout.layers)
    ]


def permute_hidden(params: Mapping[str, Tensor], perms: Sequence[Tensor]) -> Params:
    """Permute hidden units: new unit i of layer l is old unit ``perms[l][m, i]`` (per member m).

    Rows of every gate block of layer l's weights and biases, the columns of ``weight_hh_l``, and
    the input columns of the next layer (or of the head) move together, so the permuted network
    computes exactly the same function. ``perms[l]`` is [M, hidden] or [hidden] (all members).
    """
    out = dict(params)
    m = params["head.weight"].shape[0]
    layers = len(perms)
    for l, p in enumerate(perms):
        p = p.expand(m, -1) if p.dim() == 1 else p
        hidden = p.shape[1]
        rows = (torch.arange(4, device=p.device)[None, :, None] * hidden + p[:, None, :]).reshape(
            m, 4 * hidden
        )
        for key in (f"lstm.weight_ih_l{l}", f"lstm.weight_hh_l{l}"):
            w = out[key]
            out[key] = w.gather(1, rows[:, :, None].expand(-1, -1, w.shape[2]))
        for key in (f"lstm.bias_ih_l{l}", f"lstm.bias_hh_l{l}"):
            out[key] = out[key].gather(1, rows)
        w = out[f"lstm.weight_hh_l{l}"]
        out[f"lstm.weight_hh_l{l}"] = w.gather(2, p[:, None, :].expand(-1, w.shape[1], -1))
        nxt = f"lstm.weight_ih_l{l + 1}" if l + 1 < layers else "head.weight"
        w = out[nxt]
        out[nxt] = w.gather(2, p[:, None, :].expand(-1, w.shape[1], -1))
    return out
