"""``lm.generate``: greedy output equal to transformers' own ``generate`` on every backend, hooks
once per forward, steering only the new tokens or only the prompt (against a cache-free loop by
hand), sampling, end of sequence, dtypes, and the bridge's key-value cache (fixed)."""

from __future__ import annotations

import pytest
import torch

from hooked import HookReturnError, lm
from tests.lm.conftest import TEXTS

BACKENDS = ["hf", "wrap", "bridge"]
HOOKED = ["wrap", "bridge"]


def hf_greedy(hf, batch, n, **kwargs):
    """transformers' own greedy generate: the new tokens only."""
    with torch.no_grad():
        out = hf.generate(**batch, max_new_tokens=n, do_sample=False, **kwargs)
    return out[:, batch["input_ids"].shape[1] :]


def greedy_by_hand(model, ids, n, fwd_hooks_for=None):
    """Greedy decoding without a cache: the whole sequence through ``run_with_hooks`` per token;
    ``fwd_hooks_for(prompt_length)`` gives the hooks."""
    seq = ids
    hooks = fwd_hooks_for(ids.shape[1]) if fwd_hooks_for else []
    with torch.no_grad():
        for _ in range(n):
            logits = lm.logits_of(model.run_with_hooks(seq, fwd_hooks=hooks))
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, ids.shape[1] :]


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_is_transformers_greedy_batched_and_one_by_one(tiny, backend):
    hf, model = tiny["hf"], tiny[backend]
    batch = lm.tokenize(hf, TEXTS, padding_side="left")
    want = hf_greedy(hf, batch, 8)
    got = lm.generate(model, TEXTS, 8, return_tokens=True)
    assert torch.equal(got.tokens, want)
    assert got.prompt["input_ids"].shape == batch["input_ids"].shape
    assert got.texts == lm.generate(model, TEXTS, 8)
    for text, row in zip(TEXTS, want):
        ids = lm.to_tokens(hf, text)
        alone = hf_greedy(hf, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 8)
        mine = lm.generate(model, text, 8, return_tokens=True)
        assert torch.equal(mine.tokens, alone)
        assert torch.equal(mine.tokens[0], row[: mine.tokens.shape[1]])  # padding changes nothing
        assert mine.texts[0] == lm.generate(model, text, 8)  # a string in, a string out


@pytest.mark.parametrize("backend", HOOKED)
def test_a_right_padded_batch_or_ids_give_the_same_tokens(tiny, backend):
    model = tiny[backend]
    left = lm.generate(model, TEXTS, 6, return_tokens=True)
    right = lm.generate(model, lm.tokenize(model, TEXTS, padding_side="right"), 6, return_tokens=True)
    assert torch.equal(left.tokens, right.tokens)
    assert torch.equal(left.prompt["input_ids"], right.prompt["input_ids"])  # re-padded on the left
    ids = lm.to_tokens(model, TEXTS[:1] * 2)
    assert torch.equal(lm.generate(model, ids, 6, return_tokens=True).tokens, left.tokens[[0, 0]])


@pytest.mark.parametrize("backend", HOOKED)
def test_hooks_fire_once_per_forward_and_know_the_pass(tiny, backend):
    model = tiny[backend]
    name = lm.residual_hooks(model)[1]
    seen = []

    def record(act, hook):
        seen.append((lm.generation_pass(), tuple(act.shape)))

    out = lm.generate(model, TEXTS[:2], 5, fwd_hooks=[(name, record)], stop_at_eos=False, return_tokens=True)
    width = out.prompt["input_ids"].shape[1]
    assert out.tokens.shape == (2, 5)
    assert seen == [(0, (2, width, 32))] + [(k, (2, 1, 32)) for k in range(1, 5)]
    assert lm.generation_pass() is None
    assert not any(hp.has_hooks() for hp in model.hook_dict.values())  # all removed
    seen.clear()
    lm.generate(model, TEXTS[:2], 3, fwd_hooks=[(name, record)], stop_at_eos=False, use_cache=False)
    assert [s[1][1] for s in seen] == [width, width + 1, width + 2]  # no cache: whole sequences


