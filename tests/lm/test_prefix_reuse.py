"""Patching sweeps that reuse the base run's keys and values before each patch's position equal the
full recomputation, on every backend, for plain and padded batches."""

from __future__ import annotations

import contextlib
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooked import lm
from hooked.lm.sweeps import prefix_reuse
from hooked.lm.sweeps.strategy import LMSweep
from hooked.sweeps import reads_positions
from interventions.patching import patching_sweep
from tests.lm.tiny_models import FAMILIES, tiny_config


def last_logit(answer: int):
    def metric(logits):
        return logits[:, -1, answer] - logits[:, -1].logsumexp(-1)

    return metric


def mean_logit(logits):
    # reads every position, so a wrong logit anywhere (also in the reused prefix) shows
    return logits.float().mean(dim=(1, 2))


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_prefix_reuse_equals_full_recomputation(tiny, backend):
    model = tiny[backend]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    hooks = lm.residual_hooks(model)
    for metric in (last_logit(5), mean_logit):
        kw = dict(positions=range(base.shape[1]), chunk=5)
        full = patching_sweep(model, base, source, hooks, metric, reuse_prefix=False, **kw)
        reused = patching_sweep(model, base, source, hooks, metric, reuse_prefix=True, **kw)
        auto = patching_sweep(model, base, source, hooks, metric, **kw)
        assert full.shape == (len(hooks), base.shape[1])
        torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(auto, reused)
        assert full.std() > 1e-3  # the patches do something: the comparison can fail


def test_prefix_reuse_runs_only_the_suffix_from_the_patched_layer(tiny, monkeypatch):
    monkeypatch.setattr(prefix_reuse, "_CHECKED", weakref.WeakKeyDictionary())  # not checked yet
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    layers = model.module.model.layers
    calls = {i: [] for i in range(len(layers))}
    handles = [
        layer.register_forward_hook(lambda m, a, k, o, i=i: calls[i].append(a[0].shape), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    T = base.shape[1]
    try:  # patches at layers 1 and 2 only: layer 0 runs once (the base run), on every position
        hooks = lm.residual_hooks(model)[1:3]
        full = patching_sweep(model, base, source, hooks, mean_logit, positions=range(T), reuse_prefix=False)
        for c in calls.values():
            c.clear()
        reused = patching_sweep(model, base, source, hooks, mean_logit, positions=range(T), chunk=4)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)
    # layer 0 runs in the source and base runs, and once for the one patch that checks the skipping
    # (the one with the fewest positions: the last)
    assert calls[0] == [torch.Size([1, T, 32])] * 2 + [torch.Size([1, 1, 32])]
    handle = layers[0].register_forward_hook(lambda m, a, o: calls[0].append(a[0].shape))
    try:
        calls[0].clear()
        patching_sweep(model, base, source, hooks, mean_logit, positions=range(T), chunk=4)
    finally:
        handle.remove()
    assert len(calls[0]) == 2  # checked once for this model: not again
    assert len(calls[1]) > 2  # and the patched runs
    suffixes = {s[1] for s in calls[1][2:-1]}
    assert suffixes <= set(range(1, T + 1)) and T in suffixes and min(suffixes) < T  # suffixes
    assert sum(s[0] for s in calls[1][2:-1]) >= 2 * T  # every patch ran somewhere...
    assert all(s[0] <= 4 for s in calls[1][2:-1])  # ...at most `chunk` patches per forward


def test_a_model_whose_layers_cannot_be_skipped_is_recomputed_whole(tiny, monkeypatch):
    from hooked.lm.sweeps import layer_skip

    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    real = layer_skip.layer_outputs

    @contextlib.contextmanager
    def off(layers):  # as if a later layer read more of an earlier one than its output
        with real(layers) as record:
            yield record
        for i, out in record["outputs"].items():
            record["outputs"][i] = out + torch.randn(out.shape, generator=torch.Generator().manual_seed(i))

    monkeypatch.setattr(layer_skip, "layer_outputs", off)
    monkeypatch.setattr(prefix_reuse, "_CHECKED", weakref.WeakKeyDictionary())
    hooks = lm.residual_hooks(model)
    kw = dict(positions=range(base.shape[1]), chunk=5)
    full = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=False, **kw)
    with pytest.warns(UserWarning, match="every layer is recomputed"):
        reused = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=True, **kw)
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_prefix_reuse_with_hooks_inside_and_outside_the_layers_equals_full(tiny, backend):
    model = tiny[backend]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    if backend == "wrap":
        hooks = [
            "model.embed_tokens.hook_out",
            "model.layers.1.self_attn.hook_out",
            "model.layers.1.mlp.hook_out",
        ]
    else:
        hooks = ["hook_embed", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"]
    hooks.append(lm.residual_hooks(model)[-1])
    kw = dict(positions=range(base.shape[1]), chunk=3)
    full = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=False, **kw)
    reused = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=True, **kw)
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)
    assert (full.std(dim=1) > 1e-4).all()  # every hook's patches change the output


