"""Sweeps with a metric that declares the positions it reads (``hooked.sweeps.reads_positions``): on
every family of ``tests/lm/tiny_models.py``, on ``hooked.wrap`` and the bridge, in plain and padded
batches, the prefix-reusing sweep that runs the output head only there gives the plain per-patch
loop's numbers and a hand-written PyTorch hook's, and refuses what the loop refuses."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from hooked import lm
from hooked.lm.sweeps import prefix_reuse
from hooked.sweeps import reads_positions
from interventions.patching import patching_sweep
from tests.lm.tiny_models import FAMILIES, tiny_config, tiny_tokenizer, tokenizer_folder

LENGTH = 7
FAST = ("llama", "gpt2", "qwen2")  # the other families run in the slow tier (a few seconds each)


def _hf(family: str):
    """A tiny random ``family`` model whose patches move the logits well above float noise."""
    import transformers

    config = tiny_config(family)
    config.initializer_range = 0.3
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return transformers.AutoModelForCausalLM.from_config(config).eval()


def _decoder_layers(hf) -> torch.nn.ModuleList:
    inner = hf.transformer if hasattr(hf, "transformer") else getattr(hf, "gpt_neox", None) or hf.model
    return inner.h if hasattr(inner, "h") else inner.layers


def _by_hand(hf, base: torch.Tensor, source: torch.Tensor, metric, positions) -> torch.Tensor:
    """[layers, positions]: the metric after replacing the input of each decoder layer at each
    position with the source's, one forward per patch, with PyTorch pre-hooks only."""
    layers = _decoder_layers(hf)
    seen: dict[int, torch.Tensor] = {}

    def keep(i):
        def pre(module, args, kwargs):
            seen[i] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        return pre

    handles = [layer.register_forward_pre_hook(keep(i), with_kwargs=True) for i, layer in enumerate(layers)]
    with torch.no_grad():
        hf(source)
    for h in handles:
        h.remove()
    out = torch.empty(len(layers), len(positions))
    for i, layer in enumerate(layers):
        for j, p in enumerate(positions):

            def patch(module, args, kwargs, i=i, p=p):
                if args:
                    x = args[0].clone()
                    x[:, p] = seen[i][:, p]
                    return (x, *args[1:]), kwargs
                x = kwargs["hidden_states"].clone()
                x[:, p] = seen[i][:, p]
                return args, {**kwargs, "hidden_states": x}

            handle = layer.register_forward_pre_hook(patch, with_kwargs=True)
            try:
                with torch.no_grad():
                    out[i, j] = metric(hf(base).logits).float().mean()
            finally:
                handle.remove()
    return out


def logit_at(position: int, answer: int = 5):
    def metric(logits):
        return logits[:, position, answer] - logits[:, position].logsumexp(-1)

    return metric


def two_positions(logits):
    return logits[:, 2, 7] - logits[:, -1, 3]


@pytest.mark.parametrize(
    "family", [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES]
)
def test_declared_sweep_equals_the_loop_and_hand_written_hooks_on_every_family(family):
    hf = _hf(family)
    model = lm.wrap_lm(hf, None)
    g = torch.Generator().manual_seed(3)
    base, source = (torch.randint(4, 64, (1, LENGTH), generator=g) for _ in range(2))
    n_layers = len(_decoder_layers(hf))
    hooks = lm.residual_hooks(model)
    positions = list(range(LENGTH))
    for metric, declared in ((logit_at(-1), [-1]), (two_positions, [2, -1])):
        loop = patching_sweep(model, base, source, hooks, metric, positions, batched=False)
        said = reads_positions(metric, declared)
        fast = patching_sweep(model, base, source, hooks, said, positions, reuse_prefix=True, chunk=9)
        torch.testing.assert_close(fast, loop, atol=1e-5, rtol=1e-5)
        by_hand = _by_hand(hf, base, source, metric, positions)
        torch.testing.assert_close(fast[:n_layers], by_hand, atol=1e-5, rtol=1e-5)
        assert loop.std() > 1e-2  # the patches move the metric: the comparisons can fail


@pytest.mark.parametrize("family", [pytest.param("llama", marks=pytest.mark.slow), "gpt2"])
def test_declared_sweep_on_the_bridge_equals_its_loop(family):
    hf = _hf(family)
    model = lm.bridge(hf, tiny_tokenizer(tokenizer_folder()), f"tiny-{family}")
    g = torch.Generator().manual_seed(4)
    base, source = (torch.randint(4, 64, (1, LENGTH), generator=g) for _ in range(2))
    hooks = lm.residual_hooks(model)
    positions = list(range(LENGTH))
    loop = patching_sweep(model, base, source, hooks, two_positions, positions, batched=False)
    fast = patching_sweep(model, base, source, hooks, reads_positions(two_positions, [2, -1]), positions)
    torch.testing.assert_close(fast, loop, atol=1e-5, rtol=1e-5)
    assert loop.std() > 1e-2


