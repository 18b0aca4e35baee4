"""TransformerLens's hook points inside attention, the norms and the MLP on ``wrap``
(``hook_q/k/v``, ``hook_rot_q/k``, ``hook_attn_scores``, ``hook_result``, ``ln*.hook_scale`` /
``hook_normalized``, ``mlp.hook_pre`` / ``hook_pre_linear`` / ``hook_post``), ``stop_at_layer`` and
``tl_parameters``: values against TransformerLens 4.3's own bridge on the same weights, edits
against hand-written PyTorch hooks on an unhooked copy of the transformers model (each family's
module layout written out here by hand, independent of ``hooked.lm.names.layouts``)."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from hooked.lm.backends.forward import LMForward
from tests.lm.tiny_models import tiny_bridge, tiny_hf, tiny_tokenizer, tokenizer_folder

FAST = ["llama"]
SLOW = [pytest.param(f, marks=pytest.mark.slow) for f in ("gpt2", "gpt_neox", "gemma2")]
FAMILIES = FAST + SLOW
IDS = torch.tensor([[1, 5, 6, 7, 8, 9, 10], [1, 11, 12, 13, 14, 15, 16]])
LAYER = 1
POINTS = ("hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_attn_scores", "hook_result")
NORMS = ("hook_scale", "hook_normalized")
MLP = ("hook_pre", "hook_pre_linear", "hook_post")


@pytest.fixture(scope="module")
def models():
    made = {}

    def get(family):
        if family not in made:
            made[family] = (
                lm.wrap_lm(tiny_hf(family), tiny_tokenizer(tokenizer_folder())),
                tiny_bridge(family),
                tiny_hf(family),  # the unhooked reference for hand-written hooks
            )
        return made[family]

    return get


def new_names(wrap) -> list[str]:
    """The TransformerLens names of the hook points this test is about, that ``wrap`` has."""
    out = []
    for name in wrap.hook_name_aliases:
        last = name.rsplit(".", 1)[-1]
        if (".attn." in name and last in POINTS) or last in NORMS or (".mlp." in name and last in MLP):
            out.append(name)
    return out


# ---------------------------------------------------------------------- the family layouts, by hand
def hand(hf, family: str):
    """(layers, attention, q/k/v projection and its columns, output projection, ln1, MLP parts)."""
    layers = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}.get(family, "model.layers")
    block = hf.get_submodule(f"{layers}.{LAYER}")
    cfg = hf.config
    n = cfg.num_attention_heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // n
    if family == "gpt2":
        attn = block.attn
        width = n * d

        def cols(kind, head):
            start = "qkv".index(kind) * width + head * d
            return attn.c_attn, slice(start, start + d)

        return dict(
            cols=cols, o_proj=attn.c_proj, ln1=block.ln_1, pre=block.mlp.c_fc, post=block.mlp.c_proj, d=d
        )
    if family == "gpt_neox":
        attn = block.attention

        def cols(kind, head):
            start = head * 3 * d + "qkv".index(kind) * d
            return attn.query_key_value, slice(start, start + d)

        mlp = block.mlp
        return dict(
            cols=cols,
            o_proj=attn.dense,
            ln1=block.input_layernorm,
            pre=mlp.dense_h_to_4h,
            post=mlp.dense_4h_to_h,
            d=d,
        )
    attn = block.self_attn

    def cols(kind, head):
        return getattr(attn, f"{kind}_proj"), slice(head * d, (head + 1) * d)

    mlp = block.mlp
    return dict(
        cols=cols,
        o_proj=attn.o_proj,
        ln1=block.input_layernorm,
        pre=mlp.gate_proj,
        pre_linear=mlp.up_proj,
        post=mlp.down_proj,
        d=d,
    )


def logits_with(hf, hooks) -> torch.Tensor:
    """``hf``'s logits with PyTorch hooks ``[(module, "fwd" | "pre", fn)]`` attached for one forward."""
    handles = [
        (m.register_forward_hook(fn) if kind == "fwd" else m.register_forward_pre_hook(fn))
        for m, kind, fn in hooks
    ]
    try:
        with torch.no_grad():
            return hf(IDS).logits
    finally:
        for h in handles:
            h.remove()


def wrap_logits(wrap, name, fn) -> torch.Tensor:
    with torch.no_grad():
        return wrap.run_with_hooks(IDS, fwd_hooks=[(name, fn)])


def kv_head(hf, head: int) -> int:
    cfg = hf.config
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    return head // (cfg.num_attention_heads // n_kv)


