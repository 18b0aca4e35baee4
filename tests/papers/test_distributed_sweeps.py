"""The sweeps spread over ranks by ``hooked.distributed.sweep`` give, on 2 gloo processes, what they
give in one process: TMS (its four sweeps), onion (sizes x seeds), weight space (the zoos) and
patching over prompt pairs. Tiny settings; both sides run with one torch thread per process.
Patching over prompt pairs runs by default; the training sweeps (seconds each) are slow-marked."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from hooked.io import RunDir, to_jsonable
from tests.multiproc import run_world

pytestmark = pytest.mark.distributed  # every test here starts a gloo world of processes


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def comparable(obj):
    """JSON values without timings (keys that mention seconds)."""
    obj = to_jsonable(obj)
    if isinstance(obj, dict):
        return {k: comparable(v) for k, v in obj.items() if "second" not in k}
    if isinstance(obj, list):
        return [comparable(v) for v in obj]
    return obj


def _tms(out: str) -> dict:
    from papers.tms.repro import tms

    settings = dict(steps=5, batch_size=16, big_steps=5, big_batch_size=8, sparsities=3, big_sparsities=3)
    settings.update(restarts=2, phase_grid=3, phase_steps=5, phase_batch_size=16, progress=False)
    return comparable(tms(RunDir(out), **settings))


def _onion(out: str) -> dict:
    from papers.onion.repro import onion

    settings = dict(
        sizes=(9, 18, 27), steps=3, intervention_steps=2, probe_steps=2, batch_size=8, n_train=2000
    )
    return comparable(onion(RunDir(out), **settings, progress=False))


def _weight_space(out: str) -> dict:
    from papers.weight_space.repro import weight_space

    settings = dict(runs=4, zoo_steps=4, max_n=3, encoders=["flat"], encoder_steps=2, members=2, seqs=1)
    return comparable(weight_space(RunDir(out), **settings, controls=False, progress=False))


def _patching_pairs() -> list:
    import hooked
    from interventions.patching import patching_pairs
    from tests.toys import MLPStack

    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)) for _ in range(5)]
    hooks = ["blocks.0.hook_resid_pre", "blocks.2.hook_mlp_out"]
    out = []
    for model in (MLPStack(d=8), hooked.wrap(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()))):
        names = hooks if isinstance(model, MLPStack) else ["0.hook_out", "1.hook_out"]
        metrics = [lambda y, k=k: y[..., k].sum(-1) for k in range(5)]  # one metric per pair
        out.append(patching_pairs(model, pairs, names, metrics, positions=[0, 2, 4]))
    return out


@pytest.mark.slow  # ~11 s on two cores: four training sweeps in each world
def test_world2_tms_equals_world1(tmp_path):
    with one_thread():
        one = _tms(str(tmp_path / "w1"))
    two = run_world(_tms, 2, str(tmp_path / "w2"))
    assert two[0] == two[1] == one
    for name in ("n5_m2", "n20_m5", "n200_m20"):  # every checkpoint written once, the same bytes
        assert (tmp_path / "w1" / name / "model.safetensors").read_bytes() == (
            tmp_path / "w2" / name / "model.safetensors"
        ).read_bytes()
    assert (tmp_path / "w2" / "tms.json").is_file() and len(list(tmp_path.glob("*"))) == 2


def test_world2_patching_over_prompt_pairs_equals_world1():
    with one_thread():
        one = _patching_pairs()
    two = run_world(_patching_pairs, 2)
    assert one[0].shape == (5, 2, 3) and one[1].shape == (5, 2, 3)
    for rank in two:
        for got, want in zip(rank, one):
            assert torch.equal(got, want)
    from interventions.patching import patching_sweep
    from tests.toys import MLPStack

    # each pair's grid is patching_sweep on that pair (independent of the other pairs)
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)) for _ in range(5)]
    grid = patching_sweep(
        MLPStack(d=8),
        *pairs[3],
        ["blocks.0.hook_resid_pre", "blocks.2.hook_mlp_out"],
        lambda y: y[..., 3].sum(-1),
        [0, 2, 4],
    )
    assert torch.allclose(grid, one[0][3])


@pytest.mark.slow
def test_world2_onion_equals_world1(tmp_path):
    with one_thread():
        one = _onion(str(tmp_path / "w1"))
    two = run_world(_onion, 2, str(tmp_path / "w2"))
    assert two[0] == two[1] == one and [r["size"] for r in one["rows"]] == [9, 18, 27]


@pytest.mark.slow
def test_world2_weight_space_zoos_equal_world1(tmp_path):
    with one_thread():
        one = _weight_space(str(tmp_path / "w1"))
    two = run_world(_weight_space, 2, str(tmp_path / "w2"))
    assert two[0] == two[1] == one and list(one["zoos"]) == ["languages", "digits"]
