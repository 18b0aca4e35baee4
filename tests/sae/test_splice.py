"""Splicing dictionaries into hooked models: with the error term the output is the clean model's
(on a HookedModule, ``hooked.wrap`` of a plain module, a wrapped language model and the bridge);
without it, the model runs on the reconstruction; features are cached, steered, ablated and
patched by name, also in ``patching_sweep`` and ``lm.generate``, and per step in an RNN. Each is
checked against hooks written by hand at the model's own hook point."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hooked
import hooked.sae as S
from hooked import UnknownHookError, at_step, lm
from interventions.patching import patching_sweep
from tests.toys import MLPStack, TinyRNN


def _random_sae(d, width=16, kind="topk", k=4, seed=0, dtype=torch.float32):
    sae = S.SAE(d, width, kind, k=k if "topk" in kind else None, seed=seed, dtype=dtype)
    with torch.no_grad():  # biases away from 0, so that a forgotten bias shows
        g = torch.Generator().manual_seed(seed + 1)
        sae.b_enc.copy_(0.3 * torch.randn(width, generator=g))
        sae.b_dec.copy_(0.3 * torch.randn(d, generator=g))
        if kind in ("jumprelu", "batchtopk"):
            sae.threshold.fill_(0.1)
    return sae.requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_lms():
    from tests.lm.tiny_models import tiny_bridge, tiny_hf, tiny_tokenizer, tokenizer_folder

    hf = tiny_hf("llama")
    return {"wrap": lm.wrap_lm(hf, tiny_tokenizer(tokenizer_folder())), "bridge": tiny_bridge("llama")}


def _plain():
    torch.manual_seed(0)
    return hooked.wrap(nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)))


def _cases(tiny_lms):
    """(model, hook, input, d) for every backend."""
    ids = torch.tensor([[5, 9, 11, 7, 30], [8, 2, 40, 41, 12]])
    return [
        (MLPStack(d=8), "blocks.1.hook_resid_pre", torch.randn(3, 5, 8), 8),
        (_plain(), "2.hook_out", torch.randn(4, 6), 8),
        (tiny_lms["wrap"], "model.layers.0.hook_out", ids, 32),
        (tiny_lms["wrap"], "blocks.1.hook_resid_pre", ids, 32),  # a TransformerLens name on wrap
        (tiny_lms["bridge"], "blocks.0.hook_resid_post", ids, 32),
    ]


def out_of(y):
    return lm.logits_of(y) if not isinstance(y, torch.Tensor) else y


def test_error_term_keeps_the_output_and_features_are_cached(tiny_lms):
    for model, hook, x, d in _cases(tiny_lms):
        sae = _random_sae(d)
        with torch.no_grad():
            clean = out_of(model(x))
            _, clean_cache = model.run_with_cache(x, names_filter=[hook])
            with S.spliced(model, {hook: sae}) as m:
                spliced_out, cache = m.run_with_cache(x)
                called = out_of(model(x))  # the model itself runs spliced inside the block
        torch.testing.assert_close(out_of(spliced_out), clean, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(called, clean, atol=2e-5, rtol=1e-5)
        feats = cache[f"{hook}.hook_sae_acts_post"]
        assert feats.shape == (*clean_cache[hook].shape[:-1], 16)
        torch.testing.assert_close(feats, sae.encode(clean_cache[hook]))
        torch.testing.assert_close(cache[f"{hook}.hook_sae_input"], clean_cache[hook])
        torch.testing.assert_close(
            cache[f"{hook}.hook_sae_error"], clean_cache[hook] - sae(clean_cache[hook]), atol=1e-6, rtol=1e-5
        )
        torch.testing.assert_close(
            cache[hook], clean_cache[hook], atol=2e-5, rtol=1e-5
        )  # the model's own too
        assert not _hooks_left(model)


def _hooks_left(model):
    return [
        n
        for n, hp in model.hook_dict.items()
        if getattr(hp, "fwd_hooks", None) or getattr(hp, "bwd_hooks", None)
    ]


def test_without_error_term_the_model_runs_on_the_reconstruction(tiny_lms):
    for model, hook, x, d in _cases(tiny_lms):
        sae = _random_sae(d, kind="standard")
        with torch.no_grad():
            hand = out_of(model.run_with_hooks(x, fwd_hooks=[(hook, lambda a, hook, sae=sae: sae(a))]))
            with S.spliced(model, {hook: sae}, error_term=False):
                got = out_of(model(x))
            clean = out_of(model(x))
        torch.testing.assert_close(got, hand)
        assert (got - clean).abs().max() > 1e-3  # the reconstruction error does change the output


def test_steering_and_ablating_features_equal_editing_the_activation_by_hand(tiny_lms):
    for model, hook, x, d in _cases(tiny_lms):
        sae = _random_sae(d)
        name = S.feature_name(hook)
        i = 5
        with torch.no_grad():
            steer = [(hook, lambda a, hook, s=sae: a + 2.5 * s.W_dec[5])]
            hand = out_of(model.run_with_hooks(x, fwd_hooks=steer))
            # ablation: the feature's share of the reconstruction is taken away
            hand_ablate = out_of(
                model.run_with_hooks(
                    x, fwd_hooks=[(hook, lambda a, hook, s=sae: a - s.encode(a)[..., 5:6] * s.W_dec[5])]
                )
            )
            with S.spliced(model, {hook: sae}) as m:
                steered = out_of(m.run_with_hooks(x, fwd_hooks=[(name, S.steer(i, 2.5))]))
                ablated = out_of(m.run_with_hooks(x, fwd_hooks=[(name, S.ablate([i]))]))
        torch.testing.assert_close(steered, hand, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(ablated, hand_ablate, atol=2e-5, rtol=1e-5)


def test_splice_hooks_are_ordinary_forward_hooks(tiny_lms):
    for model, hook, x, d in _cases(tiny_lms)[:3]:
        sae = _random_sae(d, kind="jumprelu")
        with torch.no_grad():
            a = out_of(
                model.run_with_hooks(x, fwd_hooks=S.splice_hooks(model, {hook: sae}, error_term=False))
            )
            b = out_of(S.run_with_hooks(model, x, saes={hook: sae}, error_term=False))
            _, cache = S.run_with_cache(
                model, x, saes={hook: sae}, names_filter=lambda n: n.endswith("acts_post")
            )
        torch.testing.assert_close(a, b)
        assert list(cache) == [f"{hook}.hook_sae_acts_post"]


def test_several_dictionaries_at_once():
    model, x = MLPStack(d=8), torch.randn(4, 3, 8)
    hooks = ["blocks.0.hook_mlp_out", "blocks.2.hook_resid_pre"]
    saes = {h: _random_sae(8, kind="standard", seed=i) for i, h in enumerate(hooks)}
    with torch.no_grad():
        clean = model(x)
        with S.spliced(model, saes) as m:
            out, cache = m.run_with_cache(x)
        with S.spliced(model, saes, error_term=False):
            replaced = model(x)
        hand = model.run_with_hooks(x, fwd_hooks=[(h, lambda a, hook, s=s: s(a)) for h, s in saes.items()])
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(replaced, hand)
    for h in hooks:
        assert cache[f"{h}.hook_sae_acts_post"].shape == (4, 3, 16)
    # the features come right after their hook, in the order the forward ran
    order = list(cache)
    assert order.index(f"{hooks[0]}.hook_sae_acts_post") == order.index(hooks[0]) + 3


def test_gradients_of_features_are_the_activations_gradient_through_the_decoder():
    model, x = MLPStack(d=8), torch.randn(2, 3, 8)
    hook = "blocks.1.hook_resid_pre"
    sae = _random_sae(8)
    name = S.feature_name(hook)
    with S.spliced(model, {hook: sae}) as m:
        _, cache = m.run_with_cache(
            x, names_filter=[hook, name], incl_bwd=True, metric=lambda y: y[:, -1, 0].sum()
        )
    torch.testing.assert_close(cache[name + "_grad"], cache[hook + "_grad"] @ sae.W_dec.T)
    # and the model upstream sees the clean model's gradient
    _, clean = model.run_with_cache(
        x, names_filter=["blocks.0.hook_mlp_out"], incl_bwd=True, metric=lambda y: y[:, -1, 0].sum()
    )
    with S.spliced(model, {hook: sae}) as m:
        _, spl = m.run_with_cache(
            x, names_filter=["blocks.0.hook_mlp_out"], incl_bwd=True, metric=lambda y: y[:, -1, 0].sum()
        )
    torch.testing.assert_close(
        spl["blocks.0.hook_mlp_out_grad"], clean["blocks.0.hook_mlp_out_grad"], atol=1e-5, rtol=1e-5
    )


def test_a_transcoder_replaces_the_output_it_predicts():
    model, x = MLPStack(d=8), torch.randn(3, 4, 8)
    tc = S.Transcoder(
        8, 8, 24, "topk", k=5, hook="blocks.0.hook_resid_pre", hook_out="blocks.0.hook_mlp_out", seed=3
    )
    tc.requires_grad_(False)
    with torch.no_grad():
        clean = model(x)
        with S.spliced(model, {"blocks.0.hook_resid_pre": tc}) as m:
            out, cache = m.run_with_cache(x)
        with S.spliced(model, {("blocks.0.hook_resid_pre", "blocks.0.hook_mlp_out"): tc}, error_term=False):
            replaced = model(x)
        held = {}
        hand = model.run_with_hooks(
            x,
            fwd_hooks=[
                ("blocks.0.hook_resid_pre", lambda a, hook: held.update(x=a)),
                ("blocks.0.hook_mlp_out", lambda a, hook: tc(held["x"])),
            ],
        )
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(replaced, hand)
    assert cache["blocks.0.hook_resid_pre.hook_sae_acts_post"].shape == (3, 4, 24)


def test_patching_sweep_over_features_equals_patching_by_hand(tiny_lms):
    base = torch.tensor([[5, 9, 11, 7, 30, 3]])
    source = torch.tensor([[6, 10, 12, 8, 31, 4]])
    cases = [
        (MLPStack(d=8), "blocks.2.hook_resid_pre", torch.randn(1, 6, 8), torch.randn(1, 6, 8), 8, {}),
        (tiny_lms["wrap"], "model.layers.1.hook_in", base, source, 32, {}),
        (tiny_lms["wrap"], "model.layers.1.hook_in", base, source, 32, {"reuse_prefix": False}),
        (tiny_lms["bridge"], "blocks.1.hook_resid_pre", base, source, 32, {}),
    ]
    for model, hook, b, s, d, kw in cases:
        sae = _random_sae(d, kind="standard")
        name = S.feature_name(hook)

        def metric(y):
            return out_of(y)[:, -1, :3].sum(-1)

        with torch.no_grad():
            _, cb = model.run_with_cache(b, names_filter=[hook])
            _, cs = model.run_with_cache(s, names_filter=[hook])
            fb, fs = sae.encode(cb[hook]), sae.encode(cs[hook])
            hand = []
            for p in range(6):

                def patch(a, hook, p=p, delta=(fs - fb) @ sae.W_dec):
                    a = a.clone()
                    a[:, p] += delta[:, p]
                    return a

                hand.append(metric(model.run_with_hooks(b, fwd_hooks=[(hook, patch)])).mean())
            with S.spliced(model, {hook: sae}) as m:
                got = patching_sweep(m, b, s, [name], metric, positions=list(range(6)), **kw)
        torch.testing.assert_close(got[0], torch.stack(hand), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_steering_a_feature_during_generation(tiny_lms, backend):
    model = tiny_lms[backend]
    hook = "blocks.0.hook_resid_post"
    sae = _random_sae(32)
    prompt = "t5 t9 t11 t7"
    want = lm.generate(
        model, prompt, 6, fwd_hooks=[(hook, lambda a, hook: a + 4.0 * sae.W_dec[2])], return_tokens=True
    )
    plain = lm.generate(model, prompt, 6, return_tokens=True)
    with S.spliced(model, {hook: sae}) as m:
        got = lm.generate(
            m, prompt, 6, fwd_hooks=[(S.feature_name(hook), S.steer(2, 4.0))], return_tokens=True
        )
        clean = lm.generate(m, prompt, 6, return_tokens=True)
    assert torch.equal(got.tokens, want.tokens)
    assert torch.equal(clean.tokens, plain.tokens)  # the error term leaves generation as it was
    assert not _hooks_left(model)


def test_recurrent_features_keep_the_step_axis_and_take_step_hooks():
    rnn, x = TinyRNN(), torch.randn(2, 5, 3)
    sae = _random_sae(4, width=8, kind="standard")
    name = S.feature_name("hook_h")
    with torch.no_grad():
        clean = rnn(x)
        with S.spliced(rnn, {"hook_h": sae}) as m:
            out, cache = m.run_with_cache(x)
            steered = m.run_with_hooks(x, fwd_hooks=[(name, at_step(2, S.steer(1, 3.0)))])
        assert cache.is_stacked(name) and cache[name].shape == (2, 5, 8)
        torch.testing.assert_close(out, clean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(cache[name], sae.encode(clean))  # per step, h_t's features
        hand = rnn.manual(x, edit=lambda t, h: h + 3.0 * sae.W_dec[1] if t == 2 else h)
        torch.testing.assert_close(steered, hand, atol=1e-6, rtol=1e-5)
        # patch feature acts step by step from a source sequence
        src = torch.randn(2, 5, 3)
        fs, fb = sae.encode(rnn(src)), sae.encode(clean)
        with S.spliced(rnn, {"hook_h": sae}) as m:
            got = patching_sweep(m, x, src, [name], lambda y: y[:, -1].sum(-1), positions=list(range(5)))
        for t in range(5):
            want = rnn.manual(
                x, edit=lambda s, h, t=t: h + (fs[:, t] - fb[:, t]) @ sae.W_dec if s == t else h
            )
            torch.testing.assert_close(got[0, t], want[:, -1].sum(-1).mean(), atol=1e-5, rtol=1e-5)
    assert not sae.hook_sae_acts_post.recurrent  # restored when the block ended


def test_bad_splices_are_refused_and_leave_no_hooks(tiny_lms):
    model, x = MLPStack(d=8), torch.randn(2, 3, 8)
    with pytest.raises(UnknownHookError, match="blocks.9.hook_resid_pre"):
        with S.spliced(model, {"blocks.9.hook_resid_pre": _random_sae(8)}):
            pass
    with pytest.raises(
        ValueError, match="'blocks.0.hook_resid_pre' reads width 6, but the activation there has shape"
    ):
        with S.spliced(model, {"blocks.0.hook_resid_pre": _random_sae(6)}):
            model(x)
    with pytest.raises(TypeError, match="float64 weights on cpu, but the activation there is torch.float32"):
        with S.spliced(model, {"blocks.0.hook_resid_pre": _random_sae(8, dtype=torch.float64)}):
            model(x)
    sae = _random_sae(8)
    with pytest.raises(ValueError, match="same dictionary object is spliced"):
        S.spliced(model, {"blocks.0.hook_resid_pre": sae, "blocks.1.hook_resid_pre": sae}).__enter__()
    with pytest.raises(TypeError, match="must be a hooked.sae.SAE or Transcoder"):
        S.spliced(model, {"blocks.0.hook_resid_pre": nn.Linear(8, 8)}).__enter__()
    with pytest.raises(ValueError, match="has no hook_out"):
        S.spliced(model, {"blocks.0.hook_resid_pre": S.Transcoder(8, 8, 4)}).__enter__()
    assert not _hooks_left(model)
    bridge = tiny_lms["bridge"]
    with pytest.raises(ValueError, match="reads width 8"):
        with S.spliced(bridge, {"blocks.0.hook_resid_post": _random_sae(8)}):
            bridge(torch.tensor([[1, 2, 3]]))
    assert not _hooks_left(bridge)


@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["wrap", "bridge"])
def test_smollm2_logits_are_unchanged_with_the_error_term(backend):
    model = lm.load("smollm2-135m", backend=backend)
    hook = "blocks.10.hook_resid_post" if backend == "bridge" else "model.layers.10.hook_out"
    sae = _random_sae(576, width=16 * 576, k=32)
    ids = lm.to_tokens(model, ["The Eiffel Tower is in the city of Paris, France"])
    with torch.no_grad():
        clean = out_of(model(ids))
        _, cache = model.run_with_cache(ids, names_filter=[hook])
        with S.spliced(model, {hook: sae}) as m:
            spliced_out, spliced_cache = m.run_with_cache(ids, names_filter=[S.feature_name(hook)])
        with S.spliced(model, {hook: sae}, error_term=False):
            replaced = out_of(model(ids))
        hand = out_of(model.run_with_hooks(ids, fwd_hooks=[(hook, lambda a, hook: sae(a))]))
    torch.testing.assert_close(out_of(spliced_out), clean, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(spliced_cache[S.feature_name(hook)], sae.encode(cache[hook]))
    torch.testing.assert_close(replaced, hand)


def test_the_tools_of_the_protocol_read_features():
    from hooked.protocol import check_hookable, collect_activations

    model, sae = MLPStack(d=8), _random_sae(8)
    hook = "blocks.1.hook_resid_pre"
    batches = [torch.randn(2, 3, 8) for _ in range(3)]
    with S.spliced(model, {hook: sae}) as m:
        check_hookable(m)
        got = collect_activations(m, batches, S.feature_name(hook))[S.feature_name(hook)]
    clean = collect_activations(model, batches, hook)[hook]
    torch.testing.assert_close(got, sae.encode(clean))
    # a dictionary is a hooked model of its own
    _, cache = sae.run_with_cache(clean)
    torch.testing.assert_close(cache["hook_sae_acts_post"], got)


def test_a_perfect_dictionary_changes_nothing_and_an_imperfect_one_moves_the_output_by_its_error():
    # the hook feeds a linear layer, so splicing without the error term moves the output by exactly
    # (reconstruction - activation) @ W^T; both sides computed here from the weights, in float64
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 3)).double()
    model, hook, x = hooked.wrap(net), "0.hook_out", torch.randn(5, 6, dtype=torch.float64)
    h = x @ net[0].weight.T + net[0].bias  # the activation at the hook, by hand
    clean = h @ net[1].weight.T + net[1].bias

    # relu(x - b) - relu(b - x) + b == x: a standard dictionary of width 2d that reconstructs exactly
    perfect = S.SAE(8, 16, "standard", dtype=torch.float64).requires_grad_(False)
    eye = torch.eye(8, dtype=torch.float64)
    with torch.no_grad():
        perfect.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        perfect.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        perfect.b_enc.zero_()
        perfect.b_dec.copy_(torch.randn(8, dtype=torch.float64))
    with S.spliced(model, {hook: perfect}, error_term=False) as m:
        out, cache = m.run_with_cache(x)
    torch.testing.assert_close(out, clean, atol=1e-12, rtol=0)
    shifted = h - perfect.b_dec
    torch.testing.assert_close(
        cache[S.feature_name(hook)], torch.cat([shifted.relu(), (-shifted).relu()], -1)
    )

    sae = _random_sae(8, kind="standard", dtype=torch.float64)
    f = ((h - sae.b_dec) @ sae.W_enc + sae.b_enc).relu()
    error = f @ sae.W_dec + sae.b_dec - h
    assert error.norm() > 0.1  # a real reconstruction error
    with S.spliced(model, {hook: sae}, error_term=False) as m:
        out, cache = m.run_with_cache(x)
    torch.testing.assert_close(out - clean, error @ net[1].weight.T, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(cache[f"{hook}.hook_sae_recons"], h + error, atol=1e-12, rtol=1e-10)
    with S.spliced(model, {hook: sae}, error_term=True) as m:  # the error term gives it back
        torch.testing.assert_close(m(x), clean, atol=1e-12, rtol=1e-10)