# ---------------------------------------------------------------------- values, names, identity
@pytest.mark.parametrize("family", FAMILIES)
def test_values_equal_the_bridge(models, family):
    wrap, bridge, _ = models(family)
    names = new_names(wrap)
    kinds = {n.rsplit(".", 1)[-1] for n in names}
    rotary = family != "gpt2"
    assert kinds >= {"hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_result", *NORMS}
    assert kinds >= {"hook_pre", "hook_post"} and ("hook_rot_q" in kinds) == rotary
    assert ("hook_pre_linear" in kinds) == (family in ("llama", "gemma2"))  # gated MLPs
    assert set(names) <= set(bridge.hook_dict)  # TransformerLens's own names, nothing invented
    with torch.no_grad():
        logits, cache = wrap.run_with_cache(IDS, names_filter=names)
        ref_logits, ref = bridge.run_with_cache(IDS, names_filter=names)
    torch.testing.assert_close(logits, ref_logits)
    unfired = {n for n in names if n not in ref}
    # TransformerLens's GPT-NeoX attention has hook_rot_q / hook_rot_k but never fires them
    assert {n.rsplit(".", 1)[-1] for n in unfired} <= (
        {"hook_rot_q", "hook_rot_k"} if family == "gpt_neox" else set()
    )
    for name in names:
        if name in ref:
            assert cache[name].shape == ref[name].shape, name
            torch.testing.assert_close(cache[name], ref[name], atol=2e-6, rtol=1e-5, msg=name)
    n_kv = getattr(wrap.module.config, "num_key_value_heads", None) or wrap.cfg.n_heads
    assert cache[f"blocks.{LAYER}.attn.hook_k"].shape[2] == n_kv  # grouped-query: key-value heads
    assert cache[f"blocks.{LAYER}.attn.hook_q"].shape[2] == wrap.cfg.n_heads
    # hook_result summed over heads plus the output bias is what attention adds (hook_attn_out)
    with torch.no_grad():
        _, out = wrap.run_with_cache(
            IDS, names_filter=[f"blocks.{LAYER}.attn.hook_result", "blocks.1.hook_attn_out"]
        )
    o_proj = hand(wrap.module, family)["o_proj"]
    bias = o_proj.bias if getattr(o_proj, "bias", None) is not None else 0
    if family != "gemma2":  # Gemma 2 norms attention's output before adding it
        torch.testing.assert_close(
            out[f"blocks.{LAYER}.attn.hook_result"].sum(-2) + bias,
            out["blocks.1.hook_attn_out"],
            atol=1e-6,
            rtol=1e-5,
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_rotated_queries_are_the_model_rotary_of_hook_q(models, family):
    """hook_rot_q / hook_rot_k are hook_q / hook_k rotated by the model's own rotary function
    (checked against transformers' functions, independent of the bridge, which on GPT-NeoX never
    fires them)."""
    if family == "gpt2":
        pytest.skip("GPT-2 has learned positions: no rotary hook points")
    wrap, _, hf = models(family)
    names = [f"blocks.{LAYER}.attn.hook_{k}" for k in ("q", "k", "rot_q", "rot_k")]
    with torch.no_grad():
        _, cache = wrap.run_with_cache(IDS, names_filter=names)
        base = hf.get_submodule({"gpt_neox": "gpt_neox"}.get(family, "model"))
        position_ids = torch.arange(IDS.shape[1])[None]
        cos, sin = base.rotary_emb(cache[names[0]], position_ids)
    module = __import__(type(hf).__module__, fromlist=["apply_rotary_pos_emb"])
    q, k = (cache[n].transpose(1, 2) for n in names[:2])  # [batch, head, pos, d_head]
    r = cos.shape[-1]
    q_rot, k_rot = module.apply_rotary_pos_emb(q[..., :r], k[..., :r], cos, sin)
    q_rot, k_rot = torch.cat([q_rot, q[..., r:]], -1), torch.cat([k_rot, k[..., r:]], -1)
    torch.testing.assert_close(cache[names[2]], q_rot.transpose(1, 2))
    torch.testing.assert_close(cache[names[3]], k_rot.transpose(1, 2))


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_returning_their_input_leave_logits_bit_identical(models, family):
    wrap, _, _ = models(family)
    names = new_names(wrap)
    with torch.no_grad():
        plain = wrap(IDS)
        same = wrap.run_with_hooks(IDS, fwd_hooks=[(n, lambda act, hook: act) for n in names])
        copied = wrap.run_with_hooks(IDS, fwd_hooks=[(n, lambda act, hook: act.clone()) for n in names])
        _, cache = wrap.run_with_cache(IDS)  # names_filter=None: every point but hook_result (TL's default)
        wrap.set_use_attn_result(True)
        try:
            _, with_result = wrap.run_with_cache(IDS)
        finally:
            wrap.set_use_attn_result(False)
    assert torch.equal(plain, same) and torch.equal(plain, copied)  # equal values: the model's own output
    results = {wrap.hook_name_aliases[n] for n in names if n.endswith("hook_result")}
    assert results and not results & set(cache) and set(cache) | results == set(with_result)
    assert set(wrap.hook_name_aliases[n] for n in names) <= set(with_result)
    assert not wrap.cfg.use_attn_result
    # nothing stays attached to the transformers modules once the hooks are removed
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in wrap.module.modules())
    assert wrap.module.config._attn_implementation in ("sdpa", "eager")


