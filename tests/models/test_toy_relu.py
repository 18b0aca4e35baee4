"""ToyReLU: the forward it promises, batched training, checkpoints."""

from __future__ import annotations

import pytest
import torch

from hooked import checkpoint
from hooked.models import ToyReLU
from hooked.models.toy_relu import sparse_uniform, weighted_mse
from hooked.models.toy_relu_training import epoch_batches, set_hidden_sizes, train_instances


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


def test_instances_train_independently_and_loss_falls():
    torch.manual_seed(0)
    p = torch.tensor([1.0, 0.05])
    importance = 0.9 ** torch.arange(5.0)
    model = ToyReLU(5, 2, n_instances=2, seed=0)
    log = train_instances(
        model,
        lambda s, g: sparse_uniform(256, p, 5, g),
        steps=300,
        importance=importance,
        lr=1e-2,
        progress=False,
    )
    assert (log.losses[-1] < log.losses[0]).all()
    # the stacked step equals training one instance alone
    a = ToyReLU(5, 2, n_instances=2, seed=3)
    b = ToyReLU(5, 2, n_instances=1, seed=3)
    with torch.no_grad():
        b.W.copy_(a.W[:1])
    x = sparse_uniform(64, p, 5, torch.Generator().manual_seed(1))
    ga = torch.autograd.grad(weighted_mse(a(x), x, importance).sum(), a.W)[0]
    gb = torch.autograd.grad(weighted_mse(b(x[:, :1]), x[:, :1], importance).sum(), b.W)[0]
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


def test_sparse_uniform_density_and_values():
    p = torch.tensor([1.0, 0.5, 0.05])
    x = sparse_uniform(40_000, p, 3, torch.Generator().manual_seed(0))
    assert torch.allclose((x > 0).float().mean(dim=(0, 2)), p, atol=0.01)
    on = x[:, 2][x[:, 2] > 0]
    assert 0.45 < float(on.mean()) < 0.55 and float(on.max()) <= 1.0


def test_per_instance_weight_decay_matches_training_alone():
    data = sparse_uniform(64, torch.tensor([0.3, 0.3]), 5, torch.Generator().manual_seed(1))
    pair = ToyReLU(5, 2, n_instances=2, seed=0)
    alone = ToyReLU(5, 2, n_instances=1, seed=0)
    with torch.no_grad():
        alone.W.copy_(pair.W[:1])
    kw = dict(steps=30, lr=1e-2, schedule="cosine", grad_clip=0.5, progress=False)
    train_instances(pair, lambda s, g: data, weight_decay=torch.tensor([0.0, 5.0]), **kw)
    train_instances(alone, lambda s, g: data[:, :1], weight_decay=0.0, **kw)
    assert torch.allclose(pair.W[0], alone.W[0], atol=1e-5)
    assert pair.W[1].norm() < pair.W[0].norm()  # the decayed twin shrank


def test_smaller_hidden_sizes_stay_zero():
    model = ToyReLU(6, 4, n_instances=3, seed=0)
    set_hidden_sizes(model, [1, 2, 4])
    train_instances(
        model,
        lambda s, g: sparse_uniform(32, torch.full((3,), 0.2), 6, g),
        steps=40,
        lr=1e-2,
        weight_decay=0.1,
        progress=False,
    )
    assert model.W[0, 1:].abs().max() == 0 and model.W[1, 2:].abs().max() == 0
    assert model.W[2, 3].abs().max() > 0
    with pytest.raises(ValueError, match="sizes"):
        set_hidden_sizes(model, [1, 5, 2])


def test_epoch_batches_visit_every_sample_once_per_epoch():
    seen = []
    fn = epoch_batches(lambda idx: idx, 10, 3)
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        seen.append(fn(step, g))
    first, second = torch.cat(seen[:3]), torch.cat(seen[3:])
    assert len(set(first.tolist())) == 9 and len(set(second.tolist())) == 9
    with pytest.raises(ValueError, match="fewer"):
        epoch_batches(lambda idx: idx, 2, 3)
