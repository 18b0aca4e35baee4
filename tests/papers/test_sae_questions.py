"""The two questions of issue 24 that ``papers.sae`` answers: the recovery measure against known
answers (fast), and each experiment run end to end at a small size (slow)."""

from __future__ import annotations

import math

import pytest
import torch

from papers.sae.bows_recovery import chance, recovery


def test_recovery_of_known_dictionaries():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(6, 10, generator=g)  # 10 features in 6 dimensions, as columns
    exact = recovery(true.T * 3.0, true)  # the decoder rows are the features (any scale)
    assert exact["recovery"] == pytest.approx(1.0) and exact["represented"] == 10
    half = recovery(true.T[:5], true)  # half the features: the other half only by chance
    cos = torch.nn.functional.normalize(true, dim=0).T @ torch.nn.functional.normalize(true[:, :5], dim=0)
    assert half["recovery"] == pytest.approx(float(cos.max(1).values.mean()))
    assert half["precision"] == pytest.approx(1.0)
    tiny = true.clone()
    tiny[:, 0] *= 1e-3  # a feature the model barely represents is left out
    assert recovery(true.T, tiny)["represented"] == 9
    # chance: random rows in 2 dimensions come close to any direction; in 100 they do not
    wide = torch.randn(2, 10, generator=g)
    assert chance(wide, 200) > 0.99
    assert chance(torch.randn(100, 10, generator=g), 50) < 0.5


@pytest.mark.slow
def test_the_bows_recovery_experiment_runs(tmp_path):
    from papers.sae.bows_recovery import bows_recovery

    out = bows_recovery(
        tmp_path,
        latents=[4],
        bows_epochs=20,
        widths=[12, 24],
        ks=[2],
        sae_steps=200,
        text=False,
        progress=False,
    )
    rows = out["synthetic"]
    assert {(r["data"], r["width"]) for r in rows} == {(d, w) for d in ("circular", "iid") for w in (12, 24)}
    for r in rows:
        assert 0 < r["chance"] <= r["recovery"] + 0.3 and math.isfinite(r["explained_variance"])
    assert (tmp_path / "bows_recovery.json").is_file()


@pytest.mark.smollm2
@pytest.mark.slow
def test_the_calendar_experiment_runs(tmp_path):
    from papers.sae.calendar import calendar

    out = calendar(
        tmp_path, layer=2, others=20, max_length=32, width=512, k=16, epochs=1, batch_size=256, progress=False
    )
    assert sum(out["probe_counts"]["March"].values()) > 0
    assert (
        "residual_circle" in out["months"] and 0 <= out["months"]["residual_circle"]["adjacent_fraction"] <= 1
    )