def test_filters_in_transformer_lens_terms_match_the_new_points(models):
    wrap, _, _ = models("llama")
    for suffix in ("hook_q", "hook_attn_scores", "hook_result", "hook_scale", "hook_pre"):
        with torch.no_grad():
            _, cache = wrap.run_with_cache(IDS, names_filter=lambda n, s=suffix: n.endswith(s))
        tl = [n for n in wrap.hook_name_aliases if n.endswith(suffix)]
        assert len(tl) >= 2 and all(n in cache for n in tl), suffix
        assert set(cache) == {wrap.hook_name_aliases[n] for n in tl}, suffix
    seen = []

    def tl_filter(name):  # asks in TransformerLens's terms: the hook sees those names
        return name.startswith("blocks.") and name.endswith(("hook_rot_k", "ln1.hook_normalized"))

    with torch.no_grad():
        wrap.run_with_hooks(IDS, fwd_hooks=[(tl_filter, lambda a, hook: seen.append(hook.name))])
    assert seen == [
        "blocks.0.ln1.hook_normalized",
        "blocks.0.attn.hook_rot_k",
        "blocks.1.ln1.hook_normalized",
        "blocks.1.attn.hook_rot_k",
    ]
    # a filter over one block (what the bridge needs gates for) takes the new points of that block
    with torch.no_grad():
        _, cache = wrap.run_with_cache(IDS, names_filter=lambda n: n.startswith("blocks.0.attn."))
    assert "blocks.0.attn.hook_result" in cache and "blocks.0.attn.hook_rot_q" in cache
    for tl in (
        "blocks.0.attn.hook_q",
        "blocks.1.ln1.hook_scale",
        "blocks.1.mlp.hook_pre",
        "ln_final.hook_normalized",
    ):
        view = wrap  # attribute access, as TransformerLens code reaches hook points
        for part in tl.split(".")[:-1]:
            view = (
                view.blocks[int(part)]
                if part.isdigit()
                else (view if part == "blocks" else getattr(view, part))
            )
        assert getattr(view, tl.rsplit(".", 1)[1]) is wrap.hook_dict[wrap.hook_name_aliases[tl]], tl
    assert lm.act_name(wrap, "attn_scores", 1) == wrap.hook_name_aliases["blocks.1.attn.hook_attn_scores"]
    assert lm.act_name(wrap, "scale", 0, "ln2") == wrap.hook_name_aliases["blocks.0.ln2.hook_scale"]


# ---------------------------------------------------------------------- edits against hand-written hooks
@pytest.mark.parametrize("family", FAMILIES)
def test_editing_q_k_v_equals_editing_the_projection_output(models, family):
    wrap, _, hf = models(family)
    parts = hand(hf, family)
    # one shift per position (a key shifted alike at every position would change no probability)
    delta = torch.randn(IDS.shape[1], parts["d"], generator=torch.Generator().manual_seed(0))
    for kind, head in (("q", 2), ("k", 1), ("v", 1)):
        module, cols = parts["cols"](kind, head)

        def by_hand(m, args, out, cols=cols):
            out = out.clone()
            out[..., cols] += delta
            return out

        def edit(act, hook, head=head):
            act = act.clone()
            act[:, :, head] += delta
            return act

        got = wrap_logits(wrap, f"blocks.{LAYER}.attn.hook_{kind}", edit)
        want = logits_with(hf, [(module, "fwd", by_hand)])
        torch.testing.assert_close(got, want, msg=kind)
        assert not torch.allclose(got, wrap(IDS)), kind