@pytest.mark.parametrize("kind", ["neox", "gemma2"])
def test_prefix_reuse_on_parallel_and_sliding_window_layouts_equals_full(kind):
    from tests.lm.conftest import tiny_causal_lm

    model = lm.wrap_lm(tiny_causal_lm(kind), None)
    g = torch.Generator().manual_seed(1)
    base, source = torch.randint(3, 64, (2, 9), generator=g), torch.randint(3, 64, (2, 9), generator=g)
    hooks = lm.residual_hooks(model)
    kw = dict(positions=range(9), chunk=7)  # 9 tokens: longer than gemma2's window of 4
    full = patching_sweep(model, base, source, hooks, last_logit(5), reuse_prefix=False, **kw)
    reused = patching_sweep(model, base, source, hooks, last_logit(5), reuse_prefix=True, **kw)
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)
    assert full.std() > 1e-3


def test_prefix_reuse_on_gpt2_equals_full(tiny_gpt2):
    model = tiny_gpt2["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    hooks = lm.residual_hooks(model)
    kw = dict(positions=range(base.shape[1]), chunk=5)
    full = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=False, **kw)
    reused = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=True, **kw)
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)
    assert full.std() > 1e-4


def _cost(groups, starts, firsts, n_layers, head, overhead, length):
    return sum(
        (n_layers - min(firsts[j] for j in g) + head)
        * (overhead + len(g) * (length - min(starts[j] for j in g)))
        for g in groups
    )


def _ragged_cost(groups, starts, firsts, n_layers, head, overhead, length):
    """A ragged forward: each patch runs its own layers, the fixed cost is paid per layer run."""
    total = 0.0
    for g in groups:
        positions = length - min(starts[j] for j in g)
        total += (n_layers - min(firsts[j] for j in g)) * overhead + head * (overhead + len(g) * positions)
        total += sum(n_layers - firsts[j] for j in g) * positions
    return total


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.integers(1, 7),
    st.floats(0, 200),
    st.floats(0, 10),
    st.randoms(use_true_random=False),
)
@pytest.mark.parametrize("ragged", [False, True])
def test_plan_covers_every_patch_once_and_is_no_worse_than_simple_plans(
    ragged, n_layers, length, chunk, overhead, head, rnd
):
    # a ragged plan is also no worse than the unragged one, by the ragged forwards' cost
    grid = [(f, s) for f in range(n_layers) for s in range(length) if rnd.random() < 0.7] or [(0, 0)]
    firsts, starts = [f for f, _ in grid], [s for _, s in grid]
    kw = dict(n_layers=n_layers, head=head, rows=1, length=length, chunk=chunk)
    groups = prefix_reuse.plan(starts, firsts, overhead=overhead, ragged=ragged, **kw)
    assert sorted(j for g in groups for j in g) == list(range(len(grid)))
    assert all(1 <= len(g) <= chunk for g in groups)
    cost_of = _ragged_cost if ragged else _cost
    cost = cost_of(groups, starts, firsts, n_layers, head, overhead, length)
    one_each = [[j] for j in range(len(grid))]
    in_order = [list(range(len(grid)))[i : i + chunk] for i in range(0, len(grid), chunk)]
    others = [one_each, in_order]
    if ragged:
        others.append(prefix_reuse.plan(starts, firsts, overhead=overhead, **kw))
    for other in others:
        assert cost <= cost_of(other, starts, firsts, n_layers, head, overhead, length) + 1e-6


