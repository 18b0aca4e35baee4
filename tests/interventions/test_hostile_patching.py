"""Patching sweeps, ``patch`` and attribution patching against a hostile user: every path of
``patching_sweep`` (the reference loop ``batched=False``, the plain batched sweep
``reuse_prefix=False`` and the default, which on a causal LM is the prefix-reusing / layer-skipping
strategy) refuses exactly what the reference refuses, with the same error, and answers exactly
what it answers; on ``HookedModule``, ``hooked.wrap`` of a plain module, and a tiny Llama through
``hooked.lm``'s wrap and bridge backends.

Cases (old behaviour on main cd36a9d -> now):

Positions
  * position ``T`` (past the end), prefix path: IndexError -> ValueError naming the hook and range
  * position below ``-T``, prefix path: taken modulo T, another position's numbers -> ValueError
  * position ``2.7``: patched position 2 -> TypeError
  * position ``True``: patched position 1 -> TypeError
  * ``positions=[]``: ``chunk=0: expected at least 1 patch`` -> ValueError "positions is empty"
  * a float ``[rows]`` tensor: used as indices -> TypeError; a ``[3]`` tensor for 2 rows:
    ValueError without the caller -> ValueError naming it; a 2-d tensor -> TypeError
  * a recurrent hook point's step past the last (``6`` of 6 steps): the base's numbers -> ValueError;
    step ``-1``: at_step's message -> ValueError naming the steps
  * numpy / 0-d tensor integers: accepted, as ints
Chunks
  * ``chunk=0``: "no limit" -> OptionError; ``-1``: planner's ValueError -> OptionError;
    ``1.5``: internal TypeError -> OptionError; ``True`` -> OptionError
Sources
  * source with more rows than the base: first rows used silently (prefix path) -> ValueError
  * source of one row: IndexError on the batched path, accepted by the reference -> every path
    patches that row into every base row
  * source of another length, whole-activation patch: internal RuntimeError -> ValueError
  * source of another length, patch at a position that both have: every path patches it
  * a recurrent source running more steps than the base (whole patch): the base's steps patched
    silently -> ValueError (a patch that never ran)
Hooks
  * ``hooks=[h, h]``: internal RuntimeError (shape mismatch) -> ValueError "given twice"
  * a TransformerLens name and the module path of one hook point (wrap) or an alias and its
    canonical name (bridge): internal RuntimeError -> ValueError "two names of one hook point"
  * ``hooks=[]``: ``chunk=0`` message -> ValueError "hooks is empty"
  * a hook point object instead of its name: "not iterable" -> TypeError naming the argument
  * one name as a string: iterated letter by letter (UnknownHookError 'b') -> taken as ``[name]``
  * an unknown name: UnknownHookError (unchanged)
Metrics and flags
  * a scalar metric (a mean over rows): internal reshape error on the batched path, a number on the
    reference path -> ValueError on every path; a metric of the wrong length -> ValueError
  * a metric that is not callable -> TypeError naming it
  * ``pos_dim=0`` (the batch axis): a number -> ValueError; ``pos_dim=5``: IndexError -> ValueError
  * ``batched="yes"``: taken as true -> TypeError
``patch``
  * position past the end: IndexError -> ValueError; ``1.5``: IndexError -> TypeError; a source
    of 3 rows for a base of 2: RuntimeError -> ValueError
Attribution patching
  * ``hooks=[h, h]``: IndexError on the tiny LM, on SmolLM2 a wrong number (9.28 for 0.149: the
    stacked cache) -> ValueError; TransformerLens name + module path: "no gradient reached" ->
    ValueError "two names of one hook point"
  * ``per_head=True`` on a residual stream: ``d_model`` taken as the head axis -> ValueError
  * a scalar metric (mean over rows): every estimate divided by the rows -> ValueError
  * position ``T`` or ``2.7``: IndexError -> the sweep's ValueError / TypeError
  * a ``[rows]`` tensor of positions: IndexError -> one index per row (as ``patching_sweep``)
  * a source of one row -> taken by every base row (as ``patching_sweep``)

The cache cases (names given twice, nested runs, keys) are in ``tests/core/test_cache_hostile.py``,
``logit_attrs`` with a sliced stack in ``tests/lm/test_resid.py``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import hooked
from hooked.errors import OptionError, UnknownHookError
from interventions.attribution import attribution_patching
from interventions.patching import patch, patching_pairs, patching_sweep
from tests.toys import SeqLinear, SeqMLP, TinyRNN

T = 6  # positions of every base batch below
ROWS = 2


def last_feature(out):
    return out[:, -1, 0] - out[:, -1, 1]


class Setup:
    """A model, a base and source batch, its hooks and a metric of one value per row."""

    def __init__(self, model, base, source, hooks, metric, make_input, lm=False):
        self.model, self.base, self.source, self.hooks, self.metric = model, base, source, hooks, metric
        self.make_input = make_input  # (rows, length, seed) -> a batch
        self.lm = lm


def _toy() -> Setup:
    model = SeqMLP(d=4, n_blocks=2)

    def make(rows, length, seed):
        return torch.randn(rows, length, 4, generator=torch.Generator().manual_seed(seed))

    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"]
    return Setup(model, make(ROWS, T, 0), make(ROWS, T, 1), hooks, last_feature, make)


def _wrapped_plain() -> Setup:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    class Mix(nn.Module):
        def forward(self, x):
            return x.cumsum(dim=1)

    model = hooked.wrap(nn.Sequential(net, Mix()))

    def make(rows, length, seed):
        return torch.randn(rows, length, 4, generator=torch.Generator().manual_seed(seed))

    hooks = ["0.0.hook_out", "0.1.hook_out", "0.2.hook_in"]
    return Setup(model, make(ROWS, T, 0), make(ROWS, T, 1), hooks, last_feature, make)


def _lm(backend: str) -> Setup:
    from hooked import lm
    from tests.lm.tiny_models import tiny_bridge, tiny_hf

    model = lm.wrap_lm(tiny_hf("llama")) if backend == "wrap" else tiny_bridge("llama")

    def make(rows, length, seed):
        return torch.randint(4, 64, (rows, length), generator=torch.Generator().manual_seed(seed))

    def metric(logits):
        return logits[:, -1, 5] - logits[:, -1, 6]

    return Setup(model, make(ROWS, T, 0), make(ROWS, T, 1), lm.residual_hooks(model), metric, make, lm=True)


SETUPS = {
    "toy": _toy,
    "wrap-plain": _wrapped_plain,
    "lm-wrap": lambda: _lm("wrap"),
    "lm-bridge": lambda: _lm("bridge"),
}


@pytest.fixture(
    scope="module",
    params=[pytest.param(k, marks=pytest.mark.slow) if k == "lm-bridge" else k for k in SETUPS],
)
def setup(request):  # the bridge's whole table is slow; test_the_bridge_refuses_... runs by default
    return SETUPS[request.param]()


# ---------------------------------------------------------------------- comparing the paths
PATHS = {"reference": dict(batched=False), "plain": dict(reuse_prefix=False), "default": {}}


def outcome(fn):
    """``("value", tensor)`` or ``(error type, message)``."""
    try:
        return "value", fn()
    except Exception as e:
        return type(e), str(e)


def assert_same(got, want, what):
    if want[0] == "value":
        assert got[0] == "value", f"{what}: the reference answers, this path raised {got}"
        torch.testing.assert_close(got[1], want[1], atol=1e-4, rtol=1e-4, msg=what)
    else:
        assert got == want, f"{what}: {got} against the reference's {want}"


def sweep_outcomes(s: Setup, **kw):
    """Each path's outcome of ``patching_sweep(s.model, ...)`` with ``kw`` over the defaults."""
    args = dict(base=s.base, source=s.source, hooks=s.hooks[:2], metric=s.metric, positions=[1, -1])
    args.update(kw)
    base, source, hooks, metric, positions = (
        args.pop(k) for k in ("base", "source", "hooks", "metric", "positions")
    )
    return {
        name: outcome(
            lambda p=p: patching_sweep(s.model, base, source, hooks, metric, positions, **args, **p)
        )
        for name, p in PATHS.items()
    }