def _values(hf, family, store):
    """A forward hook that keeps the values (``[batch, pos, kv_head, d_head]``) the model computes."""
    parts = hand(hf, family)
    module, _ = parts["cols"]("v", 0)
    n_kv = getattr(hf.config, "num_key_value_heads", None) or hf.config.num_attention_heads

    def keep(m, args, out):
        heads = [out[..., parts["cols"]("v", h)[1]] for h in range(n_kv)]
        store["v"] = torch.stack(heads, dim=2)

    return module, "fwd", keep


def _replace_head_z(hf, family, head, z_of):
    """A pre-hook on the output projection putting ``z_of()`` (``[batch, pos, d_head]``) in head ``head``."""
    parts = hand(hf, family)
    d = parts["d"]

    def put(m, args):
        z = args[0].clone()
        z[..., head * d : (head + 1) * d] = z_of()
        return (z,)

    return parts["o_proj"], "pre", put


@pytest.mark.parametrize("family", FAMILIES)
def test_editing_scores_and_rotated_queries_equals_the_attention_by_hand(models, family):
    wrap, _, hf = models(family)
    head = 2
    kv = kv_head(hf, head)
    store: dict = {}
    n = IDS.shape[1]

    # scores: head attends only to the first key -> its output is the first position's value
    def only_first(act, hook):
        act = act.clone()
        act[:, head, :, 1:] = torch.finfo(act.dtype).min
        return act

    got = wrap_logits(wrap, f"blocks.{LAYER}.attn.hook_attn_scores", only_first)
    want = logits_with(
        hf,
        [
            _values(hf, family, store),
            _replace_head_z(hf, family, head, lambda: store["v"][:, :1, kv].expand(-1, n, -1)),
        ],
    )
    torch.testing.assert_close(got, want)
    if family == "gpt2":
        return
    # rotated queries of a head zeroed: every score 0 -> uniform over the keys it may see
    cumulative_mean = lambda: store["v"][:, :, kv].cumsum(1) / torch.arange(1, n + 1)[None, :, None]  # noqa: E731

    def zero_head(act, hook):
        act = act.clone()
        act[:, :, head] = 0
        return act

    got = wrap_logits(wrap, f"blocks.{LAYER}.attn.hook_rot_q", zero_head)
    want = logits_with(hf, [_values(hf, family, store), _replace_head_z(hf, family, head, cumulative_mean)])
    torch.testing.assert_close(got, want)
    # rotated keys of a key-value head zeroed: every query head that reads it attends uniformly
    group = [h for h in range(wrap.cfg.n_heads) if kv_head(hf, h) == kv]

    def zero_kv(act, hook):
        act = act.clone()
        act[:, :, kv] = 0
        return act

    got = wrap_logits(wrap, f"blocks.{LAYER}.attn.hook_rot_k", zero_kv)
    want = logits_with(
        hf, [_values(hf, family, store)] + [_replace_head_z(hf, family, h, cumulative_mean) for h in group]
    )
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_editing_hook_result_equals_editing_the_output_projection(models, family):
    wrap, _, hf = models(family)
    head = 1

    def zero(act, hook):
        act = act.clone()
        act[:, :, head] = 0
        return act

    got = wrap_logits(wrap, f"blocks.{LAYER}.attn.hook_result", zero)
    want = logits_with(hf, [_replace_head_z(hf, family, head, lambda: 0.0)])
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, wrap(IDS))


@pytest.mark.parametrize("family", FAMILIES)
def test_editing_norm_scale_and_normalized_equals_editing_the_norm_output(models, family):
    wrap, _, hf = models(family)
    ln = hand(hf, family)["ln1"]
    gemma = family == "gemma2"
    weight = (1 + ln.weight) if gemma else ln.weight
    bias = getattr(ln, "bias", None)
    bias = 0 if bias is None else bias
    delta = torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(1))

    got = wrap_logits(wrap, f"blocks.{LAYER}.ln1.hook_scale", lambda act, hook: act * 2)
    want = logits_with(hf, [(ln, "fwd", lambda m, a, out: (out - bias) / 2 + bias)])
    torch.testing.assert_close(got, want)
    got = wrap_logits(wrap, f"blocks.{LAYER}.ln1.hook_normalized", lambda act, hook: act + delta)
    want = logits_with(hf, [(ln, "fwd", lambda m, a, out: out + weight * delta)])
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_editing_mlp_pre_and_post_equals_editing_the_mlp_projections(models, family):
    wrap, _, hf = models(family)
    parts = hand(hf, family)
    for tl, key, kind in (
        ("hook_pre", "pre", "fwd"),
        ("hook_pre_linear", "pre_linear", "fwd"),
        ("hook_post", "post", "pre"),
    ):
        if key not in parts:
            assert f"blocks.{LAYER}.mlp.{tl}" not in wrap.hook_name_aliases
            continue
        got = wrap_logits(wrap, f"blocks.{LAYER}.mlp.{tl}", lambda act, hook: act * 1.5)
        fn = (lambda m, a, out: out * 1.5) if kind == "fwd" else (lambda m, a: (a[0] * 1.5,))
        torch.testing.assert_close(got, logits_with(hf, [(parts[key], kind, fn)]), msg=tl)