@pytest.mark.parametrize("side", ["left", "right"])
def test_declared_sweep_on_a_padded_batch_equals_the_loop(tiny, side):
    model = tiny["wrap"]
    base = lm.tokenize(model, ["the cat sat on the mat", "a dog ran"], padding_side=side)
    source = lm.tokenize(model, ["the dog sat on the rug", "a cat sat"], padding_side=side)
    last = lm.last_positions(base)
    positions = [last, last - 1, 0] if side == "right" else [-1, -2, 0]
    hooks = lm.residual_hooks(model)

    def metric(logits):
        rows = torch.arange(logits.shape[0])
        at = last.repeat(logits.shape[0] // len(last)) if side == "right" else torch.full_like(rows, -1)
        return logits[rows, at, 5]

    declared = sorted({int(p) for p in last}) if side == "right" else [-1]
    loop = patching_sweep(model, base, source, hooks, metric, positions, batched=False)
    fast = patching_sweep(model, base, source, hooks, reads_positions(metric, declared), positions, chunk=4)
    torch.testing.assert_close(fast, loop, atol=1e-5, rtol=1e-5)
    assert loop.std() > 1e-4


def test_a_declared_metric_of_the_wrong_shape_is_refused_as_the_loop_refuses_it(tiny):
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    hooks = lm.residual_hooks(model)[:2]

    def scalar(logits):
        return logits[:, -1, 5].mean()

    def wrong(metric_fn, **kw):
        with pytest.raises((TypeError, ValueError)) as err:
            patching_sweep(model, base, source, hooks, metric_fn, positions=range(3), **kw)
        return type(err.value), str(err.value)

    for bad in (scalar, lambda logits: logits[:, -1, 5] > 0):
        reference = wrong(bad, batched=False)
        assert wrong(reads_positions(bad, [-1]), reuse_prefix=True) == reference
        assert wrong(reads_positions(bad, [-1])) == reference


def test_logits_a_metric_keeps_are_left_as_it_was_given_them(tiny):
    # the sweep reuses its buffer of logits between forwards, but never one a metric still holds
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    for keep_view in (False, True):
        kept, given = [], []

        def metric(logits, keep_view=keep_view, kept=kept, given=given):
            values = logits[:, -1, 5] - logits[:, -1, 9]
            kept.append(logits[:, -1] if keep_view else logits)
            given.append(values.clone())
            return values

        patching_sweep(
            model, base, source, lm.residual_hooks(model), reads_positions(metric, [-1]), range(8), chunk=3
        )
        assert len(kept) > 2
        for held, values in zip(kept, given, strict=True):
            last = held if keep_view else held[:, -1]
            torch.testing.assert_close(last[:, 5] - last[:, 9], values, atol=0, rtol=0)


def test_the_planner_charges_the_head_only_where_the_metric_reads():
    # one patch per (layer, position) of a 2-layer model, a head worth 8 layers
    starts = [s for _ in range(2) for s in range(4)]
    firsts = [f for f in range(2) for _ in range(4)]
    kw: dict[str, Any] = dict(n_layers=2, head=8.0, rows=1, length=4, chunk=8, overhead=0.0)
    # no fixed cost: each forward runs exactly what its patches need
    whole = prefix_reuse.plan(starts, firsts, **kw)
    assert all(len({(starts[j], firsts[j]) for j in g}) == 1 for g in whole)
    # a huge fixed cost: a forward whose positions hold none of the read ones costs nothing, so
    # the patches after position 1 are a group of their own
    read_one = prefix_reuse.plan(starts, firsts, **{**kw, "overhead": 1e6}, head_reads=[1])
    assert sorted(starts[j] for j in read_one[0]) == [0, 0, 1, 1]
    assert all(starts[j] >= 2 for g in read_one[1:] for j in g)
    assert len(prefix_reuse.plan(starts, firsts, **{**kw, "overhead": 1e6})) == 1


def test_a_metric_that_writes_into_its_logits_still_sees_nan_where_it_did_not_declare(tiny):
    # the sweep fills the NaN of its reused logits buffer once; a metric that wrote into the buffer
    # gets it filled again, so a read of an undeclared position is still caught
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    calls = []

    def metric(logits):
        calls.append(None)
        value = logits[:, -1, 5] if len(calls) == 1 else logits[:, -1, 5] + logits[:, 0, 5]
        logits.zero_()
        return value

    with pytest.raises(ValueError, match="it reads other positions too"):
        patching_sweep(
            model, base, source, lm.residual_hooks(model), reads_positions(metric, [-1]), range(8), chunk=3
        )
    assert len(calls) == 2

    def honest(logits):
        return logits[:, -1, 5] - logits[:, -1, 9]

    def scribbler(logits):
        out = honest(logits)
        logits[:, -1] = 0.0  # after reading: the next forward writes the read positions anew
        return out

    kw = dict(positions=range(8), chunk=3)
    hooks = lm.residual_hooks(model)
    want = patching_sweep(model, base, source, hooks, honest, batched=False, **kw)
    got = patching_sweep(model, base, source, hooks, reads_positions(scribbler, [-1]), **kw)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