def check_paths_agree(s: Setup, **kw):
    found = sweep_outcomes(s, **kw)
    for name in ("plain", "default"):
        assert_same(found[name], found["reference"], f"{name} path, {kw}")
    return found["reference"]


def refused(s: Setup, error, match, **kw):
    got = check_paths_agree(s, **kw)
    assert got[0] != "value" and issubclass(got[0], error), got
    assert match in got[1], got


# ---------------------------------------------------------------------- the table of hostile inputs
def test_positions_out_of_range_and_of_other_types_are_refused_by_every_path(setup):
    s = setup
    refused(s, ValueError, "out of range", positions=[T])
    refused(s, ValueError, "out of range", positions=[-T - 1])
    refused(s, ValueError, "out of range", positions=[0, 100])
    refused(s, TypeError, "must be an integer", positions=[2.7])
    refused(s, TypeError, "must be an integer", positions=[True])
    refused(s, TypeError, "must be an integer", positions=[torch.tensor([[1]])])
    refused(s, TypeError, "list of positions", positions="12")
    refused(s, ValueError, "positions is empty", positions=[])
    refused(s, TypeError, "integer tensor", positions=[torch.tensor([1.0, 2.0])])
    refused(s, ValueError, "[2] tensor", positions=[torch.tensor([1, 2, 3])])
    refused(s, ValueError, "out of range", positions=[torch.tensor([1, T])])


