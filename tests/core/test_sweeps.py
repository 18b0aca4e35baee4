"""The sweep-strategy seam (``hooked.sweeps``): ``patching_sweep`` hands a strategy its patches and the
hooks that apply them; what a strategy returns is the sweep's result, and the plain batched sweep
runs when none takes it. Checked on a toy model against the one-forward-per-patch reference loop."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hooked import sweeps
from hooked.protocol import run_with_hooks
from interventions.patching import patching_sweep
from tests.toys import MLPStack

HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.2.hook_resid_pre"]


def metric(out):
    return out.pow(2).sum(dim=(1, 2))


def batches():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)


def suffix_strategy(calls):
    """Each patch in a forward of its own over the positions from its earliest one on (the toy mixes
    no positions, so the positions before it are the base run's)."""

    def strategy(sweep):
        calls.append(sweep)
        with torch.no_grad():
            base_out = sweep.model(sweep.base)
            values = []
            for j in range(len(sweep.hooks)):
                start = int((sweep.positions[j] % sweep.base.shape[1]).min())
                tail = run_with_hooks(sweep.model, sweep.base[:, start:], sweep.make_hooks([j], start))
                values.append(sweep.metric(torch.cat([base_out[:, :start], tail], dim=1)).float().mean())
        return torch.stack(values)

    return strategy


def test_a_strategy_runs_the_sweep_with_the_hooks_it_is_given():
    model, (base, source) = MLPStack(), batches()
    positions = [0, 2, -1, torch.tensor([4, 1])]
    want = patching_sweep(model, base, source, HOOKS, metric, positions, batched=False)
    calls = []
    got = patching_sweep(model, base, source, HOOKS, metric, positions, strategy=suffix_strategy(calls))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert want.std() > 1e-3  # the patches do something: the comparison can fail
    (sweep,) = calls
    assert sweep.hooks == tuple(h for h in HOOKS for _ in positions) and sweep.rows == 2
    assert [p.tolist() for p in sweep.positions[:4]] == [[0, 0], [2, 2], [-1, -1], [4, 1]]
    assert sweep.required is False and sweep.pos_dim == 1


def test_no_strategy_taking_the_sweep_gives_the_plain_path_and_required_is_an_error():
    model, (base, source) = MLPStack(), batches()
    plain = patching_sweep(model, base, source, HOOKS, metric, [0, 3], reuse_prefix=False)
    declined = patching_sweep(model, base, source, HOOKS, metric, [0, 3], strategy=lambda sweep: None)
    assert torch.equal(declined, plain)
    with pytest.raises(ValueError, match=r"reuse_prefix=True\): no sweep strategy .* MLPStack"):
        patching_sweep(model, base, source, HOOKS, metric, [0, 3], reuse_prefix=True)
    with pytest.raises(ValueError, match=r"returned \(3,\), expected \[6\]"):
        patching_sweep(model, base, source, HOOKS, metric, [0, 3], strategy=lambda sweep: torch.zeros(3))
    never = []  # reuse_prefix=False: no strategy is asked
    patching_sweep(model, base, source, HOOKS, metric, [0], reuse_prefix=False, strategy=never.append)
    assert never == []


def test_hooks_for_later_positions_refuse_an_activation_of_the_wrong_length():
    model, (base, source) = MLPStack(), batches()

    def whole_sequence(sweep):  # asks for positions from 2 on, but runs all 5
        run_with_hooks(sweep.model, sweep.base, sweep.make_hooks([0], 2))

    with pytest.raises(ValueError, match="not the 3 positions from 2 on"):
        patching_sweep(model, base, source, HOOKS[:1], metric, [3], strategy=whole_sequence)
    with pytest.raises(ValueError, match="patched whole"):
        patching_sweep(model, base, source, HOOKS[:1], metric, strategy=lambda s: s.make_hooks([0], 1))


def test_registered_strategies_are_asked_once_each(monkeypatch):
    monkeypatch.setattr(sweeps._STRATEGIES, "registered", [])
    model, (base, source) = MLPStack(), batches()
    asked = []

    def declines(sweep):
        """Asks, declines."""
        asked.append(1)

    assert sweeps.register_sweep_strategy(declines) is declines
    sweeps.register_sweep_strategy(declines)
    assert sum(s is declines for s in sweeps.sweep_strategies()) == 1
    patching_sweep(model, base, source, HOOKS, metric, [0])
    assert asked == [1]
    with pytest.raises(ValueError, match=r"declines \(Asks, declines\)"):
        patching_sweep(model, base, source, HOOKS, metric, [0], reuse_prefix=True)
    with pytest.raises(TypeError, match="callable"):
        sweeps.register_sweep_strategy("lm")


def test_pyproject_declares_the_lm_strategy_and_it_is_the_one_registered():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    group = text.split(f'[project.entry-points."{sweeps.ENTRY_POINT_GROUP}"]', 1)[1].split("\n[", 1)[0]
    module, attr = re.search(r'^lm = "([\w.]+):(\w+)"', group, re.M).groups()
    strategy = getattr(importlib.import_module(module), attr)
    assert any(s is strategy for s in sweeps.sweep_strategies())
    assert type(strategy).__name__ == "LMSweep"


@pytest.mark.skipif(
    not any(ep.name == "lm" for ep in importlib.metadata.entry_points(group=sweeps.ENTRY_POINT_GROUP)),
    reason="the installed metadata predates the hooked.sweep_strategies group: pip install -e . again",
)
@pytest.mark.slow
def test_a_wrap_made_without_hooked_lm_gets_the_lm_strategy_from_the_entry_point():
    code = """
import sys, torch, transformers, hooked
from interventions.patching import patching_sweep
config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2)
model = hooked.wrap(transformers.LlamaForCausalLM(config).eval(), inputs=True)
ids = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(0))
other = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(1))
assert "hooked.lm" not in sys.modules
hooks = ["model.layers.0.hook_in", "model.layers.1.hook_in"]
def metric(out):
    return out.logits[:, -1, 5] if hasattr(out, "logits") else out[:, -1, 5]
full = patching_sweep(model, ids, other, hooks, metric, range(6), reuse_prefix=False)
reused = patching_sweep(model, ids, other, hooks, metric, range(6), reuse_prefix=True)
assert "hooked.lm.sweeps.strategy" in sys.modules
torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)
"""
    subprocess.run([sys.executable, "-c", code], check=True)
