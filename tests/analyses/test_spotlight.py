"""The Spotlight Resonance Method on tensors: known answers, invariances, kernels, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses.spotlight import (
    SpotlightCounter,
    axis_harmonic,
    grandmother,
    isotropic_reference,
    make_planes,
    n_planes,
    naive_spotlight,
    random_orthonormal,
    spotlight,
    thomson,
    thomson_energy,
    verdict,
)


def gaussian(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def axis_data(n: int, d: int, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """Samples along random +-basis vectors, slightly blurred."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(d, (n,), generator=g)
    sign = torch.randint(2, (n,), generator=g) * 2 - 1
    a = torch.zeros(n, d, dtype=torch.float64)
    a[torch.arange(n), k] = sign.double()
    return a + noise * torch.randn(n, d, generator=g, dtype=torch.float64)


def diagonal_data(n: int, d: int, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """Samples along (+-b_i +-b_j) / sqrt 2: halfway between basis vectors."""
    g = torch.Generator().manual_seed(seed)
    a = torch.zeros(n, d, dtype=torch.float64)
    i = torch.randint(d, (n,), generator=g)
    j = (i + torch.randint(1, d, (n,), generator=g)) % d
    a[torch.arange(n), i] = (torch.randint(2, (n,), generator=g) * 2 - 1).double()
    a[torch.arange(n), j] = (torch.randint(2, (n,), generator=g) * 2 - 1).double()
    return a + noise * torch.randn(n, d, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------- the isotropic reference
def test_reference_closed_forms():
    for eps in (-0.7, -0.2, 0.0, 0.3, 0.9):
        assert isotropic_reference(2, eps) == pytest.approx(
            math.acos(eps) / math.pi, abs=1e-12
        )  # arc of a circle
        assert isotropic_reference(3, eps) == pytest.approx((1 - eps) / 2, abs=1e-12)  # Archimedes' cap
    assert isotropic_reference(5, 1.0) == 0.0 and isotropic_reference(5, -1.0) == 1.0
    assert isotropic_reference(7, 0.4, signed=True) == 0.0


@settings(max_examples=12, deadline=None)
@given(d=st.integers(2, 9), eps=st.floats(-0.8, 0.85), seed=st.integers(0, 1000))
def test_isotropic_gaussian_is_flat_at_the_reference(d, eps, seed):
    n = 3000
    res = spotlight(gaussian(n, d, seed), epsilon=eps, n_angles=48)
    p = isotropic_reference(d, eps)
    sigma = math.sqrt(p * (1 - p) / n)  # sd of one binomial fraction; averages over planes vary less
    assert abs(float(res.values.mean()) - p) < 4 * sigma + 1e-12
    assert float((res.mean - p).abs().max()) < 5 * sigma + 1e-12  # flat: every angle at the reference


# ---------------------------------------------------------------------- peaks where the data are
def test_axis_data_peaks_at_multiples_of_half_pi():
    # a narrow cone (8 degrees), so that the peaks are sharp: wider cones give plateaus around the axes
    res = spotlight(axis_data(2000, 6, noise=0.02), epsilon=0.99, n_angles=96)
    mean = res.mean
    at_axes = mean[::24]  # theta = 0, pi/2, pi, 3pi/2
    assert float(at_axes.min()) > 100 * res.reference
    peak = float(res.angles[int(mean.argmax())]) % (math.pi / 2)
    assert min(peak, math.pi / 2 - peak) <= 2 * math.pi / 96 + 1e-12
    h = axis_harmonic(res)
    assert h["c4"] > 0.5 and h["h4"] > 0 and abs(h["phase"]) < 0.05


def test_diagonal_data_peaks_at_odd_multiples_of_quarter_pi():
    res = spotlight(diagonal_data(3000, 5), epsilon=0.9, n_angles=96)
    mean = res.mean
    assert float(mean[12::24].min()) > 5 * float(mean[::24].max())  # pi/4 + k pi/2 vs the axes
    h = axis_harmonic(res)
    assert h["c4"] < -0.5 and h["h4"] < 0 and abs(abs(h["phase"]) - math.pi / 4) < 0.05


def test_verdicts_on_known_data():
    null = [random_orthonormal(6, seed=100 + r) for r in range(32)]
    q = random_orthonormal(6, seed=999)
    scales = torch.tensor([3, 2, 1.5, 1, 0.7, 0.5], dtype=torch.float64)
    cases = {
        "axis": (axis_data(1500, 6), "aligned"),
        "diagonal": (diagonal_data(1500, 6), "anti-aligned"),
        "isotropic": (gaussian(1500, 6), "isotropic"),
        "shifted": (gaussian(1500, 6) + 1, "isotropic"),
        "anisotropic, rotated": ((gaussian(1500, 6) * scales) @ q, "isotropic"),
    }
    for name, (data, expected) in cases.items():
        found = (
            SpotlightCounter([torch.eye(6, dtype=torch.float64)] + null, epsilon=0.85, n_angles=64)
            .add(data)
            .results()
        )
        assert verdict(found[0], found[1:])["verdict"] == expected, name
        # the axis-aligned data in a rotated basis: no preference
    found = SpotlightCounter([q] + null, epsilon=0.85, n_angles=64).add(axis_data(1500, 6)).results()
    assert verdict(found[0], found[1:])["verdict"] == "isotropic"


def test_no_sign_for_cones_of_a_quarter_turn_or_wider():
    # a sample on b_i is inside the spotlight at the diagonals once the half angle reaches pi/4
    null = [random_orthonormal(4, seed=r) for r in range(16)]
    found = (
        SpotlightCounter([torch.eye(4, dtype=torch.float64)] + null, epsilon=0.5, n_angles=64)
        .add(axis_data(500, 4))
        .results()
    )
    v = verdict(found[0], found[1:])
    assert v["c4"] < 0 and v["z"] < -3  # the inverted reading: axis data look anti-aligned
    assert v["verdict"] == "basis-locked" and v["preferred"]


def test_empty_cones_and_null_planes_of_the_other_kind():
    a = gaussian(400, 8, seed=3)
    null = (
        SpotlightCounter([random_orthonormal(8, seed=r) for r in range(8)], epsilon=0.99, n_angles=40)
        .add(a)
        .results()
    )
    empty = SpotlightCounter(torch.eye(8), epsilon=0.99, n_angles=40).add(a).result()
    assert int(empty.counts.sum()) == 0 and verdict(empty, null)["verdict"] == "empty"
    # h4 over "comb" planes equals h4 over "perm" planes (mirror images), so a comb null serves a perm basis
    b = axis_data(400, 5)
    perm = spotlight(b, epsilon=0.8, n_angles=40, planes="perm")
    comb = spotlight(b, epsilon=0.8, n_angles=40, planes="comb")
    assert axis_harmonic(perm)["h4"] == pytest.approx(axis_harmonic(comb)["h4"], rel=1e-12)


# ---------------------------------------------------------------------- invariances and structure
@settings(max_examples=8, deadline=None)
@given(d=st.integers(2, 7), seed=st.integers(0, 1000), eps=st.floats(-0.5, 0.9), signed=st.booleans())
def test_rotating_data_and_basis_together_changes_nothing(d, seed, eps, signed):
    a = gaussian(300, d, seed) + torch.linspace(0, 2, d, dtype=torch.float64)  # anisotropic
    q = random_orthonormal(d, seed=seed + 1)
    for basis in (torch.eye(d, dtype=torch.float64), thomson(d + 1, d, seed=seed, steps=200)):
        plain = spotlight(a, basis, epsilon=eps, n_angles=40, signed=signed)
        turned = spotlight(a @ q.T, basis @ q.T, epsilon=eps, n_angles=40, signed=signed)
        assert torch.equal(plain.counts, turned.counts)


def test_comb_planes_are_a_subset_of_perm_planes():
    a = gaussian(800, 5) * torch.tensor([3.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)
    perm = spotlight(a, epsilon=0.6, planes="perm", n_angles=40)
    comb = spotlight(a, epsilon=0.6, planes="comb", n_angles=40)
    index = {tuple(p): k for k, p in enumerate(perm.planes.tolist())}
    assert set(map(tuple, comb.planes.tolist())) <= set(index)
    for k, p in enumerate(comb.planes.tolist()):
        assert torch.equal(comb.counts[k], perm.counts[index[tuple(p)]])
    # and the reversed plane (j, i) is the same curve mirrored: f_ji(theta) = f_ij(-theta - pi/2)
    R = 40
    mirror = (-torch.arange(R) - R // 4) % R
    for i, j in comb.planes.tolist():
        assert torch.equal(perm.counts[index[(j, i)]], perm.counts[index[(i, j)]][mirror])


def test_planes_in_itertools_order_and_subsampling():
    for k in (2, 3, 6):
        assert make_planes(k, "perm").tolist() == [list(p) for p in itertools.permutations(range(k), 2)]
        assert make_planes(k, "comb").tolist() == [list(p) for p in itertools.combinations(range(k), 2)]
        assert n_planes(k, "perm") == k * (k - 1) and n_planes(k, "comb") == k * (k - 1) // 2
    full = {tuple(p) for p in make_planes(40, "comb").tolist()}
    sub = make_planes(40, "comb", max_planes=50, seed=3)
    assert (
        sub.shape == (50, 2)
        and len({tuple(p) for p in sub.tolist()}) == 50
        and {tuple(p) for p in sub.tolist()} <= full
    )
    assert torch.equal(sub, make_planes(40, "comb", max_planes=50, seed=3))
    assert not torch.equal(sub, make_planes(40, "comb", max_planes=50, seed=4))
    big = make_planes(
        5000, "perm", max_planes=1000, seed=0
    )  # 25 million planes: sampled without listing them
    assert big.shape == (1000, 2) and bool((big[:, 0] != big[:, 1]).all()) and int(big.max()) < 5000


def test_signed_srm_of_antipodally_symmetric_data_is_zero():
    a = gaussian(400, 4) * torch.tensor([2.0, 1.0, 1.0, 0.3], dtype=torch.float64)
    res = spotlight(torch.cat([a, -a]), epsilon=0.5, signed=True, n_angles=32)
    assert int(res.counts.abs().max()) == 0
    one_sided = spotlight(a.abs(), epsilon=0.5, signed=True, n_angles=32)
    assert int(one_sided.counts.abs().max()) > 0


# ---------------------------------------------------------------------- the kernels agree with the definition
@pytest.mark.parametrize(
    "eps,signed,basis",
    [
        (0.5, False, "standard"),
        (-0.4, False, "standard"),
        (0.3, True, "standard"),
        (0.6, False, "thomson"),
        (0.2, True, "thomson"),
    ],
)
def test_kernels_match_the_definition(eps, signed, basis):
    a = gaussian(300, 5, seed=7) + 0.5
    b = torch.eye(5, dtype=torch.float64) if basis == "standard" else thomson(6, 5, seed=1)
    arcs = spotlight(a, b, epsilon=eps, n_angles=36, signed=signed)
    dense = spotlight(a, b, epsilon=eps, n_angles=36, signed=signed, method="dense")
    naive = naive_spotlight(a, b, arcs.planes, epsilon=eps, n_angles=36, signed=signed)
    assert torch.equal(arcs.counts, dense.counts)
    assert torch.allclose(arcs.values, naive, atol=1e-12)


def test_small_chunks_change_nothing():
    a = gaussian(257, 6, seed=2)
    whole = spotlight(a, epsilon=0.4, n_angles=20)
    for method in ("arcs", "dense"):
        assert torch.equal(
            spotlight(a, epsilon=0.4, n_angles=20, chunk=37, method=method).counts, whole.counts
        )


def test_float32_and_shaped_inputs():
    a = gaussian(60, 4).float().reshape(3, 20, 4)
    res = spotlight(a, epsilon=0.5, n_angles=16)
    assert res.n == 60 and res.counts.shape == (12, 16)
    assert torch.equal(res.counts, spotlight(a.reshape(60, 4).double(), epsilon=0.5, n_angles=16).counts)


# ---------------------------------------------------------------------- streaming
def test_streaming_over_batches_equals_one_shot():
    a = gaussian(1000, 6, seed=5) * torch.linspace(0.2, 2, 6, dtype=torch.float64)
    one = spotlight(a, epsilon=0.6, n_angles=50, max_planes=17, seed=2)
    counter = SpotlightCounter(torch.eye(6), epsilon=0.6, n_angles=50, max_planes=17, seed=2)
    for part in a.split(77):
        counter.add(part)
    streamed = counter.result()
    assert (
        streamed.n == one.n
        and torch.equal(streamed.counts, one.counts)
        and torch.equal(streamed.planes, one.planes)
    )
    halves = [spotlight(p, epsilon=0.6, n_angles=50, max_planes=17, seed=2) for p in a.split(500)]
    assert torch.equal(halves[0].merge(halves[1]).counts, one.counts)


def test_several_bases_in_one_pass_equal_separate_runs():
    a = gaussian(300, 4, seed=1) + 0.3
    bases = [torch.eye(4, dtype=torch.float64), random_orthonormal(4, seed=1), random_orthonormal(4, seed=2)]
    together = SpotlightCounter(bases, epsilon=0.5, n_angles=24).add(a).results()
    for b, res in zip(bases, together):
        assert torch.equal(res.counts, spotlight(a, b, epsilon=0.5, n_angles=24).counts)


# ---------------------------------------------------------------------- errors
def test_zero_vectors_get_a_clear_error_or_are_skipped():
    a = gaussian(10, 3)
    a[4] = 0
    with pytest.raises(ValueError, match="zero vectors"):
        spotlight(a)
    res = spotlight(a, zeros="skip", epsilon=0.5)
    assert res.n == 9 and res.n_zero == 1
    assert torch.equal(res.counts, spotlight(torch.cat([a[:4], a[5:]]), epsilon=0.5).counts)


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="d >= 2"):
        spotlight(torch.randn(10, 1))
    with pytest.raises(ValueError, match="d >= 2"):
        spotlight(torch.randn(5, 3, 1))
    with pytest.raises(ValueError, match="epsilon"):
        spotlight(torch.randn(10, 3), epsilon=1.5)
    with pytest.raises(ValueError, match="dimension 4"):
        spotlight(torch.randn(10, 3), torch.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        spotlight(torch.tensor([[1.0, float("nan")], [1.0, 0.0]]))
    with pytest.raises((ValueError, TypeError), match="planes"):  # the shape/type checks name it
        spotlight(torch.randn(10, 3), planes="all")
    with pytest.raises(ValueError, match="'perm'"):
        SpotlightCounter(torch.eye(3), planes="all")
    with pytest.raises(ValueError, match="unknown basis"):
        spotlight(torch.randn(10, 3), "neurons")
    with pytest.raises(ValueError, match="zero or not finite"):
        spotlight(torch.randn(10, 2), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_parallel_basis_vectors_drop_their_plane():
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    with pytest.warns(UserWarning, match="span no plane"):
        res = spotlight(gaussian(50, 3), b, epsilon=0.5)
    assert res.dropped_planes == 2 and res.planes.shape[0] == 4


# ---------------------------------------------------------------------- bases
def test_thomson_known_configurations():
    known = {4: 3.674234614, 5: 6.474691495, 6: 9.985281374, 12: 49.165253058}  # Coulomb energies on S^2
    for n, energy in known.items():
        pts = thomson(n, 3, seed=0)
        assert torch.allclose(pts.norm(dim=1), torch.ones(n, dtype=torch.float64))
        assert float(thomson_energy(pts)) == pytest.approx(energy, rel=1e-7)
    simplex = thomson(9, 8, seed=1)  # d + 1 points: a regular simplex, cosines -1/d
    off = (simplex @ simplex.T)[~torch.eye(9, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1 / 8), atol=1e-5)


def test_random_orthonormal_is_orthonormal_and_seeded():
    q = random_orthonormal(7, seed=3)
    assert torch.allclose(q @ q.T, torch.eye(7, dtype=torch.float64), atol=1e-12)
    assert torch.equal(q, random_orthonormal(7, seed=3)) and not torch.equal(q, random_orthonormal(7, seed=4))


# ---------------------------------------------------------------------- grandmother neurons
def test_grandmother_cones_find_the_concept_directions():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(4, (600,), generator=g)
    a = torch.zeros(600, 6)
    a[torch.arange(600), labels] = 1.0  # concept c lives along +b_c
    a += 0.1 * torch.randn(600, 6, generator=g)
    res = grandmother(a, epsilon=0.8, labels=labels, top=5)
    best = res.selective(top=4, min_count=5)
    assert sorted(d["direction"] for d in best) == ["+0", "+1", "+2", "+3"]
    for d in best:
        k = int(d["direction"][1:])
        assert d["label"] == k and d["purity"] == 1.0 and d["recall"] > 0.9
        cos = (a[d["top_rows"]] / a[d["top_rows"]].norm(dim=1, keepdim=True))[:, k]
        assert torch.all(cos[:-1] >= cos[1:])  # closest to the axis first
    assert int(res.counts[res.names.index("-0")]) == 0
    # streaming gives the same
    from analyses.spotlight import ConeCounter

    c = ConeCounter(torch.eye(6), epsilon=0.8, top=5, n_labels=4)
    for part, lab in zip(a.split(111), labels.split(111)):
        c.add(part, lab)
    streamed = c.result()
    assert torch.equal(streamed.counts, res.counts) and torch.equal(streamed.top_rows, res.top_rows)
    assert torch.equal(streamed.label_counts, res.label_counts)