def test_valid_positions_of_every_kind_answer_the_same_on_every_path(setup):
    s = setup
    every = check_paths_agree(s, positions=list(range(-T, T)))
    assert every[0] == "value" and every[1].shape == (2, 2 * T)
    # -T .. -1 are 0 .. T-1 again
    torch.testing.assert_close(every[1][:, :T], every[1][:, T:])
    as_numpy = check_paths_agree(s, positions=[np.int64(1), torch.tensor(2)])
    as_ints = check_paths_agree(s, positions=[1, 2])
    torch.testing.assert_close(as_numpy[1], as_ints[1])
    per_row = check_paths_agree(s, positions=[torch.tensor([1, 3]), torch.tensor([-1, 0])])
    assert per_row[0] == "value"
    whole = check_paths_agree(s, positions=None)
    assert whole[0] == "value" and whole[1].shape == (2,)
    assert every[1].std() > 1e-4  # the patches do something: the comparisons can fail


def test_chunks_that_are_not_positive_integers_are_refused(setup):
    for bad in (0, -1, 1.5, True, "2"):
        refused(setup, OptionError, "chunk must be a positive integer", chunk=bad)
    one = check_paths_agree(setup, chunk=1, positions=[0, 2, -1])
    three = check_paths_agree(setup, chunk=3, positions=[0, 2, -1])
    torch.testing.assert_close(one[1], three[1], atol=1e-4, rtol=1e-4)


def test_sources_of_other_rows_or_lengths(setup):
    s = setup
    more = torch.cat([s.source, s.make_input(1, T, 5)])
    refused(s, ValueError, "has 3 rows and the base 2", source=more)
    one = s.source[:1]
    got = check_paths_agree(s, source=one)
    assert got[0] == "value"
    # one source row patched into every base row = that row repeated
    want = check_paths_agree(s, source=one.expand(ROWS, *one.shape[1:]).clone())
    torch.testing.assert_close(got[1], want[1])
    longer = s.make_input(ROWS, T + 2, 7)
    refused(s, ValueError, "same shapes", source=longer, positions=None)
    # at positions both have (counted from the end, as with left padding), every path patches them
    got = check_paths_agree(s, source=longer, positions=[-1, -3])
    assert got[0] == "value"
    refused(s, ValueError, "out of range for the base's activation", source=longer, positions=[T + 1])


def test_hook_lists_given_twice_empty_or_not_as_names(setup):
    s = setup
    h = s.hooks[1]
    refused(s, ValueError, "given twice", hooks=[h, h])
    refused(s, ValueError, "given twice", hooks=[s.hooks[0], h, s.hooks[0]])
    refused(s, ValueError, "hooks is empty", hooks=[])
    refused(s, TypeError, "hook names must be strings", hooks=[s.model.hook_dict[h]])
    refused(s, UnknownHookError, "no hook point", hooks=[h + "x"])
    refused(s, TypeError, "hooks must be a hook name or a list", hooks=3)
    one = check_paths_agree(s, hooks=h)
    listed = check_paths_agree(s, hooks=[h])
    torch.testing.assert_close(one[1], listed[1])


def test_two_names_of_one_hook_point_are_refused_on_language_models(setup):
    s = setup
    if not s.lm:
        pytest.skip("TransformerLens names: language models only")
    # wrap: the TransformerLens name of the module path; the bridge: the canonical name of the alias
    tl = "blocks.1.hook_resid_pre"
    other = tl if tl != s.hooks[1] else "blocks.1.hook_in"
    assert hooked.protocol.hook_point(s.model, other) is hooked.protocol.hook_point(s.model, s.hooks[1])
    refused(s, ValueError, "two names of one hook point", hooks=[s.hooks[1], other])
    # either name alone answers the same
    by_other = check_paths_agree(s, hooks=[other])
    by_name = check_paths_agree(s, hooks=[s.hooks[1]])
    assert by_name[0] == "value"
    torch.testing.assert_close(by_other[1], by_name[1])