def test_plan_known_answers():
    # no fixed cost per forward: every patch runs exactly what it needs, alone or with its equals
    starts, firsts = [0, 0, 1, 1, 2], [0, 1, 0, 1, 1]
    kw = dict(n_layers=2, head=1.0, rows=1, length=3, chunk=8)
    groups = prefix_reuse.plan(starts, firsts, overhead=0.0, **kw)
    assert all(len({(starts[j], firsts[j]) for j in g}) == 1 for g in groups)
    # a huge fixed cost: as few forwards as `chunk` allows
    assert len(prefix_reuse.plan(starts, firsts, overhead=1e9, **kw)) == 1
    assert len(prefix_reuse.plan(starts, firsts, overhead=1e9, **{**kw, "chunk": 2})) == 3
    with pytest.raises(ValueError, match="chunk"):
        prefix_reuse.plan(starts, firsts, **{**kw, "chunk": 0})


@pytest.mark.parametrize("side", ["left", "right"])
def test_prefix_reuse_on_a_padded_batch_equals_full(tiny, side):
    model = tiny["wrap"]
    base = lm.tokenize(model, ["the cat sat on the mat", "a dog ran"], padding_side=side)
    source = lm.tokenize(model, ["the dog sat on the rug", "a cat sat"], padding_side=side)
    last = lm.last_positions(base)
    positions = [last, last - 1, 0] if side == "right" else [-1, -2, 0]
    hooks = lm.residual_hooks(model)[:2]

    def metric(logits):
        return logits[torch.arange(logits.shape[0]), last.repeat(logits.shape[0] // 2), 7]

    full = patching_sweep(model, base, source, hooks, metric, positions=positions, reuse_prefix=False)
    reused = patching_sweep(model, base, source, hooks, metric, positions=positions, reuse_prefix=True)
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)


def test_reuse_prefix_is_refused_clearly_where_it_does_not_apply(mlp):
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="reuse_prefix=True"):
        patching_sweep(
            mlp,
            x,
            x,
            ["blocks.0.hook_resid_pre"],
            lambda o: o.sum((1, 2)),
            positions=[0, 1],
            reuse_prefix=True,
        )
    # the default falls back to the plain path on other models
    out = patching_sweep(mlp, x, x, ["blocks.0.hook_resid_pre"], lambda o: o.sum((1, 2)), positions=[0, 1])
    assert out.shape == (1, 2)


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_prefix_reuse_on_smollm2_equals_full(smol, backend):
    from papers.lm.prompt_patching import EIFFEL, logit_diff

    model = smol[backend]
    clean, corrupt = lm.to_tokens(model, EIFFEL.clean), lm.to_tokens(model, EIFFEL.corrupt)
    metric = logit_diff(lm.token_id(model, EIFFEL.answer), lm.token_id(model, EIFFEL.wrong))
    hooks = lm.residual_hooks(model)[::6]
    kw = dict(positions=range(clean.shape[1]), chunk=32)
    full = patching_sweep(model, corrupt, clean, hooks, metric, reuse_prefix=False, **kw)
    reused = patching_sweep(model, corrupt, clean, hooks, metric, reuse_prefix=True, **kw)
    torch.testing.assert_close(reused, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_head_and_whole_activation_sweeps_skip_the_layers_before_each_patch(tiny, backend, monkeypatch):
    monkeypatch.setattr(prefix_reuse, "_CHECKED", weakref.WeakKeyDictionary())
    model = tiny[backend]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    layers = model.module.model.layers if backend == "wrap" else model.original_model.model.layers
    calls: list[int] = []
    handle = layers[0].register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        zs = [lm.act_name(model, "z", 1)]
        heads = dict(positions=range(4), pos_dim=2)  # every head of layer 1, all positions at once
        full = patching_sweep(model, base, source, zs, mean_logit, reuse_prefix=False, **heads)
        calls.clear()
        skipped = patching_sweep(model, base, source, zs, mean_logit, **heads)
        # layer 0 ran in the source and base runs and for the one patch that checks the skipping
        assert len(calls) == 3
        torch.testing.assert_close(skipped, full, atol=1e-4, rtol=1e-4)
        assert full.std() > 1e-5
        resid = lm.residual_hooks(model)
        whole_full = patching_sweep(model, base, source, resid, mean_logit, reuse_prefix=False)
        whole = patching_sweep(model, base, source, resid, mean_logit)
        torch.testing.assert_close(whole, whole_full, atol=1e-4, rtol=1e-4)
    finally:
        handle.remove()


def test_no_reuse_on_an_encoder_decoder_model():
    import transformers

    import hooked

    config = transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4)
    t5 = hooked.wrap(transformers.T5ForConditionalGeneration(config).eval())
    assert t5.module.can_generate()  # it generates, but its encoder sees every position
    assert prefix_reuse.causal_lm_forward(t5, torch.randint(0, 64, (1, 5))) is None


