"""``run_with_cache`` / ``run_with_hooks`` against a hostile user, the same on every backend:
``HookedModule``, ``hooked.wrap`` of a plain module, and a tiny Llama through ``hooked.lm``'s wrap
and bridge backends.

Cases (old behaviour on main cd36a9d -> now):

* ``names_filter=[h, h]``: ``h`` cached as if it ran twice (``[batch, 2, ...]``) on HookedModule
  and wrap, once on the bridge -> once on every backend (gradients with ``incl_bwd`` too).
* a TransformerLens name and the module path of one hook point on wrap (``blocks.1.hook_resid_pre``
  and ``model.layers.1.hook_in``; ``residual_hooks(m) + stream_hooks(m)``): stacked twice ->
  recorded once, answered under both names, as the bridge answers an alias and its canonical name.
* a hook that runs the model again mid-forward (another batch): the inner run stacked into the
  outer cache (or a ragged "ran 2 times with different shapes" error) on every backend -> the cache
  holds the outer forward only; the same for a forward run by another thread while the cached one
  runs.
* ``cache[3]``: TypeError from ``in`` -> KeyError naming the key kinds; ``cache["a", 1.5]`` /
  ``cache[()]``: internal errors -> KeyError with the shorthand's form.
* ``cache.apply(fn)`` where ``fn`` returns ``None``: AttributeError later -> TypeError naming the
  hook; ``apply(3)`` -> TypeError.
* a tokenized batch mapping passed positionally to ``run_with_hooks`` / ``run_with_cache`` / the
  model (wrap and bridge): ``embedding(): argument 'indices' must be Tensor, not dict`` -> run as
  the keywords it holds (``patch(model, batch, ...)`` took it so already); a model whose forward
  takes a dict itself still gets the dict.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import hooked
from tests.toys import MLPStack


class Backend:
    def __init__(self, model, x, other, names, run):
        self.model, self.x, self.other, self.names = model, x, other, names
        self.run = run  # the model's plain call on a batch


def _toy():
    model = MLPStack(d=4, n_blocks=2)
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out", "hook_out"]
    return Backend(model, torch.randn(3, 4), torch.randn(5, 4), names, model)


def _wrap_plain():
    torch.manual_seed(0)
    model = hooked.wrap(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)))
    return Backend(
        model, torch.randn(3, 4), torch.randn(5, 4), ["0.hook_out", "1.hook_out", "2.hook_out"], model
    )


def _lm(backend):
    from hooked import lm
    from tests.lm.tiny_models import tiny_bridge, tiny_hf

    model = lm.wrap_lm(tiny_hf("llama")) if backend == "wrap" else tiny_bridge("llama")
    g = torch.Generator().manual_seed(0)
    x, other = torch.randint(4, 64, (2, 6), generator=g), torch.randint(4, 64, (3, 4), generator=g)
    return Backend(model, x, other, lm.residual_hooks(model), model)


BACKENDS = {
    "toy": _toy,
    "wrap-plain": _wrap_plain,
    "lm-wrap": lambda: _lm("wrap"),
    "lm-bridge": lambda: _lm("bridge"),
}


@pytest.fixture(scope="module", params=list(BACKENDS))
def b(request):
    return BACKENDS[request.param]()


def assert_same_cache(got, want):
    assert list(got) == list(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


# ---------------------------------------------------------------------- names given twice
def test_a_name_given_twice_is_recorded_once(b):
    h = b.names[1]
    _, once = b.model.run_with_cache(b.x, names_filter=[h])
    _, twice = b.model.run_with_cache(b.x, names_filter=[h, h])
    assert_same_cache(twice, once)
    assert once[h].shape[0] == b.x.shape[0]


def test_gradients_of_a_name_given_twice_are_recorded_once(b):
    h = b.names[1]

    def metric(out):
        return out.float().sum()

    _, once = b.model.run_with_cache(b.x, names_filter=[h], incl_bwd=True, metric=metric)
    _, twice = b.model.run_with_cache(b.x, names_filter=[h, h], incl_bwd=True, metric=metric)
    assert_same_cache(twice, once)


@pytest.mark.parametrize("backend", ["lm-wrap", "lm-bridge"])
def test_two_names_of_one_hook_point_are_recorded_once_and_answer_both(backend):
    b = BACKENDS[backend]()
    path = b.names[1]
    # wrap: the TransformerLens name of the module path; the bridge: the canonical name of the alias
    other = "blocks.1.hook_resid_pre" if path != "blocks.1.hook_resid_pre" else "blocks.1.hook_in"
    _, single = b.model.run_with_cache(b.x, names_filter=[path])
    _, both = b.model.run_with_cache(b.x, names_filter=[path, other])
    for name in (path, other):
        torch.testing.assert_close(both[name], single[path], rtol=0, atol=0)
    from hooked import lm

    # the toolkit's lists overlap (the residual stream is in both): each point once
    names = lm.residual_hooks(b.model) + lm.stream_hooks(b.model, heads=False)
    _, cache = b.model.run_with_cache(b.x, names_filter=names)
    for name in names:
        assert cache[name].shape[:2] == b.x.shape, name


# ---------------------------------------------------------------------- nested and concurrent runs
def _with_hook(b, fn, names):
    """run_with_cache(b.x) with ``fn`` attached (once) at the last hook point."""
    b.model.add_hook(b.names[-1], fn)
    try:
        return b.model.run_with_cache(b.x, names_filter=names)[1]
    finally:
        b.model.reset_hooks()


def test_a_forward_that_a_hook_starts_is_not_recorded(b):
    _, want = b.model.run_with_cache(b.x, names_filter=b.names)
    done = []

    def again(act, hook):
        if not done:
            done.append(1)
            with torch.no_grad():
                b.run(b.other)  # another batch, another size

    got = _with_hook(b, again, b.names)
    assert done
    assert_same_cache(got, want)


def test_a_forward_in_another_thread_is_not_recorded(b):
    _, want = b.model.run_with_cache(b.x, names_filter=b.names)
    done = []

    def in_thread(act, hook):
        if not done:
            done.append(1)
            t = threading.Thread(target=lambda: b.run(b.other))
            t.start()
            t.join()

    got = _with_hook(b, in_thread, b.names)
    assert done
    assert_same_cache(got, want)


# ---------------------------------------------------------------------- keys and apply
def test_cache_keys_of_other_types_and_apply_results_are_clear_errors():
    model = MLPStack(d=4, n_blocks=2)
    _, cache = model.run_with_cache(torch.randn(2, 4))
    for key in (3, 1.5, None, ("blocks.0.hook_resid_pre", 1.5), (), ("a", 1, "x", 2), (3, 1)):
        with pytest.raises(KeyError):
            cache[key]
    with pytest.raises(TypeError, match="returned NoneType for"):
        cache.apply(lambda t: None)
    with pytest.raises(TypeError, match="function of a tensor"):
        cache.apply(3)
    doubled = cache.apply(lambda t: 2 * t)
    for k in cache:
        torch.testing.assert_close(doubled[k], 2 * cache[k])


# ---------------------------------------------------------------------- a batch mapping positionally
@pytest.mark.parametrize("backend", ["lm-wrap", "lm-bridge"])
def test_a_tokenized_batch_mapping_runs_as_its_keywords(backend):
    b = BACKENDS[backend]()
    mask = torch.ones_like(b.x)
    mask[0, :2] = 0  # left padding: the mask must reach the model
    batch = {"input_ids": b.x, "attention_mask": mask}
    h = b.names[1]
    with torch.no_grad():
        want = b.model(**batch)
        torch.testing.assert_close(b.model(batch), want)
        torch.testing.assert_close(b.model.run_with_hooks(batch), want)
        out, cache = b.model.run_with_cache(batch, names_filter=[h])
        _, want_cache = b.model.run_with_cache(**batch, names_filter=[h])
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(cache[h], want_cache[h])
    assert not torch.allclose(want, b.model(b.x))  # the mask changes the answer: the test can fail


def test_a_model_whose_forward_takes_a_dict_still_gets_the_dict():
    class Features(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.hook_mid = hooked.HookPoint()

        def forward(self, features):
            return self.lin(self.hook_mid(features["a"] + features["b"]))

    model = Features()
    x = {"a": torch.randn(4, 3), "b": torch.randn(4, 3)}
    out, cache = model.run_with_cache(x)
    torch.testing.assert_close(out, model(x))
    torch.testing.assert_close(cache["hook_mid"], x["a"] + x["b"])
    torch.testing.assert_close(model.run_with_hooks(x), model(x))