def test_metrics_and_flags(setup):
    s = setup
    refused(s, ValueError, "one value per batch row", metric=lambda out: s.metric(out).mean())
    refused(s, ValueError, "one value per batch row", metric=lambda out: s.metric(out)[:1])
    refused(s, TypeError, "metric must return a tensor", metric=lambda out: float(s.metric(out)[0]))
    refused(s, TypeError, "metric must be a function", metric=3)
    refused(s, ValueError, "batch axis", pos_dim=0)
    refused(s, ValueError, "is not an axis", pos_dim=5)
    for name, value in (("batched", "yes"), ("reuse_prefix", 1)):
        with pytest.raises(TypeError, match=name):
            patching_sweep(s.model, s.base, s.source, s.hooks[:1], s.metric, [1], **{name: value})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    positions=st.lists(st.integers(-T - 2, T + 1), min_size=0, max_size=4),
    chunk=st.one_of(st.none(), st.integers(-1, 5)),
    picks=st.lists(st.integers(0, 2), min_size=0, max_size=3),
)
def test_every_path_refuses_and_answers_the_same_hypothesis(positions, chunk, picks):
    s = _HYPOTHESIS_SETUP
    check_paths_agree(s, positions=positions, chunk=chunk, hooks=[s.hooks[i] for i in picks])


_HYPOTHESIS_SETUP = _lm("wrap")


def test_the_bridge_refuses_what_the_reference_refuses():
    s = _BRIDGE_SETUP
    h = s.hooks[1]
    refused(s, ValueError, "out of range", positions=[T])
    refused(s, ValueError, "out of range", positions=[-T - 1])
    refused(s, TypeError, "must be an integer", positions=[2.7])
    refused(s, OptionError, "chunk must be a positive integer", chunk=0)
    refused(s, ValueError, "has 3 rows and the base 2", source=torch.cat([s.source, s.source[:1]]))
    refused(s, ValueError, "given twice", hooks=[h, h])
    refused(s, ValueError, "two names of one hook point", hooks=[h, "blocks.1.hook_in"])
    refused(s, ValueError, "one value per batch row", metric=lambda out: s.metric(out).mean())
    got = check_paths_agree(s, positions=[0, -1], source=s.source[:1])
    assert got[0] == "value"


_BRIDGE_SETUP = _lm("bridge")


# ---------------------------------------------------------------------- recurrent hook points and patch()
def test_steps_of_a_recurrent_hook_point():
    rnn = TinyRNN()
    base, source = torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    s = Setup(rnn, base, source, ["hook_h"], lambda o: o[:, -1, 0], None)
    refused(s, ValueError, "step 6 is out of range", hooks=["hook_h"], positions=[6])
    refused(s, ValueError, "step -1 is out of range", hooks=["hook_h"], positions=[-1])
    refused(s, TypeError, "runs once per step", hooks=["hook_h"], positions=[torch.tensor([1, 2])])
    refused(s, ValueError, "never ran", hooks=["hook_h"], positions=None, source=torch.randn(2, 8, 3))
    got = check_paths_agree(s, hooks=["hook_h"], positions=[0, 5])
    assert got[0] == "value"


def test_patch_checks_as_the_sweep_does():
    s = _toy()
    h = s.hooks[1]
    with pytest.raises(ValueError, match="out of range"):
        patch(s.model, s.base, s.source, h, 9)
    with pytest.raises(TypeError, match="must be an integer"):
        patch(s.model, s.base, s.source, h, 1.5)
    with pytest.raises(ValueError, match="has 3 rows and the base 2"):
        patch(s.model, s.base, s.make_input(3, T, 4), h, 1)
    # one answer for one patch: patch() = the sweep's reference loop = the batched sweep
    want = s.metric(patch(s.model, s.base, s.source, h, 2)).mean()
    got = patching_sweep(s.model, s.base, s.source, [h], s.metric, [2])
    torch.testing.assert_close(got[0, 0], want)


