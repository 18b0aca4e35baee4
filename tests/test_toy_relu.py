"""ToyReLU: the forward it promises, batched training, checkpoints."""

from __future__ import annotations

import pytest
import torch

from hooked import checkpoint
from hooked.models import ToyReLU, sparse_features, train_toy_relu, weighted_mse


def test_forward_matches_formula_and_hooks():
    model = ToyReLU(5, 2, n_instances=3, seed=1)
    with torch.no_grad():
        model.b.copy_(torch.randn(3, 5))
    x = torch.rand(7, 3, 5)
    out, cache = model.run_with_cache(x)
    for i in range(3):
        W, b = model.W[i], model.b[i]
        h = x[:, i] @ W.T
        assert torch.allclose(cache["hook_hidden"][:, i], h, atol=1e-6)
        assert torch.allclose(cache["hook_pre"][:, i], h @ W + b, atol=1e-6)
        assert torch.allclose(out[:, i], torch.relu(h @ W + b), atol=1e-6)


def test_single_instance_accepts_unbatched_instance_axis():
    model = ToyReLU(6, 3, seed=0)
    x = torch.rand(4, 6)
    assert torch.allclose(model(x), model(x[:, None])[:, 0])
    with pytest.raises(ValueError, match="instance"):
        ToyReLU(6, 3, n_instances=2)(x)


def test_wrong_shapes_and_dtypes_fail_clearly():
    model = ToyReLU(5, 2, n_instances=2)
    with pytest.raises(ValueError, match=r"expected \[batch, 2, 5\]"):
        model(torch.rand(4, 2, 6))
    with pytest.raises(Exception, match="x"):  # integer input: the type check names the argument
        model(torch.ones(4, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="d_hidden"):
        ToyReLU(5, 0)


def test_sparse_features_density():
    p = torch.tensor([0.05, 0.5, 1.0])
    x = sparse_features(20_000, p, 4, torch.Generator().manual_seed(0))
    active = (x > 0).float().mean(dim=(0, 2))
    assert torch.allclose(active, p, atol=0.01)
    assert x.max() <= 1 and x.min() >= 0


def test_instances_train_independently_and_loss_falls():
    torch.manual_seed(0)
    p = torch.tensor([1.0, 0.05])
    importance = 0.9 ** torch.arange(5.0)
    model = ToyReLU(5, 2, n_instances=2, seed=0)
    losses = train_toy_relu(model, p, importance, steps=300, batch_size=256, lr=1e-2, progress=False)
    assert losses[-1] < losses[0]
    # the stacked step equals training one instance alone
    a = ToyReLU(5, 2, n_instances=2, seed=3)
    b = ToyReLU(5, 2, n_instances=1, seed=3)
    with torch.no_grad():
        b.W.copy_(a.W[:1])
    x = sparse_features(64, p, 5, torch.Generator().manual_seed(1))
    ga = torch.autograd.grad(weighted_mse(a(x), x, importance), a.W)[0]
    gb = torch.autograd.grad(weighted_mse(b(x[:, :1]), x[:, :1], importance), b.W)[0]
    assert torch.allclose(ga[:1], gb, atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    model = ToyReLU(7, 3, n_instances=2, seed=5)
    checkpoint.save(model, tmp_path / "ck", meta={"steps": 10})
    loaded = checkpoint.load(tmp_path / "ck")
    assert isinstance(loaded, ToyReLU) and loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert checkpoint.read_config(tmp_path / "ck")["meta"] == {"steps": 10}
    with pytest.raises(ValueError, match="wrong shapes"):
        checkpoint.load_weights(ToyReLU(7, 4, n_instances=2), tmp_path / "ck")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        checkpoint.load_weights(model, tmp_path / "bad")


def test_shape_checks_can_be_turned_off():
    from hooked import typecheck

    model = ToyReLU(5, 2)
    bad = torch.ones(4, 5, dtype=torch.long)
    with pytest.raises(Exception, match="x"):
        model(bad)
    with typecheck.disabled():
        with pytest.raises(RuntimeError):  # now torch itself complains, deeper down
            model(bad)
    assert typecheck.enabled()
