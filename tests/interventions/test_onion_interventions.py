"""Subspace (fixed, DAS, autosegment) and onion interventions, probes, and the repeat-task glue."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hooked
from hooked.protocol import read_activation
from interventions.intervention import InterventionBatch
from interventions.onion import OnionIntervention, OnionProbe, OnionScale
from interventions.probes import SequenceProbe
from interventions.subspace import DAS, Autosegment, FixedSubspace
from papers.onion.glue import bigram_batch, onion_batch, repeat_metric, unigram_batch
from papers.onion.repeat import RepeatModel, sample_unique


def orthonormal(d, k, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q[:, :k]


SUBSPACES = {
    "fixed": lambda: FixedSubspace(orthonormal(12, 6), var_sizes=[2, 2, 2]),
    "das": lambda: DAS(12, 3, seed=0),
    "autosegment": lambda: Autosegment(12, 3, seed=0),
}


@pytest.mark.parametrize("name", list(SUBSPACES))
@pytest.mark.parametrize("training", [True, False])
def test_subspace_interventions_are_identities_when_source_is_base(name, training):
    iv = SUBSPACES[name]().train(training)
    h = torch.randn(5, 12)
    assert torch.equal(iv(h, h.clone()), h)
    assert torch.equal(iv(h, h.clone(), torch.ones(5, 3, dtype=torch.bool)), h)
    other = torch.randn(5, 12)
    assert torch.equal(iv(h, other, torch.zeros(5, 3, dtype=torch.bool)), h)  # no variable chosen


def test_fixed_subspace_swaps_exactly_the_chosen_coordinates():
    basis = torch.eye(6)[:, :4]  # coordinates 0..3, variables {0, 1} and {2, 3}
    iv = FixedSubspace(basis, var_sizes=[2, 2])
    base, source = torch.zeros(2, 6), torch.arange(1.0, 7.0).expand(2, 6)
    out = iv(base, source, torch.tensor([[True, False], [False, True]]))
    assert out.tolist() == [[1, 2, 0, 0, 0, 0], [0, 0, 3, 4, 0, 0]]
    with pytest.raises(ValueError, match="orthonormal"):
        FixedSubspace(torch.ones(6, 2))


def test_das_rotation_is_orthogonal_and_all_variables_give_the_source():
    iv = DAS(8, 2, seed=1)  # 2 variables of 4 coordinates: the whole space
    r = iv.rotation()
    assert torch.allclose(r @ r.T, torch.eye(8), atol=1e-5)
    base, source = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.allclose(iv(base, source), source, atol=1e-5)
    one = iv(base, source, torch.tensor([[True, False]] * 3))
    z_one, z_base, z_src = one @ r.T, base @ r.T, source @ r.T
    assert torch.allclose(z_one[:, :4], z_src[:, :4], atol=1e-5) and torch.allclose(
        z_one[:, 4:], z_base[:, 4:], atol=1e-5
    )


def test_autosegment_masks_are_hard_one_hot_and_regulariser_prefers_rest():
    iv = Autosegment(10, 3, seed=0)
    iv.train()
    a = iv.assignment()
    assert a.shape == (10, 3) and set(a.unique().tolist()) <= {0.0, 1.0} and (a.sum(1) <= 1).all()
    assert a.requires_grad  # straight-through: gradients reach the mask logits
    with torch.no_grad():
        iv.mask_logits.zero_()
        iv.mask_logits[:, 3] = 1.0  # everything to "rest"
    assert iv.regularizer().item() < 0
    iv.eval()
    assert iv.assignment().sum() == 0 and iv.variable_sizes() == [0, 0, 0, 10]


def test_onion_edit_with_true_scaling_recovers_the_token():
    torch.manual_seed(0)
    d, n_symbols, length = 16, 7, 5
    iv = OnionIntervention(d, n_symbols, gamma=0.5, g=2.0, lam=0.1, beta=0.05, seed=3)
    with torch.no_grad():
        iv.scale.gamma.mul_(torch.linspace(0.8, 1.2, d))  # per-dimension values

    def onion_state(tokens):  # h = sum_p s(p) * tanh(E[x_p])
        pos = torch.arange(length).repeat(tokens.shape[0])
        codes = torch.tanh(iv.code(tokens.reshape(-1))) * iv.scale(pos)
        return codes.reshape(tokens.shape[0], length, d).sum(1)

    tokens = torch.randint(n_symbols, (6, length))
    batch = onion_batch(tokens, torch.full((6,), length), n_symbols, torch.Generator().manual_seed(0))
    changed = onion_state(batch.base["x"])
    with torch.no_grad():
        restored = iv(changed, old=batch.args["old"], new=batch.args["new"], pos=batch.args["pos"])
        assert torch.allclose(restored, onion_state(tokens), atol=1e-5)
        # a wrong scale does not restore it
        wrong = iv(
            changed, old=batch.args["old"], new=batch.args["new"], pos=(batch.args["pos"] + 1) % length
        )
        moved = batch.args["old"] != batch.args["new"]
        assert not torch.allclose(wrong[moved], onion_state(tokens)[moved], atol=1e-3)


def test_onion_scale_formula():
    s = OnionScale(3, g=2.0, gamma=0.5, lam=0.25, beta=1.0)
    out = s(torch.tensor([0, 1, 2]))
    assert torch.allclose(out[:, 0], torch.tensor([2 + 1.0, 1 + 0.25 + 1, 0.5 + 0.5 + 1]))


def test_onion_probe_teacher_forcing_peels_given_tokens():
    probe = OnionProbe(6, 4, 3)
    seen = []
    probe.norm = nn.Identity()
    probe.cls = _Recorder(seen, 4)
    h = torch.randn(2, 6)
    tokens = torch.tensor([[1, 2, 3], [0, 1, 2]])
    probe(h, tokens)
    expect = h
    for p in range(3):
        assert torch.allclose(seen[p], expect, atol=1e-6)
        expect = expect - probe.code(tokens[:, p]) * probe.scale(torch.full((2,), p))


class _Recorder(nn.Module):
    def __init__(self, seen, n):
        super().__init__()
        self.seen, self.n = seen, n

    def forward(self, h):
        self.seen.append(h.detach().clone())
        return torch.zeros(h.shape[0], self.n)


def test_glue_batches_have_the_documented_structure():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(30, (8, 9), generator=g)
    lengths = torch.tensor([9, 9, 3, 5, 9, 2, 7, 9])
    uni = unigram_batch(tokens, lengths, g)
    partner, swap = uni.source_index, uni.args["vars"]
    assert torch.equal(partner[partner], torch.arange(8)) and (partner != torch.arange(8)).all()
    assert torch.equal(swap, swap[partner])  # both rows of a pair swap the same positions
    assert not (swap & (torch.arange(9)[None, :] >= torch.minimum(lengths, lengths[partner])[:, None])).any()
    assert torch.equal(uni.base["x"][swap], tokens[partner][swap]) and torch.equal(
        uni.base["x"][~swap], tokens[~swap]
    )

    bi = bigram_batch(tokens, lengths, 30, g)
    diff = bi.base["x"] != tokens
    assert (diff.sum(1) <= 1).all()
    vars = bi.args["vars"]
    assert vars.shape == (8, 8) and (vars.sum(1) >= 1).all() and (vars.sum(1) <= 2).all()
    for row in range(8):
        p = (
            int(vars[row].nonzero()[-1])
            if vars[row, -1] and vars[row].sum() == 1
            else int(vars[row].nonzero()[0]) + int(vars[row].sum() == 2)
        )
        lo, hi = max(p - 1, 0), min(p + 2, int(lengths[row]))
        assert torch.equal(bi.source["x"][row, lo:hi], tokens[row, lo:hi])

    on = onion_batch(tokens, lengths, 30, g)
    rows = torch.arange(8)
    assert (on.args["pos"] < lengths).all() and torch.equal(on.args["old"], tokens[rows, on.args["pos"]])
    changed = on.base["x"].clone()
    changed[rows, on.args["pos"]] = on.args["old"]
    assert torch.equal(changed, tokens)


@pytest.fixture(scope="module")
def repeat_model():
    torch.manual_seed(0)
    return RepeatModel("gru", 12).eval()


def test_interventions_through_the_model_are_identities_when_source_is_base(repeat_model):
    split = sample_unique(8, min_len=9, generator=torch.Generator().manual_seed(0))
    x, lengths = split.batch(torch.arange(8))
    plain = repeat_model(x, lengths)
    same = InterventionBatch({"x": x, "lengths": lengths}, (x, lengths), source={"x": x, "lengths": lengths})
    for iv in (DAS(12, 3, seed=0), Autosegment(12, 3, seed=0), FixedSubspace(orthonormal(12, 4))):
        assert torch.allclose(iv.run(repeat_model, "hook_memory", same), plain, atol=1e-5)
    # the onion edit of "new == old" is the identity too
    onion = OnionIntervention(12, 30, seed=0)
    batch = InterventionBatch(
        {"x": x, "lengths": lengths},
        (x, lengths),
        args={"old": x[:, 0], "new": x[:, 0], "pos": torch.zeros(8, dtype=torch.long)},
    )
    assert torch.allclose(onion.run(repeat_model, "hook_memory", batch), plain, atol=1e-6)


def test_full_swap_is_activation_patching_of_the_memory(repeat_model):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(30, (6, 9), generator=g)
    lengths = torch.full((6,), 9)
    batch = unigram_batch(tokens, lengths, g)
    iv = DAS(12, 1, seed=0)  # one variable spanning the whole memory
    batch.args["vars"] = torch.ones(6, 1, dtype=torch.bool)
    out = iv.run(repeat_model, "hook_memory", batch)
    memory = read_activation(repeat_model, batch.base, "hook_memory")
    want = repeat_model.decode(memory[batch.source_index], tokens)
    assert torch.allclose(out, want, atol=1e-5)
    assert read_activation(repeat_model, batch.base, "hook_memory").shape == (6, 12)


class ToyCopy(hooked.HookedModule):
    """h = W x (W orthogonal), output = h: variable k of x lives in direction W e_k."""

    def __init__(self, d=4):
        super().__init__()
        self.W = nn.Parameter(orthonormal(d, d, seed=5))
        self.hook_h = hooked.HookPoint()

    def forward(self, x):
        return self.hook_h(x @ self.W.T)


def test_fit_learns_an_aligned_variable_and_evaluate_reports_accuracy():
    model = ToyCopy()

    def data(g):
        base, source = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
        target = base.clone()
        target[:, 0] = source[:, 0]  # the counterfactual: x_0 taken from the source
        return InterventionBatch(base, target @ model.W.T, source=source)

    def loss(out, target):
        return ((out - target) ** 2).sum(-1).mean()

    def metric(out, target):
        return (out - target).norm(dim=-1) < 0.05

    iv = DAS(4, 1, var_size=1, seed=0)
    g = torch.Generator().manual_seed(9)
    before = iv.evaluate(model, "hook_h", [data(g)], metric=metric)
    losses = iv.fit(model, "hook_h", data, loss=loss, steps=120, lr=0.05, weight_decay=0.0, progress=False)
    after = iv.evaluate(model, "hook_h", [data(g)], metric=metric)
    assert losses[-1] < 0.01 < losses[0] and after > 0.95 > before
    assert model.W.requires_grad and model.W.grad is None  # frozen during fit, restored after


def test_probes_fit_and_score_exact_match():
    torch.manual_seed(0)
    d, n_symbols, length = 24, 5, 3
    codes = torch.randn(length, n_symbols, d)
    tokens = torch.randint(n_symbols, (600, length))
    acts = codes[torch.arange(length), tokens].sum(1)  # a linear, position-separable code
    lengths = torch.full((600,), length)
    probe = SequenceProbe(d, n_symbols, length)
    probe.fit(acts[:500], tokens[:500], lengths[:500], steps=300, lr=1e-2, progress=False)
    assert probe.accuracy(acts[500:], tokens[500:], lengths[500:]) > 0.9
    mlp = SequenceProbe(d, n_symbols, length, hidden=32)
    assert mlp(acts[:2]).shape == (2, length, n_symbols)
    # exact match counts only positions inside the length
    short = torch.full((100,), 1)
    assert probe.accuracy(acts[500:], tokens[500:], short) >= probe.accuracy(
        acts[500:], tokens[500:], lengths[500:]
    )


def test_repeat_metric_is_exact_match(repeat_model):
    x = torch.randint(30, (4, 9))
    out = repeat_model(x)
    assert torch.equal(
        repeat_metric(out, (out.argmax(-1), torch.full((4,), 9))), torch.ones(4, dtype=torch.bool)
    )
