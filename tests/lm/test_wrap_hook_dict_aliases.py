"""TransformerLens's names in a ``wrap`` language model's ``hook_dict`` (issue 27): further keys of the
same hook points, after the module paths, as TransformerLens's bridge lists its aliases; a point
reachable by two names still fires, records and is listed once.

Checked against the bridge's ``hook_dict`` (same names), hand-written PyTorch hooks (gradients), and
the Attribution Patching notebook's own pattern (a gradient cache built by hand through
``hook_dict``'s aliases, then TransformerLens's ``ActivationCache``) against TransformerLens 4.3's
own bridge on the same weights.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformer_lens import ActivationCache as TLCache

from hooked import HookedModule, checks, lm
from hooked.protocol import hook_key, hook_names
from tests.lm.tiny_models import tiny_bridge, tiny_hf, tiny_tokenizer, tokenizer_folder
from tests.lm.tutorials.runner import reference_bridge

FAMILIES = ("llama", "gpt2", "gpt_neox", "gemma2")


def tiny_wrap(family: str):
    return lm.wrap_lm(tiny_hf(family), tiny_tokenizer(tokenizer_folder()))


def own_names(model) -> list[str]:
    """The hook points' own names (module paths), in hook_dict order."""
    return [k for k, hp in model.hook_dict.items() if hp.name == k]


def ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(4, 64, (2, 6), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_dict_lists_module_paths_then_tl_names_of_the_same_points(family):
    model = tiny_wrap(family)
    hd = model.hook_dict
    keys = list(hd)
    own = own_names(model)
    assert keys[: len(own)] == own  # module paths first, in module order; TL names after
    assert len({id(hp) for hp in hd.values()}) == len(own)  # every point once among them
    aliases = model.hook_name_aliases
    tl = keys[len(own) :]
    assert tl and set(tl) == {a for a, target in aliases.items() if target in hd}
    for name in tl:
        assert hd[name] is hd[aliases[name]] and hd[name].name == aliases[name] != name
    # len, in and iteration agree; mod_dict holds the same objects under the same keys
    assert len(hd) == len(set(keys)) == len(keys) and all(k in hd for k in keys)
    mods = model.mod_dict
    assert all(mods[k] is hp for k, hp in hd.items())
    assert all(mods[path] is m for path, m in model.module.named_modules() if path)
    for name in ("blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.0.hook_q_input"):
        assert name in hd


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tl_names_are_the_bridges(family):
    """Every TransformerLens name wrap lists, the bridge lists (and its value equals the bridge's
    elsewhere: test_wrap_tl_points.py); the bridge's aliases that wrap lacks are named here."""
    wrap, bridge = tiny_wrap(family), tiny_bridge(family)
    w = {k for k, hp in wrap.hook_dict.items() if hp.name != k}
    b = {k for k, hp in bridge.hook_dict.items() if hp.name != k}
    assert w <= set(bridge.hook_dict)
    lacking = {k.split(".")[-1] for k in b - w}
    # hook_attn_in: no such point on wrap; hook_unembed / a rotary model's hook_pos_embed: the bridge's own
    assert lacking <= {"hook_attn_in", "hook_unembed", "hook_pos_embed"}, lacking


def test_a_filter_matching_both_names_of_a_point_attaches_once():
    model = tiny_wrap("llama")
    own = own_names(model)
    x = ids()

    def fired(attach) -> Counter:
        seen: Counter = Counter()
        attach(lambda act, hook: seen.update([hook.name]))
        return seen

    def forward_with(names):
        def attach(fn):
            with model.hooks(fwd_hooks=[(names, fn)]):
                model(x)

        return attach

    by_path = fired(forward_with(own))
    assert len(by_path) > 50  # each point as often as its module runs
    assert fired(forward_with(lambda n: True)) == by_path
    assert fired(lambda fn: model.run_with_hooks(x, fwd_hooks=[(lambda n: True, fn)])) == by_path

    def add_hook(fn):
        model.add_hook(lambda n: True, fn)
        model(x)
        model.reset_hooks()

    assert fired(add_hook) == by_path
    assert model.list_hooks() == {}

    def backward(names):
        def attach(fn):
            with model.hooks(bwd_hooks=[(names, fn)]):
                model(x).logsumexp(-1).sum().backward()

        return attach

    assert fired(backward(lambda n: True)) == fired(backward(own))
    # a cache through a filter matching every name: each point once, under its module path
    _, every = model.run_with_cache(x, names_filter=lambda n: True)
    _, listed = model.run_with_cache(x, names_filter=own)
    assert list(every) == list(listed)
    assert all(torch.equal(every[k], listed[k]) for k in every)


def test_a_filter_in_tl_terms_hands_the_hook_the_tl_name_as_the_bridge(tiny):
    x = tiny["wrap"].to_tokens("the cat sat on the mat")
    for filt in (lambda n: "hook_resid_pre" in n, lambda n: n.startswith("blocks.1.attn.hook_")):
        seen = {}
        for backend in ("wrap", "bridge"):
            model = tiny[backend]
            names: list[str] = []
            model.run_with_hooks(
                x, fwd_hooks=[(filt, lambda act, hook, names=names: names.append(hook.name))]
            )
            seen[backend] = names
        assert all(filt(n) for n in seen["wrap"])
        if filt("blocks.0.hook_resid_pre"):
            assert seen["wrap"] == seen["bridge"] == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
        else:  # blocks.1.attn.hook_*: the TL names of layer 1's attention points, each once
            assert len(seen["wrap"]) == len(set(seen["wrap"])) >= 8
            assert {"blocks.1.attn.hook_z", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_q"} <= set(
                seen["wrap"]
            )


def test_a_cache_of_everything_records_each_point_once_under_its_module_path(tiny):
    model = tiny["wrap"]
    x = model.to_tokens("the cat sat on the mat")
    own = own_names(model)
    _, cache = model.run_with_cache(x)
    assert set(cache) <= set(own) and len(list(cache)) == len(cache)
    assert not any(k.endswith(".hook_result") for k in cache)  # as TransformerLens: only when asked
    _, listed = model.run_with_cache(x, names_filter=[n for n in own if not n.endswith(".hook_result")])
    assert list(cache) == list(listed)
    # TransformerLens's names answer lookups and `in`, as before
    z = model.hook_name_aliases["blocks.1.attn.hook_z"]
    assert "blocks.1.attn.hook_z" in cache and cache["blocks.1.attn.hook_z"] is cache[z]
    assert cache["z", 1] is cache[z] and cache["q_input", 0] is cache["blocks.0.attn.hook_q_input"]
    model.set_use_attn_result(True)
    try:
        _, with_result = model.run_with_cache(x)
    finally:
        model.set_use_attn_result(False)
    assert list(with_result) == [*dict.fromkeys([*with_result])]
    assert sum(k.endswith(".hook_result") for k in with_result) == model.cfg.n_layers


def test_list_hooks_reset_and_the_protocol_see_each_point_once(tiny):
    model = tiny["wrap"]
    path = model.hook_name_aliases["blocks.0.hook_resid_pre"]
    model.add_hook("blocks.0.hook_resid_pre", lambda act, hook: None)
    model.add_hook(path, lambda act, hook: None)
    try:
        for spec in (None, lambda n: True, lambda n: "resid_pre" in n, "blocks.0.hook_resid_pre"):
            listed = model.list_hooks(spec)
            assert list(listed) == [path] and len(listed[path]) == 2
    finally:
        model.reset_hooks()
    assert model.list_hooks() == {} and not model.hook_dict[path].has_hooks()
    own = own_names(model)
    assert hook_names(model) == own
    assert hook_names(model, lambda n: "hook_resid_pre" in n) == [
        model.hook_name_aliases[f"blocks.{i}.hook_resid_pre"] for i in range(2)
    ]
    assert hook_key(model, "blocks.0.hook_resid_pre") == path == hook_key(model, path)
    with pytest.raises(ValueError, match="two names of one hook point"):
        checks.hook_list(model, ["blocks.0.hook_resid_pre", path], "test")


def test_a_model_holding_a_wrapped_lm_lists_each_point_once():
    inner = tiny_wrap("llama")

    class Outer(HookedModule):
        def __init__(self):
            super().__init__()
            self.lm = inner

        def forward(self, x):
            return self.lm(x)

    outer = Outer()
    names = list(outer.hook_dict)
    assert names == [f"lm.{n}" for n in own_names(inner)]
    seen: Counter = Counter()
    outer.run_with_hooks(ids(), fwd_hooks=[(lambda n: True, lambda a, hook: seen.update([hook.name]))])
    assert set(seen) <= set(names) and max(seen.values()) <= 2


# ---------------------------------------------------------------------- the notebook's own pattern
CLEAN = ["the cat sat on the mat", "a dog ran in the city"]
CORRUPT = ["the dog sat on the mat", "a cat ran in the city"]


def metric(logits):
    return (logits[:, -1, 5] - logits[:, -1, 7]).mean()


def not_qkv_input(name: str) -> bool:
    return "_input" not in name


def notebook_caches(model, tokens):
    """The Attribution Patching notebook's ``get_cache_fwd_and_bwd``: backward hooks through a
    filter file gradients under ``hook.name``; then every ``hook_dict`` key whose point has another
    name gets that point's gradient; TransformerLens's ``ActivationCache`` over the dict."""
    model.reset_hooks()
    grads = {}
    model.add_hook(not_qkv_input, lambda g, hook: grads.__setitem__(hook.name, g.detach()), "bwd")
    out, fwd = model.run_with_cache(tokens, names_filter=not_qkv_input)
    metric(out).backward()
    model.reset_hooks()
    for key, hp in model.hook_dict.items():
        if hp.name != key and not_qkv_input(key) and hp.name in grads and key not in grads:
            grads[key] = grads[hp.name]
    return fwd, TLCache(grads, model)


def attributions(model, tokens, corrupt):
    clean, _ = notebook_caches(model, tokens)
    corrupted, grad = notebook_caches(model, corrupt)
    n = model.cfg.n_layers
    out = {
        "pattern": torch.stack(
            [grad["pattern", i] * clean["pattern", i] for i in range(n)]
        ),  # the notebook's attention attribution
        "resid": grad.accumulated_resid(-1, incl_mid=True)
        * (clean.accumulated_resid(-1, incl_mid=True) - corrupted.accumulated_resid(-1, incl_mid=True)),
        "layers": grad.decompose_resid(-1) * (clean.decompose_resid(-1) - corrupted.decompose_resid(-1)),
    }
    for act in ("q", "k", "v", "z"):
        out[act] = torch.stack([grad[act, i] * (clean[act, i] - corrupted[act, i]) for i in range(n)])
    return {k: v.sum(-1) for k, v in out.items()}, grad


@pytest.fixture(scope="module")
def reference(tiny_folder):
    ref = reference_bridge(str(tiny_folder))  # TransformerLens 4.3's own bridge, same weights
    ref.set_use_attn_result(True)
    return ref


def test_the_attribution_notebooks_hand_built_gradient_cache_equals_transformer_lens(tiny, reference):
    wrap = tiny["wrap"]
    tokens, corrupt = reference.to_tokens(CLEAN), reference.to_tokens(CORRUPT)
    assert torch.equal(wrap.to_tokens(CLEAN), tokens)
    want, _ = attributions(reference, tokens, corrupt)
    got, grad = attributions(wrap, tokens, corrupt)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)
    # the gradients themselves, against hand-written PyTorch hooks on the transformers model
    hf = wrap.module
    kept = {}

    def keep(name):
        def hook(t):
            kept[name] = t.detach()

        return hook

    def pre(module, args):
        args[0].register_hook(keep("resid_pre1"))

    def attn(module, args, output):
        output[0].register_hook(keep("attn_out0"))

    handles = [
        hf.model.layers[1].register_forward_pre_hook(pre),
        hf.model.layers[0].self_attn.register_forward_hook(attn),
    ]
    try:
        metric(hf(corrupt).logits).backward()
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(grad["blocks.1.hook_resid_pre"], kept["resid_pre1"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad["blocks.0.hook_attn_out"], kept["attn_out0"], atol=1e-6, rtol=1e-5)


def test_without_the_aliases_the_notebooks_gradient_cache_lacks_tl_names(tiny):
    """What the test above relies on: the module-path gradients alone do not answer
    TransformerLens's names in TransformerLens's own ActivationCache."""
    wrap = tiny["wrap"]
    tokens = wrap.to_tokens(CORRUPT)
    _, grad = notebook_caches(wrap, tokens)
    only_paths = TLCache({k: v for k, v in grad.cache_dict.items() if wrap.hook_dict[k].name == k}, wrap)
    assert "blocks.0.attn.hook_pattern" in grad.cache_dict
    with pytest.raises(KeyError):
        only_paths["pattern", 0]


def test_hooked_hooks_shows_each_tl_name_with_its_points_shape(capsys):
    from hooked import cli

    assert cli.main(["hooks", "tiny-llama"]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line.strip())
    assert rows["blocks.0.hook_resid_pre"] == rows["model.layers.0.hook_in"] != "not run on the example input"
    assert rows["blocks.1.attn.hook_z"] == rows["model.layers.1.self_attn.hook_z"]