def test_the_cost_constant_is_a_parameter_of_the_strategy_and_changes_only_the_grouping(tiny):
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    hooks = lm.residual_hooks(model)
    kw = dict(positions=range(base.shape[1]), chunk=8)
    full = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=False, **kw)
    last = model.module.model.layers[-1]  # runs in every patched forward
    forwards = {}
    for overhead in (0.0, 1e9):
        calls = []
        handle = last.register_forward_hook(lambda m, a, o, calls=calls: calls.append(1))
        try:
            strategy = lm.LMSweep(forward_overhead=overhead)
            got = patching_sweep(model, base, source, hooks, mean_logit, strategy=strategy, **kw)
        finally:
            handle.remove()
        torch.testing.assert_close(got, full, atol=1e-4, rtol=1e-4)
        forwards[overhead] = len(calls)
    patches = len(hooks) * base.shape[1]
    assert forwards[1e9] <= 2 + -(-patches // 8) + 1  # base and source runs, full chunks, the check
    assert forwards[0.0] > forwards[1e9]  # free forwards: patches run with fewer positions each


def test_ragged_plan_puts_patches_of_every_layer_at_one_position_in_one_forward():
    # every layer at each position; a fixed cost per layer run: one forward per position, each
    # patch charged only its own layers (an unragged plan splits them by first layer)
    n_layers, length = 6, 4
    grid = [(f, s) for s in range(length) for f in range(n_layers)]
    firsts, starts = [f for f, _ in grid], [s for _, s in grid]
    kw = dict(n_layers=n_layers, head=0.0, rows=1, length=length, chunk=n_layers, widest_band=1)
    groups = prefix_reuse.plan(starts, firsts, overhead=20.0, ragged=True, **kw)
    assert sorted(sorted(g) for g in groups) == [
        list(range(s * n_layers, (s + 1) * n_layers)) for s in range(4)
    ]
    assert len(prefix_reuse.plan(starts, firsts, overhead=20.0, **kw)) > len(groups)


def test_prefix_cache_gives_each_layer_its_own_rows():
    import transformers

    from hooked.lm.backends.forward import per_layer_rows, prefix_cache

    g = torch.Generator().manual_seed(0)
    cache = transformers.DynamicCache()
    kv = [(torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g)) for _ in range(3)]
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    assert per_layer_rows(cache)
    rows = torch.tensor([0, 1, 0, 1, 1, 0])
    out = prefix_cache(cache, 3, rows, [2, 4, 6])
    assert out.get_seq_length() == 3 and cache.get_seq_length() == 5  # the original is left whole
    for i, (k, v) in enumerate(kv):
        n = [2, 4, 6][i]
        assert torch.equal(out.layers[i].keys, k[rows[:n], :, :3])
        assert torch.equal(out.layers[i].values, v[rows[:n], :, :3])
        assert torch.equal(cache.layers[i].keys, k)
    whole = prefix_cache(cache, 3, rows)
    assert all(torch.equal(whole.layers[i].keys, k[rows, :, :3]) for i, (k, _) in enumerate(kv))
    with pytest.raises(ValueError, match="holds 5 positions, not 6"):
        prefix_cache(cache, 6, rows)


def _decoder_layers(hf) -> torch.nn.ModuleList:
    inner = hf.transformer if hasattr(hf, "transformer") else getattr(hf, "gpt_neox", None) or hf.model
    return inner.h if hasattr(inner, "h") else inner.layers


