"""SpotlightAccumulator: members of a batched model, several bases, a shared null on other planes."""

from __future__ import annotations

import pytest
import torch

import hooked
from analyses.spotlight import SpotlightAccumulator, resolve_basis, spotlight_model
from analyses.spotlight.stream import null_seed
from hooked.protocol import iter_activations
from hooked.rotations import random_orthonormal


class Identity(hooked.HookedModule):
    """Its hook point sees the input: [batch, d] alone, [batch, member, d] as a batched model."""

    def __init__(self):
        super().__init__()
        self.hook_x = hooked.HookPoint()

    def forward(self, x):
        return self.hook_x(x)


def _members(n: int = 600, members: int = 3, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [n, members, d]: member 0 near the axes, member 1 isotropic, member 2 near sums of two axes."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(d, (n,), generator=g)
    axes = torch.nn.functional.one_hot(labels, d).double()
    diag = axes + torch.roll(axes, 1, dims=1)
    x = torch.stack([axes, torch.zeros_like(axes), diag], 1)[:, :members]
    return x + 0.2 * torch.randn(n, members, d, generator=g, dtype=torch.float64), labels


def _same(a, b) -> None:
    """Two ModelSpotlight results hold the same counts, cones and verdict."""
    assert torch.equal(a.result.counts, b.result.counts) and a.result.n == b.result.n
    assert len(a.null) == len(b.null)
    assert all(torch.equal(p.counts, q.counts) for p, q in zip(a.null, b.null))
    assert torch.equal(a.grandmother.counts, b.grandmother.counts)
    assert torch.equal(a.grandmother.top_rows, b.grandmother.top_rows)
    assert torch.equal(a.grandmother.label_counts, b.grandmother.label_counts)
    assert a.alignment == b.alignment


def test_fed_member_by_member_equals_spotlight_model_on_the_member_alone():
    x, labels = _members()
    batches, label_batches = list(x.split(200)), list(labels.split(200))
    settings = dict(epsilon=0.8, n_angles=32, null_bases=6, top=4)
    accs = [SpotlightAccumulator(**settings, hook="hook_x") for _ in range(x.shape[1])]
    for acts, lab in zip(iter_activations(Identity(), batches, ["hook_x"]), label_batches):
        for k, acc in enumerate(accs):
            acc.add(acts["hook_x"][:, k], lab)
    for k, acc in enumerate(accs):
        alone = spotlight_model(
            Identity(), "hook_x", [b[:, k] for b in batches], labels=label_batches, **settings
        )
        found = acc.result()
        _same(found, alone)
        assert found.shape == alone.shape == (200, 6) and found.hook == "hook_x"
    verdicts = [acc.result().alignment["verdict"] for acc in accs]
    assert verdicts[:2] == ["aligned", "isotropic"]  # the members are told apart


def test_a_null_on_comb_planes_gives_the_verdict_of_the_null_on_perm_planes():
    x, _ = _members(members=1)
    a = x[:, 0]
    null = [random_orthonormal(6, seed=null_seed(0, r)) for r in range(8)]
    for eps in (0.85, 0.5):
        perm = SpotlightAccumulator(epsilon=eps, n_angles=40, null_bases=null).add(a).result()
        comb = (
            SpotlightAccumulator(epsilon=eps, n_angles=40, null_bases=null, null_planes="comb")
            .add(a)
            .result()
        )
        assert comb.null[0].plane_kind == "comb" and perm.null[0].plane_kind == "perm"
        assert comb.null[0].planes.shape[0] * 2 == perm.null[0].planes.shape[0]
        assert torch.equal(comb.result.counts, perm.result.counts)
        assert comb.alignment["verdict"] == perm.alignment["verdict"]
        assert comb.alignment["z"] == pytest.approx(perm.alignment["z"], rel=1e-9)
        assert comb.alignment["null_mean"] == pytest.approx(perm.alignment["null_mean"], rel=1e-9)


def test_named_bases_share_one_null():
    x, labels = _members(members=1)
    a = x[:, 0]
    q = random_orthonormal(6, 3)
    null = [random_orthonormal(6, seed=100 + r) for r in range(5)]
    both = SpotlightAccumulator(
        {"standard": torch.eye(6, dtype=torch.float64), "rotated": q},
        epsilon=0.8,
        n_angles=32,
        null_bases=null,
        null_planes="comb",
        n_labels=6,
    )
    for part, lab in zip(a.split(150), labels.split(150)):
        both.add(part, lab)
    found = both.results()
    assert list(found) == ["standard", "rotated"]
    assert found["standard"].null is found["rotated"].null  # counted once
    for name, basis in (("standard", None), ("rotated", q)):
        alone = SpotlightAccumulator(basis, epsilon=0.8, n_angles=32, null_bases=null, null_planes="comb")
        _same(found[name], alone.add(a, labels).result())
    assert found["standard"].alignment["verdict"] == "aligned"
    assert found["rotated"].alignment["verdict"] == "isotropic"


def test_a_count_of_null_bases_is_rotations_of_the_basis():
    x, _ = _members(members=1)
    a = x[:, 0]
    b = resolve_basis("thomson:9", 6)
    unit = b / b.norm(dim=1, keepdim=True)
    rotations = [unit @ random_orthonormal(6, seed=null_seed(2, r)).T for r in range(4)]
    counted = SpotlightAccumulator(b, epsilon=0.6, n_angles=16, null_bases=4, seed=2).add(a).result()
    given = SpotlightAccumulator(b, epsilon=0.6, n_angles=16, null_bases=rotations, seed=2).add(a).result()
    _same_counts = [torch.equal(p.counts, q.counts) for p, q in zip(counted.null, given.null)]
    assert len(_same_counts) == 4 and all(_same_counts)
    assert counted.alignment["verdict"] is None  # Thomson points are not orthonormal
    assert counted.alignment["why_no_verdict"] == "the basis is not orthonormal"


def test_accumulator_errors_and_labels():
    with pytest.raises(ValueError, match="null_bases"):
        SpotlightAccumulator(null_bases=-1)
    with pytest.raises(ValueError, match="no activations"):
        SpotlightAccumulator().result()
    with pytest.raises(ValueError, match="d >= 2"):
        SpotlightAccumulator(hook="h").add(torch.randn(5, 1))
    acc = SpotlightAccumulator(epsilon=0.5, n_angles=16)
    acc.add(torch.eye(4), torch.arange(4))  # the number of labels from the first labels
    assert acc.result().grandmother.label_counts.shape == (8, 4)
    assert acc.n_batches == 1 and list(acc.results()) == ["standard"]


def test_random_basis_spec_resolves():
    assert torch.equal(resolve_basis("random:3", 5), random_orthonormal(5, 3))
    assert torch.equal(resolve_basis("random", 4), random_orthonormal(4, 0))
