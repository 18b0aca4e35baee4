"""TransformerLens hook names on a ``hooked.wrap`` language model: accepted wherever a hook name is,
seen by the hook as asked, and the same activations as the module paths they stand for (checked
against plain PyTorch hooks on the transformers model and against the bridge)."""

from __future__ import annotations

import pytest
import torch

from hooked import lm
from hooked.errors import UnknownHookError


@pytest.fixture()
def wrap(tiny):
    model = tiny["wrap"]
    yield model
    model.reset_hooks(including_permanent=True)


def _ids(model):
    return lm.to_tokens(model, "the cat sat on the big red mat")


def _layer_outputs(model, ids):
    """Each decoder layer's output, read by plain PyTorch hooks on the transformers model."""
    got, handles = {}, []
    for i, layer in enumerate(model.module.model.layers):
        handles.append(layer.register_forward_hook(lambda m, a, o, i=i: got.__setitem__(i, o.detach())))
    try:
        with torch.no_grad():
            model.module(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return got


def test_run_with_cache_takes_tl_names_and_reads_the_right_activations(wrap):
    ids = _ids(wrap)
    want = _layer_outputs(wrap, ids)
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post", "hook_embed"]
    _, cache = wrap.run_with_cache(ids, names_filter=names)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], want[0])
    torch.testing.assert_close(cache["blocks.1.hook_resid_pre"], want[0])
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], want[1])
    torch.testing.assert_close(cache["hook_embed"], wrap.module.model.embed_tokens(ids))
    assert cache["resid_post", 1] is cache["blocks.1.hook_resid_post"]
    # a filter is offered the TransformerLens names as well as the module paths
    _, by_filter = wrap.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))
    torch.testing.assert_close(by_filter["blocks.0.hook_resid_post"], want[0])
    assert len(by_filter) == 2
    # stop_at by a TransformerLens name ends the forward there
    out, early = wrap.run_with_cache(
        ids, names_filter="blocks.0.hook_resid_post", stop_at="blocks.1.hook_resid_pre"
    )
    assert out is None and early["blocks.0.hook_resid_post"].shape == cache["blocks.0.hook_resid_post"].shape


def test_hooks_attached_by_tl_names_see_them_and_edit_the_forward(wrap):
    ids = _ids(wrap)
    seen = []

    def zero(act, hook):
        seen.append(hook.name)
        return torch.zeros_like(act)

    with torch.no_grad():
        clean = wrap(ids)
        by_tl = wrap.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_mlp_out", zero)])
        by_path = wrap.run_with_hooks(ids, fwd_hooks=[("model.layers.0.mlp.hook_out", zero)])
    assert seen == ["blocks.0.hook_mlp_out", "model.layers.0.mlp.hook_out"]
    torch.testing.assert_close(by_tl, by_path)
    assert not torch.allclose(by_tl, clean, atol=1e-3)
    assert not wrap.list_hooks()  # removed after the call

    # add_hook, hooks() with a list and with a filter
    names = []
    handle = wrap.add_hook("blocks.1.hook_resid_pre", lambda a, hook: names.append(hook.name))
    assert list(wrap.list_hooks("blocks.1.hook_resid_pre")) == ["model.layers.1.hook_in"]
    with (
        torch.no_grad(),
        wrap.hooks(
            fwd_hooks=[(lambda n: n == "blocks.0.attn.hook_z", lambda a, hook: names.append(hook.name))]
        ),
    ):
        wrap(ids)
    handle.remove()
    assert names == ["blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"]
    assert not wrap.list_hooks()


def test_tl_names_give_the_same_patch_as_on_the_bridge(tiny):
    ids = _ids(tiny["wrap"])

    def half(act, hook):
        return act * 0.5

    outs = {}
    with torch.no_grad():
        for backend in ("wrap", "bridge"):
            model = tiny[backend]
            outs[backend] = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_resid_pre", half)])
    torch.testing.assert_close(outs["wrap"], outs["bridge"], atol=1e-4, rtol=1e-4)


def test_an_unknown_tl_name_is_refused_by_name(wrap):
    with pytest.raises(UnknownHookError, match="blocks.7.hook_resid_pre"):
        wrap.run_with_hooks(_ids(wrap), fwd_hooks=[("blocks.7.hook_resid_pre", lambda a, hook: a)])
    assert not wrap.list_hooks()


@pytest.mark.parametrize("reuse_prefix", [False, True])
def test_a_patching_sweep_by_tl_names_equals_the_one_by_module_paths(wrap, reuse_prefix):
    from interventions.patching import patching_sweep

    base, source = _ids(wrap), lm.to_tokens(wrap, "a dog ran to the old blue house")
    tl = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]

    def metric(logits):
        return logits[:, -1, 5]

    kw = dict(positions=range(base.shape[1]), reuse_prefix=reuse_prefix)
    by_tl = patching_sweep(wrap, base, source, tl, metric, **kw)
    by_path = patching_sweep(wrap, base, source, lm.residual_hooks(wrap), metric, **kw)
    torch.testing.assert_close(by_tl, by_path)
    assert by_tl.std() > 1e-3
