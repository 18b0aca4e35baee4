"""The properties ``test_lm.py`` checks on SmolLM2, on the tiny random Llama (default tier, no download).

None of them needs a model that knows anything: the bridge reproduces the transformers logits,
identity hooks change nothing, the bridge and ``hooked.wrap`` see one residual stream, patching
obeys causality (a position before the change, or one the logits do not read, changes nothing),
and the analyses take the model through the protocol. ``test_lm.py`` keeps the same checks on the
real model (``-m smollm2``).
"""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from hooked.protocol import check_hookable, collect_activations
from interventions.patching import patch, patching_sweep
from papers.lm.prompt_patching import logit_diff
from tests.lm.conftest import word_tokenizer

CLEAN, CORRUPT = "the cat sat on the big mat", "the dog sat on the big mat"  # differ at position 1
ANSWER, WRONG = "rug", "house"


@pytest.fixture(scope="module")
def models(tiny_folder):
    """``{"raw": transformers model, "wrapped": hooked.wrap of it, "bridge": its own copy}``; eager
    attention, what the bridge runs (and what wrap switches to while attention patterns are hooked)."""
    raw = lm.load(tiny_folder, backend="hf")
    raw.set_attn_implementation("eager")
    return {"raw": raw, "wrapped": lm.wrap_lm(raw, raw.tokenizer), "bridge": lm.load(tiny_folder)}


@pytest.fixture(scope="module")
def prompts(models):
    raw = models["raw"]
    clean, corrupt = lm.to_tokens(raw, CLEAN), lm.to_tokens(raw, CORRUPT)
    assert clean.shape == corrupt.shape == (1, 7) and (clean != corrupt).sum() == 1
    return clean, corrupt, lm.token_id(raw, ANSWER), lm.token_id(raw, WRONG)


def test_bridge_logits_match_raw_transformers(models, prompts):
    clean, corrupt, _, _ = prompts
    tokens = torch.cat([clean, corrupt])
    with torch.no_grad():
        want = models["raw"](tokens).logits
        got = models["bridge"](tokens)
    assert got.shape == want.shape == (2, 7, 64)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert "blocks.1.hook_resid_post" in models["bridge"].hook_dict


def test_wrap_identity_hooks_leave_logits_bit_identical(models, prompts):
    raw, wrapped = models["raw"], models["wrapped"]
    clean = prompts[0]
    with torch.no_grad():
        want = raw(clean).logits
        every = [(lambda name: True, lambda a, hook: a.clone())]
        assert torch.equal(wrapped.run_with_hooks(clean, fwd_hooks=every), want)
        logits, cache = wrapped.run_with_cache(clean)
    assert torch.equal(logits, want)
    assert len(cache) > 40 and sum(len(m._forward_hooks) for m in raw.modules()) == 0


def test_bridge_and_wrap_see_the_same_residual_stream(models, prompts):
    bridge, wrapped = models["bridge"], models["wrapped"]
    hb, hw = lm.residual_hooks(bridge), lm.residual_hooks(wrapped)
    assert len(hb) == len(hw) == 3
    with torch.no_grad():
        _, cb = bridge.run_with_cache(prompts[0], names_filter=hb)
        _, cw = wrapped.run_with_cache(prompts[0], names_filter=hw)
    for b, w in zip(hb, hw):
        torch.testing.assert_close(cb[b], cw[w], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["bridge", "wrapped"])
def test_patching_clean_into_itself_changes_nothing(which, models, prompts):
    model = models[which]
    clean, _, answer, wrong = prompts
    metric = logit_diff(answer, wrong)
    hooks = lm.residual_hooks(model)
    with torch.no_grad():
        want = metric(model(clean))
    grid = patching_sweep(model, clean, clean, hooks, metric, positions=[0, 1, 6])
    torch.testing.assert_close(grid, want.expand(3, 3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["bridge", "wrapped"])
def test_patching_the_whole_last_layer_reproduces_the_clean_logits(which, models, prompts):
    model = models[which]
    clean, corrupt, _, _ = prompts
    with torch.no_grad():
        want = model(clean)
        got = patch(model, corrupt, clean, lm.residual_hooks(model)[-1])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["bridge", "wrapped"])
