"""Interventions given what a hostile user gives them (issue 22): ``fit`` checks every argument
before it touches the model and, when a step fails, puts the model back exactly as it was (its
own mode and every submodule's, every parameter's ``requires_grad``) with no hook left; a NaN loss
stops training before it reaches the parameters; ``evaluate`` weighs every row once; the subspace
interventions refuse sizes that do not fit; positions are checked against the activation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hooked
from hooked.errors import OptionError
from interventions.intervention import InterventionBatch
from interventions.onion import OnionIntervention
from interventions.subspace import DAS, Autosegment, FixedSubspace


class Toy(hooked.HookedModule):
    """h = W x (W orthogonal), output = h, with a dropout submodule the caller keeps in eval mode."""

    def __init__(self, d=4):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(5)))
        self.W = nn.Parameter(q)
        self.b = nn.Parameter(torch.zeros(d), requires_grad=False)  # a frozen one stays frozen
        self.drop = nn.Dropout(0.5)
        self.hook_h = hooked.HookPoint()

    def forward(self, x):
        return self.drop(self.hook_h(x @ self.W.T + self.b))


def caller_state(model):
    """What the caller set on the model: every module's mode and every parameter's requires_grad."""
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def fresh_toy():
    model = Toy().train()
    model.drop.eval()  # a mixed state: the model trains, its dropout does not
    return model


def data(g, rows=8, source_rows=None, nan=False):
    base = torch.randn(rows, 4, generator=g)
    source = torch.randn(source_rows or rows, 4, generator=g)
    if nan:
        base[0, 0] = float("nan")
    return InterventionBatch(base, base.clone(), source=source)


def loss(out, target):
    return ((out - target) ** 2).sum(-1).mean()


def no_hooks(model):
    return not any(hp.has_hooks() for hp in model.hook_dict.values())


REFUSED = [
    ("lr<0", dict(lr=-1.0), OptionError, "lr must be a finite number > 0, got -1.0"),
    ("lr nan", dict(lr=float("nan")), OptionError, "lr must be a finite number > 0, got nan"),
    ("lr 0", dict(lr=0.0), OptionError, "lr must be a finite number > 0"),
    ("steps 0", dict(steps=0), OptionError, "steps must be a positive integer, got 0"),
    ("steps<0", dict(steps=-3), OptionError, "steps must be a positive integer, got -3"),
    ("steps float", dict(steps=2.5), OptionError, "steps must be a positive integer, got 2.5"),
    ("weight_decay<0", dict(weight_decay=-1.0), OptionError, "weight_decay must be a finite number >= 0"),
    ("seed float", dict(seed=1.5), TypeError, "seed must be an integer"),
    ("data not callable", dict(data=[1, 2]), TypeError, "data must be a function"),
    ("loss not callable", dict(loss=None), TypeError, "loss must be a function"),
    ("position float", dict(position=1.0), TypeError, "position must be an int"),
    ("progress str-like", dict(progress=1), TypeError, "progress must be True, False or a label"),
    ("unknown hook", dict(hook="nope"), Exception, "no hook point named 'nope'"),
    # failures inside a step: the model is restored all the same
    ("data returns no batch", dict(data=lambda g: (1, 2)), TypeError, "must return an InterventionBatch"),
    ("data raises", dict(data=lambda g: 1 / 0), ZeroDivisionError, "division"),
    (
        "loss per row",
        dict(loss=lambda o, t: ((o - t) ** 2).sum(-1)),
        ValueError,
        r"scalar tensor, got \(8,\)",
    ),
    ("loss detached", dict(loss=lambda o, t: torch.tensor(1.0)), ValueError, "does not depend on"),
    ("fewer source rows", dict(data=lambda g: data(g, source_rows=3)), ValueError, "source has 3 rows but"),
    ("more source rows", dict(data=lambda g: data(g, source_rows=16)), ValueError, "source has 16 rows but"),
    ("position past the end", dict(position=99), IndexError, "position=99 is outside the 4 positions"),
]


@pytest.mark.parametrize("kwargs, error, match", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_failing_fit_leaves_the_model_as_it_was(kwargs, error, match):
    model, iv = fresh_toy(), DAS(4, 1, seed=0)
    iv.eval()
    before, weights = caller_state(model), [p.detach().clone() for p in iv.parameters()]
    args = {"hook": "hook_h", "data": data, "loss": loss, "steps": 3, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        iv.fit(model, args.pop("hook"), args.pop("data"), **args)
    assert caller_state(model) == before
    assert no_hooks(model) and model.W.grad is None
    assert not iv.training  # the intervention's own mode is back too
    assert all(torch.equal(p, w) for p, w in zip(iv.parameters(), weights))  # no step was taken


def test_a_nan_loss_stops_fit_before_the_parameters_take_it():
    model, iv = fresh_toy(), DAS(4, 1, seed=0)
    calls = []

    def late_nan(g):  # two good steps, then a NaN in the data
        calls.append(1)
        return data(g, nan=len(calls) == 3)

    reference = DAS(4, 1, seed=0)
    reference.fit(fresh_toy(), "hook_h", data, loss=loss, steps=2, lr=0.05, progress=False)
    with pytest.raises(FloatingPointError, match="the loss at step 2 is nan"):
        iv.fit(model, "hook_h", late_nan, loss=loss, steps=5, lr=0.05, progress=False)
    assert torch.isfinite(iv.rotation()).all()
    torch.testing.assert_close(iv.rotation(), reference.rotation())  # exactly the two good steps
    assert caller_state(model) == caller_state(fresh_toy())


def test_a_finished_fit_keeps_the_callers_submodule_modes():
    """fit freezes and evaluates the model while it trains, then gives each submodule its own mode
    back (a train-mode model with an eval-mode dropout used to come back with the dropout training)."""
    model = fresh_toy()
    before = caller_state(model)
    DAS(4, 1, seed=0).fit(model, "hook_h", data, loss=loss, steps=2, progress=False)
    assert caller_state(model) == before == ([True, False, True], [True, False])  # Toy, drop, hook_h


def test_evaluate_weighs_every_row_once_and_refuses_what_it_cannot_weigh():
    model, iv = fresh_toy(), DAS(4, 1, seed=0)
    model.eval()
    g = torch.Generator().manual_seed(0)
    batches = [data(g, rows=8), data(g, rows=2)]

    def metric(out, target):
        return (out - target).norm(dim=-1)

    with torch.no_grad():
        by_hand = torch.cat([metric(iv.run(model, "hook_h", b), b.target) for b in batches]).mean()
    iv.train()
    got = iv.evaluate(model, "hook_h", batches, metric=metric)
    assert got == pytest.approx(float(by_hand), rel=1e-6)
    assert iv.training  # put back in the mode it was in
    with pytest.raises(ValueError, match=r"one value per row of the base batch \(8\), got \(\)"):
        iv.evaluate(model, "hook_h", batches, metric=lambda o, t: metric(o, t).mean())
    with pytest.raises(ValueError, match="the batches hold no rows"):
        iv.evaluate(model, "hook_h", [], metric=metric)  # used to be 0.0
    with pytest.raises(TypeError, match="metric must be a function"):
        iv.evaluate(model, "hook_h", batches, metric="accuracy")
    assert iv.training


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: DAS(8, 0), OptionError, "n_vars must be a positive integer, got 0"),
        (lambda: DAS(8, 9), ValueError, r"n_vars=9 variables .* exceed d=8"),
        (lambda: DAS(8, 3, var_size=3), ValueError, "3 variables of size 3 do not fit in d=8"),
        (lambda: DAS(0, 1), OptionError, "d must be a positive integer, got 0"),
        (lambda: DAS(8, 2.5), OptionError, "n_vars must be a positive integer, got 2.5"),
        (lambda: DAS(8, 2, var_size=0), OptionError, "var_size must be a positive integer, got 0"),
        (lambda: DAS(8, 1, rotation_map="qr"), ValueError, "rotation_map must be one of"),
        (lambda: DAS(8, 1, seed=1.5), TypeError, "seed must be an integer or None"),
        (lambda: Autosegment(8, 2, tau=0), OptionError, "tau must be a finite number > 0"),
        (lambda: Autosegment(8, 2, tau=float("nan")), OptionError, "tau must be a finite number > 0"),
        (lambda: Autosegment(8, 0), OptionError, "n_vars must be a positive integer"),
        (lambda: FixedSubspace(torch.zeros(4, 0)), ValueError, r"k >= 1, got shape \(4, 0\)"),
        (lambda: FixedSubspace(torch.eye(4, dtype=torch.long)[:, :2]), TypeError, "float tensor"),
        (lambda: FixedSubspace(torch.eye(4)[:, :2], var_sizes=[]), ValueError, "non-empty list"),
        (lambda: FixedSubspace(torch.eye(4)[:, :2], var_sizes=[3, -1]), OptionError, r"var_sizes\[1\]"),
        (lambda: FixedSubspace(torch.eye(4)[:, :2], var_sizes=[2, 0]), OptionError, r"var_sizes\[1\]"),
        (lambda: OnionIntervention(0, 3), OptionError, "d must be a positive integer"),
    ],
)
def test_subspace_sizes_that_do_not_fit_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_an_intervention_of_another_width_names_both_widths():
    with pytest.raises(
        ValueError, match="the activation has 4 features, but this intervention was made for d=6"
    ):
        DAS(6, 1, seed=0)(torch.randn(2, 4), torch.randn(2, 4))
    onion = OnionIntervention(4, 3, seed=0)
    one = torch.ones(2, dtype=torch.long)
    with pytest.raises(IndexError, match="old holds 3, outside the token codes of 3"):
        onion(torch.randn(2, 4), old=torch.tensor([0, 3]), new=one, pos=one)
    with pytest.raises(ValueError, match="pos must be >= 0"):
        onion(torch.randn(2, 4), old=one, new=one, pos=-one)


class Seq(hooked.HookedModule):
    def __init__(self):
        super().__init__()
        self.hook_h = hooked.HookPoint()

    def forward(self, x):
        return self.hook_h(x)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(position=5), IndexError, "position=5 is outside the 5 positions"),
        (dict(position=-6), IndexError, "position=-6 is outside the 5 positions"),
        (dict(position=2.0), TypeError, "position must be an int"),
        (dict(position=torch.tensor([7, 0, 0])), IndexError, "position holds 7, outside"),
        (dict(position=torch.tensor([1, 0])), ValueError, "position has 2 entries .* but .* has 3 rows"),
        (dict(position=torch.tensor([1.0, 0, 0])), TypeError, "position must be an int"),
        (dict(position=1, pos_dim=0), IndexError, "pos_dim=0 is not a position axis"),
        (dict(position=1, pos_dim=3), IndexError, "pos_dim=3 is not a position axis"),
        (dict(position=1, source_index=torch.tensor([0, 5, 1])), IndexError, "source_index holds 5"),
    ],
)
def test_positions_and_source_rows_outside_the_activation_are_refused(kwargs, error, match):
    model, iv = Seq(), DAS(4, 1, seed=0)
    batch = InterventionBatch(torch.randn(3, 5, 4), None, source=torch.randn(3, 5, 4))
    if "source_index" in kwargs:
        batch.source_index = kwargs.pop("source_index")
    with pytest.raises(error, match=match):
        iv.run(model, "hook_h", batch, **kwargs)
    assert no_hooks(model)


def test_positions_in_range_edit_exactly_that_position():
    """Negative positions count from the end (as Python's); a [rows] tensor picks one per row."""
    model, iv = Seq(), DAS(4, 4, seed=0)  # every variable: the edit is the source itself
    base, source = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    batch = InterventionBatch(base, None, source=source)
    out = iv.run(model, "hook_h", batch, position=-1)
    want = base.clone()
    want[:, 4] = source[:, 4]
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    rows = torch.tensor([0, 3, -2])
    out = iv.run(model, "hook_h", batch, position=rows)
    want = base.clone()
    for r, p in enumerate([0, 3, 3]):
        want[r, p] = source[r, p]
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