@pytest.mark.parametrize("backend", HOOKED)
@pytest.mark.parametrize("where", ["new tokens", "prompt"])
def test_steering_only_the_new_tokens_or_only_the_prompt(tiny, backend, where):
    model = tiny[backend]
    name = lm.residual_hooks(model)[1]
    vector = 2.0 * torch.randn(32, generator=torch.Generator().manual_seed(3))

    def steer(act, hook):
        return act + vector

    wrapper = lm.on_new_tokens if where == "new tokens" else lm.on_prompt
    ids = lm.to_tokens(model, TEXTS[0])
    got = lm.generate(
        model, ids, 8, fwd_hooks=[(name, wrapper(steer))], stop_at_eos=False, return_tokens=True
    )

    def by_hand(prompt_length):  # the same edit on whole sequences: positions >= / < the prompt
        def hook(act, hook):
            out = act.clone()
            chosen = slice(prompt_length, None) if where == "new tokens" else slice(0, prompt_length)
            out[:, chosen] += vector
            return out

        return [(name, hook)]

    want = greedy_by_hand(model, ids, 8, by_hand)
    plain = greedy_by_hand(model, ids, 8)
    assert torch.equal(got.tokens, want)
    assert not torch.equal(want, plain)  # the steering does something
    if where == "new tokens":
        assert got.tokens[0, 0] == plain[0, 0]  # the first new token comes from the prompt pass