def test_sweeps_started_from_two_threads_on_one_model_take_turns():
    s = _toy()
    other = s.make_input(ROWS, T, 9)
    kw = dict(positions=list(range(T)), chunk=2)
    want = [
        patching_sweep(s.model, s.base, s.source, s.hooks, s.metric, **kw),
        patching_sweep(s.model, other, s.base, s.hooks, s.metric, **kw),
    ]
    got = [None, None]

    def run(i, base, source):
        got[i] = patching_sweep(s.model, base, source, s.hooks, s.metric, **kw)

    for _ in range(5):  # without the lock, 4 runs in 5 went wrong
        threads = [
            threading.Thread(target=run, args=(0, s.base, s.source)),
            threading.Thread(target=run, args=(1, other, s.base)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
    assert not s.model.list_hooks()  # nothing left behind


def test_patching_pairs_refuses_before_any_pair_runs():
    s = _toy()
    with pytest.raises(ValueError, match="pairs is empty"):
        patching_pairs(s.model, [], s.hooks, s.metric)
    with pytest.raises(TypeError, match="not a \\(base, source\\) pair"):
        patching_pairs(s.model, [s.base], s.hooks, s.metric)
    with pytest.raises(ValueError, match="given twice"):
        patching_pairs(s.model, [(s.base, s.source)], [s.hooks[0], s.hooks[0]], s.metric)
    got = patching_pairs(s.model, [(s.base, s.source)] * 2, s.hooks, s.metric, positions=[1, -1])
    want = patching_sweep(s.model, s.base, s.source, s.hooks, s.metric, [1, -1])
    torch.testing.assert_close(got, torch.stack([want, want]))


# ---------------------------------------------------------------------- attribution patching
def test_attribution_refuses_what_the_sweep_refuses(setup):
    s = setup
    h = s.hooks[1]

    def both(**kw):
        args = dict(hooks=[h], metric=s.metric, positions=[1])
        args.update(kw)
        hooks, metric, positions = args.pop("hooks"), args.pop("metric"), args.pop("positions")
        a = outcome(lambda: attribution_patching(s.model, s.base, s.source, hooks, metric, positions, **args))
        p = outcome(lambda: patching_sweep(s.model, s.base, s.source, hooks, metric, positions, **args))
        return a, p

    for kw in (
        dict(hooks=[h, h]),
        dict(hooks=[]),
        dict(positions=[T]),
        dict(positions=[-T - 1]),
        dict(positions=[2.7]),
        dict(positions=[]),
        dict(positions=[torch.tensor([1, 2, 3])]),
        dict(metric=lambda out: s.metric(out).mean()),
        dict(pos_dim=0),
    ):
        a, p = both(**kw)
        assert a[0] != "value" and a[0] is p[0], (kw, a, p)
        assert a[1].replace("attribution_patching", "patching_sweep").split(":")[0] == p[1].split(":")[0]
    with pytest.raises(ValueError, match="no head axis"):
        attribution_patching(s.model, s.base, s.source, [h], s.metric, [1], per_head=True)


def test_attribution_per_row_positions_and_one_source_row_equal_exact_patching_on_a_linear_model():
    model = SeqLinear()
    g = torch.Generator().manual_seed(0)
    base, source = torch.randn(3, 6, 5, generator=g), torch.randn(1, 6, 5, generator=g)
    positions = [torch.tensor([0, 3, 5]), torch.tensor([-1, 2, 2]), 4]
    estimate = attribution_patching(model, base, source, ["hook_mid"], last_feature, positions)
    exact = patching_sweep(model, base, source, ["hook_mid"], last_feature, positions)
    with torch.no_grad():
        base_value = last_feature(model(base)).mean()
    torch.testing.assert_close(estimate + base_value, exact, atol=1e-5, rtol=1e-5)
    assert exact.std() > 1e-3


def test_attribution_of_two_names_of_one_point_is_refused_not_summed_twice():
    s = _lm("wrap")
    tl = "blocks.1.hook_resid_pre"
    with pytest.raises(ValueError, match="two names of one hook point"):
        attribution_patching(s.model, s.base, s.source, [s.hooks[1], tl], s.metric, [5])
    # the TransformerLens name alone answers what the module path answers
    by_tl = attribution_patching(s.model, s.base, s.source, [tl], s.metric, [5])
    by_path = attribution_patching(s.model, s.base, s.source, [s.hooks[1]], s.metric, [5])
    torch.testing.assert_close(by_tl, by_path)


@pytest.mark.parametrize("fn", [patching_sweep, attribution_patching])
def test_a_model_without_hook_points_is_refused_as_such(fn):
    x = torch.zeros(2, T, 4)
    with pytest.raises(TypeError, match="must be a hooked model"):
        fn(nn.Linear(4, 4), x, x, ["hook_mid"], last_feature)
