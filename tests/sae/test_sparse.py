"""The sparse training kernel and the optimiser step against dense, hand-written computations:
``sparse_code`` gives the output and the gradients a dense ``[B, M]`` feature matrix gives (in
float64, for fixed and ragged bags, features with no pair, pairs cut by the ReLU); a Learner's
step through the kernel equals its dense step; one update is Adam with the decoder gradient's
component along each row removed and the rows put back at unit norm."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooked.sae import learner as learner_module
from hooked.sae.learner import Comm, Learner, Spec
from hooked.sae.sparse import mask_bags, sparse_code, topk_bags


def _dense_reference(c, enc, b_enc, dec, mask, grad_out):
    """Output and gradients with the features as a dense matrix (plain autograd)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (c, enc, b_enc, dec)]
    c_, enc_, b_, dec_ = leaves
    pre = c_ @ enc_.T + b_
    f = torch.where(mask, torch.relu(pre), 0.0)
    out = f @ dec_
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 7),
    M=st.integers(1, 12),
    d_in=st.integers(1, 6),
    d_out=st.integers(1, 6),
    ragged=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sparse_code_gives_the_dense_output_and_gradients(B, M, d_in, d_out, ragged, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, d_in, generator=g, dtype=torch.float64)
    enc = torch.randn(M, d_in, generator=g, dtype=torch.float64)
    b_enc = torch.randn(M, generator=g, dtype=torch.float64)
    dec = torch.randn(M, d_out, generator=g, dtype=torch.float64)
    grad_out = torch.randn(B, d_out, generator=g, dtype=torch.float64)
    pre = c @ enc.T + b_enc
    if ragged:  # any entries (rows with none, features with none)
        mask = torch.rand(B, M, generator=g) < 0.4
        values, rows, cols, offsets = mask_bags(pre, mask)
    else:
        k = int(torch.randint(1, M + 1, (1,), generator=g))
        values, rows, cols, offsets = topk_bags(pre, k)
        mask = torch.zeros(B, M, dtype=torch.bool)
        mask[rows, cols] = True
    want, want_grads = _dense_reference(c, enc, b_enc, dec, mask, grad_out)

    leaves = [t.clone().requires_grad_(True) for t in (c, enc, b_enc, dec)]
    out, acts = sparse_code(*leaves, values, rows, cols, offsets)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acts, torch.relu(pre[rows, cols]), rtol=0, atol=0)
    out.backward(grad_out)
    for name, leaf, expected in zip(("c", "enc", "b_enc", "dec"), leaves, want_grads):
        torch.testing.assert_close(leaf.grad, expected, rtol=1e-12, atol=1e-12, msg=name)


def test_sparse_code_leaves_out_the_gradients_nobody_asked_for():
    g = torch.Generator().manual_seed(0)
    c, enc, dec = (torch.randn(n, 3, generator=g) for n in (4, 8, 8))
    b_enc = torch.zeros(8)
    values, rows, cols, offsets = topk_bags(c @ enc.T + b_enc, 2)
    dec.requires_grad_(True)
    out, _ = sparse_code(c, enc, b_enc, dec, values, rows, cols, offsets)
    out.sum().backward()
    assert dec.grad is not None and c.grad is None and enc.grad is None


def _one_step(learner: Learner, x: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    loss = learner.loss(x, x, x.shape[0], Comm())
    loss.backward()
    grads = {n: t.grad.clone() for n, t in learner.params.items()}
    for t in learner.params.values():
        t.grad = None
    learner._pending = None
    return float(loss.detach()), grads


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
def test_a_wide_learner_s_sparse_step_equals_its_dense_step(kind, monkeypatch):
    width = learner_module.SPARSE_FROM
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g)
    learner = Learner(Spec(hook="h", kind=kind, width=width, k=4, dead_tokens=10), 16, 16, seed=0)
    learner.initialise(x, x, 64, Comm())
    with torch.no_grad():
        learner.params["b_enc"].normal_(0.0, 0.1, generator=g)
    learner.fired_since[::3] = 100  # a third of the features dead: the auxiliary loss is on
    sparse_loss, sparse_grads = _one_step(learner, x)
    monkeypatch.setattr(learner_module, "SPARSE_FROM", width + 1)
    dense_loss, dense_grads = _one_step(learner, x)
    assert math.isclose(sparse_loss, dense_loss, rel_tol=1e-5)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_an_update_is_adam_with_unit_decoder_rows():
    g = torch.Generator().manual_seed(2)
    d, width, lr = 8, 24, 1e-2
    learner = Learner(Spec(hook="h", kind="topk", width=width, k=3), d, d, seed=0)
    x = torch.randn(32, d, generator=g)
    learner.initialise(x, x, 32, Comm())
    p = {n: t.detach().double().clone() for n, t in learner.params.items()}
    m = {n: torch.zeros_like(t) for n, t in p.items()}
    v = {n: torch.zeros_like(t) for n, t in p.items()}
    for t in (1, 2, 3):
        batch = torch.randn(32, d, generator=g)
        learner.loss(batch, batch, 32, Comm()).backward()
        grads = {n: q.grad.detach().double().clone() for n, q in learner.params.items()}
        learner.update(lr, Comm())
        # by hand: the decoder gradient's component along each row removed, then Adam
        grads["dec"] -= (grads["dec"] * p["dec"]).sum(1, keepdim=True) * p["dec"]
        for n in p:
            m[n] = 0.9 * m[n] + 0.1 * grads[n]
            v[n] = 0.999 * v[n] + 0.001 * grads[n] ** 2
            p[n] -= lr * (m[n] / (1 - 0.9**t)) / ((v[n] / (1 - 0.999**t)).sqrt() + 1e-8)
        p["dec"] /= p["dec"].norm(dim=1, keepdim=True)
        for n, q in learner.params.items():
            torch.testing.assert_close(q.detach().double(), p[n], rtol=0, atol=1e-5, msg=f"{n} at step {t}")
            p[n] = q.detach().double().clone()  # the next step from where the learner is
        assert learner.t == t