def test_every_forward_of_generate_is_a_pass_of_its_own(tiny):
    """``hook.step`` counts calls within one forward: each of generate's forwards starts again at 0
    (also when the model was run before), so ``at_step(0, fn)`` fires once per forward and a hook
    point that runs once per forward never reaches step 1 (reported, once per forward)."""
    import warnings

    from hooked import at_step

    model = tiny["wrap"]
    name = lm.residual_hooks(model)[1]
    ids = lm.to_tokens(model, TEXTS[0])
    model.add_perma_hook(name, lambda a, hook: None)  # a hook attached before: steps are live
    try:
        model(ids)
        model.module(ids)
        seen = []
        hooks = [(name, at_step(0, lambda a, hook: seen.append((lm.generation_pass(), hook.step))))]
        lm.generate(model, TEXTS[0], 4, fwd_hooks=hooks, stop_at_eos=False)
        assert seen == [(k, 0) for k in range(4)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lm.generate(
                model, TEXTS[0], 3, fwd_hooks=[(name, at_step(1, lambda a, hook: a * 0))], stop_at_eos=False
            )
        told = [str(w.message) for w in caught if str(w.message).startswith("at_step")]
        assert len(told) == 3 and all(name in t and "[1]" in t for t in told)
    finally:
        model.reset_hooks(including_permanent=True)


def test_hook_wrappers_outside_generate(tiny):
    model = tiny["wrap"]
    name = lm.residual_hooks(model)[0]
    calls = []
    hooks = [
        (name, lm.on_prompt(lambda a, hook: calls.append("prompt"))),
        (name, lm.on_new_tokens(calls.append)),
    ]
    model.run_with_hooks(lm.to_tokens(model, TEXTS[0]), fwd_hooks=hooks)
    assert calls == ["prompt"]  # a plain forward is all prompt
    with pytest.raises(TypeError, match="on_prompt needs a hook function"):
        lm.on_prompt("steer")


@pytest.mark.parametrize("backend", HOOKED)
def test_without_a_cache_the_same_tokens(tiny, backend):
    model = tiny[backend]
    cached = lm.generate(model, TEXTS, 7, return_tokens=True)
    uncached = lm.generate(model, TEXTS, 7, use_cache=False, return_tokens=True)
    assert torch.equal(cached.tokens, uncached.tokens)


def test_end_of_sequence_stops_a_row_as_transformers_does(tiny):
    hf, model = tiny["hf"], tiny["wrap"]
    batch = lm.tokenize(hf, TEXTS, padding_side="left")
    free = hf_greedy(hf, batch, 8, eos_token_id=63)  # 63 = "can": say it never appears
    assert not (free == 63).any()
    eos = int(free[0, 2])  # row 0's third token ends it
    want = hf_greedy(hf, batch, 8, eos_token_id=eos)
    got = lm.generate(model, TEXTS, 8, eos_token_id=eos, return_tokens=True)
    assert torch.equal(got.tokens, want[:, : got.tokens.shape[1]])
    assert got.lengths[0] == 3 and (got.tokens[0, 3:] == 0).all()
    assert got.texts[0] == hf.tokenizer.decode(free[0, :2])  # the end-of-sequence token is not text
    if bool((want == eos).any(dim=1).all()):
        assert got.tokens.shape[1] < 8  # every row ended: no more forwards


def test_sampling_is_seeded_and_top_k_1_is_greedy(tiny):
    model = tiny["wrap"]
    greedy = lm.generate(model, TEXTS, 6, stop_at_eos=False, return_tokens=True).tokens

    def sample(**kwargs):
        return lm.generate(model, TEXTS, 6, do_sample=True, stop_at_eos=False, return_tokens=True, **kwargs)

    assert torch.equal(sample(top_k=1, seed=1).tokens, greedy)
    assert torch.equal(sample(top_p=1e-6, seed=1).tokens, greedy)
    hot = sample(temperature=5.0, seed=1).tokens
    assert torch.equal(hot, sample(temperature=5.0, seed=1).tokens)
    assert not torch.equal(hot, sample(temperature=5.0, seed=2).tokens)
    assert not torch.equal(hot, greedy)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        lm.generate(model, TEXTS, 2, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        lm.generate(model, TEXTS, 0)


def test_the_hf_backend_takes_no_hooks(tiny):
    with pytest.raises(ValueError, match="no hook points"):
        lm.generate(tiny["hf"], TEXTS, 2, fwd_hooks=[("x", lambda a, hook: None)])


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # TransformerLens's call
def test_the_bridges_own_cached_generate_is_right(tiny):
    bridge, hf = tiny["bridge"], tiny["hf"]
    ids = lm.to_tokens(hf, TEXTS[2])
    want = hf_greedy(hf, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 8)
    for kv in (True, False):
        out = bridge.generate(ids, max_new_tokens=8, do_sample=False, use_past_kv_cache=kv, verbose=False)
        assert torch.equal(out[:, ids.shape[1] :], want), f"use_past_kv_cache={kv}"
    import transformers

    cache = transformers.DynamicCache(config=bridge.original_model.config)
    with torch.no_grad():
        bridge(ids, cache=cache, use_cache=True)
    assert cache.get_seq_length() == ids.shape[1]  # the attention stored its keys and values


@pytest.mark.parametrize("backend", HOOKED)
def test_bfloat16_replacements_of_another_dtype_fail_naming_the_hook(tiny_folder, backend):
    model = lm.load(tiny_folder, backend=backend, dtype="bfloat16")
    name = lm.residual_hooks(model)[1]
    vector = torch.randn(32)  # float32

    def steer(act, hook):
        return act + vector  # promotes to float32

    ids = lm.to_tokens(model, TEXTS[0])
    with pytest.raises(HookReturnError, match=rf"{name}.*float32.*bfloat16"):
        model.run_with_hooks(ids, fwd_hooks=[(name, steer)])
    with pytest.raises(HookReturnError, match=name):
        lm.generate(model, TEXTS, 3, fwd_hooks=[(name, lm.on_new_tokens(steer))])
    assert not any(hp.has_hooks() for hp in model.hook_dict.values())
    cast = lm.generate(model, TEXTS, 4, fwd_hooks=[(name, lambda a, hook: a + vector.to(a.dtype))])
    assert len(cast) == len(TEXTS)


def test_bfloat16_greedy_is_transformers_greedy(tiny_folder):
    hf = lm.load(tiny_folder, backend="hf", dtype="bfloat16")
    model = lm.wrap_lm(hf, hf.tokenizer)
    batch = lm.tokenize(hf, TEXTS)
    assert torch.equal(lm.generate(model, TEXTS, 6, return_tokens=True).tokens, hf_greedy(hf, batch, 6))


# ---------------------------------------------------------------------- SmolLM2 (slow)
PROMPTS = ["The weather today is", "Once upon a time, in a small village, there was", "Paris is"]


@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.parametrize("backend", HOOKED)
def test_smollm2_greedy_is_transformers_greedy(smol, backend):
    hf, model = smol["hf"], smol[backend]
    batch = lm.tokenize(hf, PROMPTS)
    want = hf_greedy(hf, batch, 12)
    assert torch.equal(lm.generate(model, PROMPTS, 12, return_tokens=True).tokens, want)
    for prompt, row in zip(PROMPTS, want):
        assert torch.equal(lm.generate(model, prompt, 12, return_tokens=True).tokens[0], row)
    assert lm.generate(model, "The weather today is", 12) == " 2022-01-01 "


@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
def test_smollm2_bridge_generate_with_its_cache_is_right(smol):
    bridge = smol["bridge"]
    cached = bridge.generate("The weather today is", max_new_tokens=12, do_sample=False, verbose=False)
    uncached = bridge.generate(
        "The weather today is", max_new_tokens=12, do_sample=False, use_past_kv_cache=False, verbose=False
    )
    assert cached == uncached == "The weather today is a mix of both.\n\nThe weather today is a"