def _patched_by_hand(hf, batch: dict, source: dict, patches, metric) -> torch.Tensor:
    """The metric (mean over rows) after each ``(layer, position)`` patch of the decoder layer's
    input, one full forward per patch, with PyTorch pre-hooks on the transformers model only."""
    layers = _decoder_layers(hf)
    seen: dict[int, torch.Tensor] = {}

    def hidden_of(args, kwargs):
        return args[0] if args else kwargs["hidden_states"]

    handles = [
        layer.register_forward_pre_hook(
            lambda m, a, k, i=i: seen.__setitem__(i, hidden_of(a, k).detach().clone()), with_kwargs=True
        )
        for i, layer in enumerate(layers)
    ]
    with torch.no_grad():
        hf(**source)
    for h in handles:
        h.remove()
    out = []
    for layer_index, p in patches:

        def patch(module, args, kwargs, i=layer_index, p=p):
            x = hidden_of(args, kwargs).clone()
            x[torch.arange(x.shape[0]), p] = seen[i][torch.arange(x.shape[0]), p]
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

        handle = layers[layer_index].register_forward_pre_hook(patch, with_kwargs=True)
        try:
            with torch.no_grad():
                out.append(metric(hf(**batch).logits).float().mean())
        finally:
            handle.remove()
    return torch.stack(out)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    "family",
    [f if f in ("llama", "gpt2", "qwen2") else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES],
)
def test_ragged_forwards_of_mixed_layers_and_positions_equal_hand_written_hooks(family, side, monkeypatch):
    """Patches at several layers and positions share ragged forwards (each row run from its own
    layer on: fewer rows in the earlier layers); every value equals a full forward per patch with a
    PyTorch pre-hook, on padded batches."""
    import transformers

    from hooked.lm.sweeps import layer_skip

    config = tiny_config(family)
    config.initializer_range = 0.3
    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    model = lm.wrap_lm(hf, None)
    n_layers = len(_decoder_layers(hf))
    g = torch.Generator().manual_seed(5)
    ids, src_ids = torch.randint(4, 64, (2, 2, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0 if side == "left" else 1
    mask[1, -2:] = 0 if side == "right" else 1
    positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
    batch = dict(input_ids=ids, attention_mask=mask, position_ids=positions)
    source = dict(input_ids=src_ids, attention_mask=mask, position_ids=positions)
    hooks = lm.residual_hooks(model)[:n_layers]  # each decoder layer's input
    at = [1, 3, 4]
    rows_run: list[list[int]] = []
    real = layer_skip.ragged

    def spy(layers, first, active, joining, n):
        rows_run.append(list(active))
        return real(layers, first, active, joining, n)

    monkeypatch.setattr(layer_skip, "ragged", spy)

    def metric(logits):
        return logits[:, -1, 5] - logits[:, -1].logsumexp(-1) + logits[:, 2, 7]

    # a huge fixed cost per forward: one forward per start position, holding every layer's patch
    kw = dict(chunk=len(hooks) * len(at), strategy=LMSweep(forward_overhead=1e6))
    got = patching_sweep(model, batch, source, hooks, metric, at, reuse_prefix=True, **kw)
    want = _patched_by_hand(hf, batch, source, [(i, p) for i in range(n_layers) for p in at], metric)
    torch.testing.assert_close(got.reshape(-1), want, atol=1e-5, rtol=1e-5)
    assert want.std() > 1e-2  # the patches move the metric: the comparison can fail
    assert rows_run and all(a[0] < a[-1] for a in rows_run)  # ragged forwards ran
    declared = patching_sweep(model, batch, source, hooks, reads_positions(metric, [2, -1]), at, **kw)
    torch.testing.assert_close(declared.reshape(-1), want, atol=1e-5, rtol=1e-5)


def test_a_forward_of_patches_out_of_layer_order_gives_each_patch_its_value(tiny, monkeypatch):
    # the planner hands over patches in order of first layer; any other order is put in that order
    # for the ragged forward and the values handed back in the order asked
    model = tiny["wrap"]
    base = lm.to_tokens(model, "the cat sat on the big red mat")
    source = lm.to_tokens(model, "a dog ran to the old blue house")
    hooks = lm.residual_hooks(model)
    kw = dict(positions=range(base.shape[1]), chunk=64)
    full = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=False, **kw)
    real = prefix_reuse.plan
    monkeypatch.setattr(prefix_reuse, "plan", lambda *a, **k: [g[::-1] for g in real(*a, **k)])
    prefix_reuse._plan_once.cache_clear()  # plans are remembered: plan this sweep anew
    try:
        reversed_ = patching_sweep(model, base, source, hooks, mean_logit, reuse_prefix=True, **kw)
    finally:
        prefix_reuse._plan_once.cache_clear()
    torch.testing.assert_close(reversed_, full, atol=1e-4, rtol=1e-4)
    assert full.std() > 1e-4