def test_patching_known_cells(which, models, prompts):
    model = models[which]
    clean, corrupt, answer, wrong = prompts
    metric = logit_diff(answer, wrong)
    hooks = lm.residual_hooks(model)
    grid = patching_sweep(model, corrupt, clean, [hooks[0], hooks[-1]], metric, positions=[0, 1, 6])
    with torch.no_grad():
        clean_ld, corrupt_ld = metric(model(clean)).item(), metric(model(corrupt)).item()
    assert abs(clean_ld - corrupt_ld) > 1e-2  # the prompts differ in what the model reads off them
    # position 0 is the same token in both prompts: patching it changes nothing, at any layer
    torch.testing.assert_close(grid[:, 0], torch.full((2,), corrupt_ld), atol=1e-4, rtol=0)
    # before the first layer only the changed token matters: it restores the clean run fully
    assert grid[0, 1].item() == pytest.approx(clean_ld, abs=1e-4)
    assert grid[0, 2].item() == pytest.approx(corrupt_ld, abs=1e-4)
    # after the last layer only the last position reaches the logits, and restores them fully
    assert grid[1, 2].item() == pytest.approx(clean_ld, abs=1e-4)
    assert grid[1, 1].item() == pytest.approx(corrupt_ld, abs=1e-4)


def test_analyses_take_the_lm_through_the_protocol(models, prompts):
    from analyses.probes import layer_probes, ridge_probe_analysis
    from papers.lm.prompt_patching import residual_patching

    clean, corrupt, answer, wrong = prompts
    for model in (models["bridge"], models["wrapped"]):
        check_hookable(model)
        hooks = lm.residual_hooks(model)
        acts = collect_activations(model, [clean, corrupt], [hooks[1]])
        assert acts[hooks[1]].shape == (2, 7, 32)
        result = residual_patching(model, clean, corrupt, answer, wrong, hooks=hooks[-1:], positions=[6])
        assert result.restored.tolist() == [[pytest.approx(1.0, abs=1e-3)]]
        # probes of which prompt a row is, on the residual stream: a perfectly separable toy task
        tokens = torch.cat([clean.repeat(3, 1), corrupt.repeat(3, 1)])
        labels = torch.tensor([0] * 3 + [1] * 3)
        probes = layer_probes(model, tokens, labels, [hooks[0], hooks[-1]], folds=3, batch_size=6)
        assert probes.results["mean over tokens"].accuracy.tolist() == [1.0, 1.0]
        assert probes.results["last token"].accuracy[0] < 1.0  # the last token is the same in both
        # the registered analysis, labels = the token at position 1 ("cat" / "dog")
        found = ridge_probe_analysis(model, hooks[-1], tokens, labels="input:1", pool="last", folds=3)
        assert found["n"] == 6 and found["d"] == 32 and found["accuracy"] == 1.0


def test_a_local_hf_folder_loads_offline_with_every_backend(tmp_path):
    from hooked.models.lm import tiny_llama_hf
    from hooked.wrapping import Wrapped

    hf = tiny_llama_hf()
    hf.save_pretrained(tmp_path)
    with pytest.raises(lm.LMLoadError, match=f"{tmp_path} has no tokenizer .*tokenizer.save_pretrained"):
        lm.load(tmp_path, backend="hf")  # no tokenizer yet: the error names the folder and what to do
    word_tokenizer().save_pretrained(tmp_path)
    tokens = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        want = hf(tokens).logits
        for backend in ("hf", "wrap", "bridge"):
            model = lm.load(tmp_path, backend=backend)
            got = lm.logits_of(model(tokens))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            assert model.tokenizer is not None
            assert isinstance(model, Wrapped) == (backend == "wrap")


def test_tokens_and_answers(models):
    raw = models["raw"]
    ids = lm.to_tokens(raw, ["the cat sat on the mat", "a dog ran to the house"])
    assert ids.shape == (2, 6) and ids.dtype == torch.long
    assert lm.to_tokens(raw, "cat", bos=True)[0, 0] == raw.tokenizer.bos_token_id
    with pytest.raises(ValueError, match="different lengths"):
        lm.to_tokens(raw, ["the cat sat", "the"])
    assert lm.to_tokens(raw, ["the cat sat on", "one two three four five"], length=2).shape == (2, 2)
    with pytest.raises(ValueError, match="not one"):
        lm.token_id(raw, "big cat")