def test_gradients_at_hook_result_are_the_gradient_of_attention_output_per_head(models):
    wrap, _, _ = models("llama")
    grads = {}

    def keep(grad, hook):
        grads[hook.name] = grad

    names = [f"blocks.{LAYER}.attn.hook_result", f"blocks.{LAYER}.hook_attn_out"]
    wrap.run_with_hooks(IDS, bwd_hooks=[(n, keep) for n in names])[..., 3].sum().backward()
    result, out = grads[names[0]], grads[names[1]]
    assert result.shape[2] == wrap.cfg.n_heads
    for h in range(wrap.cfg.n_heads):
        torch.testing.assert_close(result[:, :, h], out)


# ---------------------------------------------------------------------- stop_at_layer, tl_parameters
@pytest.mark.parametrize("family", FAMILIES)
def test_stop_at_layer_returns_the_residual_entering_that_block(models, family):
    wrap, bridge, _ = models(family)
    n = wrap.cfg.n_layers
    with torch.no_grad():
        _, cache = wrap.run_with_cache(IDS)
        for layer in (0, 1, -1):
            got = wrap(IDS, stop_at_layer=layer)
            torch.testing.assert_close(got, bridge(IDS, stop_at_layer=layer), atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(got, cache["resid_pre", layer % n])
        # n_layers: the residual stream after the last block (TransformerLens's HookedTransformer)
        torch.testing.assert_close(wrap(IDS, stop_at_layer=n), cache["resid_post", n - 1])
        # a hook on that block's input is seen in what is returned, as on the bridge
        shifted = wrap.run_with_hooks(
            IDS, stop_at_layer=1, fwd_hooks=[("blocks.1.hook_resid_pre", lambda act, hook: act + 1)]
        )
        torch.testing.assert_close(shifted, cache["resid_pre", 1] + 1)
        # run_with_cache passes it on: nothing after the stop is cached
        _, short = wrap.run_with_cache(IDS, stop_at_layer=1)
    assert "blocks.0.hook_resid_post" in short and "blocks.1.attn.hook_z" not in short
    for bad in (n + 1, -n - 1):
        with pytest.raises(ValueError, match="stop_at_layer"):
            wrap(IDS, stop_at_layer=bad)
    with torch.no_grad():
        torch.testing.assert_close(wrap(IDS), cache_logits(wrap))  # no hook left behind


def cache_logits(wrap):
    return wrap.module(IDS).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_tl_parameters_equal_the_bridge(models, family):
    wrap, bridge, _ = models(family)
    ours, theirs = wrap.tl_parameters(), bridge.tl_parameters()
    assert list(ours) == list(theirs) or set(ours) == set(theirs)
    for name, value in theirs.items():
        assert ours[name].shape == value.shape, name
        torch.testing.assert_close(ours[name], value, msg=name)
    assert [n for n, _ in wrap.tl_named_parameters()] == list(ours)
    # the model's own weights, not copies
    module = hand(wrap.module, family)["post"]
    assert ours[f"blocks.{LAYER}.mlp.W_out"].data_ptr() == module.weight.data_ptr()


def test_left_padded_batch_scores_and_values_equal_the_bridge(models):
    wrap, bridge, _ = models("llama")
    ids = torch.tensor([[3, 3, 1, 5, 6, 7], [1, 11, 12, 13, 14, 15]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    names = [f"blocks.{LAYER}.attn.hook_{k}" for k in ("attn_scores", "pattern", "q", "rot_k", "result")]
    with torch.no_grad():
        _, cache = wrap.run_with_cache(ids, attention_mask=mask, names_filter=names)
        _, ref = bridge.run_with_cache(ids, attention_mask=mask, names_filter=names)
    for name in names[:2]:  # [batch, head, query, key]: every entry, padded keys masked alike
        torch.testing.assert_close(cache[name], ref[name], msg=name)
    assert (cache[names[0]][0, :, :, :2] == torch.finfo(torch.float32).min).all()
    real = mask.bool()
    for name in names[2:]:  # [batch, pos, ...]: the real positions (padding's own values are junk)
        torch.testing.assert_close(cache[name][real], ref[name][real], msg=name)


def test_an_edit_at_a_norm_it_does_not_describe_is_refused():
    wrap = lm.wrap_lm(tiny_hf("llama"))  # its own: the check is made once per norm, at the first edit
    norm = wrap.module.model.layers[LAYER].input_layernorm
    original = norm.forward
    norm.forward = lambda x: 2 * original(x)  # not w * x / rms(x) any more
    try:
        with torch.no_grad():
            _, cache = wrap.run_with_cache(IDS, names_filter=f"blocks.{LAYER}.ln1.hook_scale")
            with pytest.raises(NotImplementedError, match="does not compute"):
                wrap_logits(wrap, f"blocks.{LAYER}.ln1.hook_scale", lambda act, hook: act * 2)
    finally:
        del norm.forward
    assert cache[f"blocks.{LAYER}.ln1.hook_scale"].shape == (2, IDS.shape[1], 1)


def test_edits_inside_attention_with_a_key_value_cache_equal_uncached(models):
    wrap, _, _ = models("llama")
    ids = IDS[:1]

    def edit_k(act, hook):
        act = act.clone()
        act[:, :, 0] *= 1.7  # a sharper attention for the heads of key-value head 0
        return act

    def edit_scores(act, hook):
        act = act.clone()
        act[:, 0, :, 0] += 3.0
        return act

    with torch.no_grad():
        plain = wrap(ids)[:, -1]
        for name, fn in (
            (f"blocks.{LAYER}.attn.hook_k", edit_k),
            (f"blocks.{LAYER}.attn.hook_attn_scores", edit_scores),
        ):
            forward = LMForward(wrap, [])
            cache = {forward.cache_kwarg: forward.new_cache()}  # ``cache=`` or ``past_key_values=``
            with wrap.hooks(fwd_hooks=[(name, fn)]):
                full = wrap(ids)[:, -1]
                wrap.module(ids[:, :-1], use_cache=True, **cache)  # keys cached as edited
                step = wrap.module(ids[:, -1:], use_cache=True, **cache).logits[:, -1]
            torch.testing.assert_close(step, full, msg=name)
            assert not torch.allclose(full, plain), name
    # an edited rotated key cannot reach the keys already cached: refused, not answered differently
    with pytest.raises(NotImplementedError, match="edit hook_k"):
        lm.generate(
            wrap, ids[:, :4], 3, fwd_hooks=[(f"blocks.{LAYER}.attn.hook_rot_k", edit_k)], use_cache=True
        )
    assert wrap.module.config._attn_implementation in ("sdpa", "eager")  # switched back after the error


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_points_on_wrap_equal_the_bridge(smol):
    """SmolLM2-135M (real weights, 9 query heads sharing 3 key-value heads): every new point of one
    layer, stop_at_layer and tl_parameters against TransformerLens's bridge."""
    wrap, bridge = smol["wrap"], smol["bridge"]
    tokens = wrap.to_tokens("The Eiffel Tower is in the city of")
    names = [n for n in new_names(wrap) if n.startswith(("blocks.20.", "ln_final."))]
    assert len(names) == 16  # 7 in attention, 2 x (ln1, ln2, ln_final), 3 in the MLP
    with torch.no_grad():
        _, cache = wrap.run_with_cache(tokens, names_filter=names)
        _, ref = bridge.run_with_cache(tokens, names_filter=names)
        for layer in (5, -1):
            torch.testing.assert_close(
                wrap(tokens, stop_at_layer=layer), bridge(tokens, stop_at_layer=layer), atol=1e-4, rtol=1e-4
            )
    assert cache["blocks.20.attn.hook_k"].shape == (1, tokens.shape[1], 3, 64)
    for name in names:
        torch.testing.assert_close(cache[name], ref[name], atol=1e-4, rtol=1e-4, msg=name)
    ours, theirs = wrap.tl_parameters(), bridge.tl_parameters()
    assert set(ours) == set(theirs)
    for name in ("blocks.3.attn.W_K", "blocks.3.mlp.W_gate", "blocks.3.ln2.w", "unembed.W_U"):
        torch.testing.assert_close(ours[name], theirs[name], msg=name)
