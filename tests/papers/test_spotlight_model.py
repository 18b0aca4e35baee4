"""Spotlight resonance at hook points of hooked models; the command line; the digit autoencoders."""

from __future__ import annotations

import pytest
import torch

import hooked
from analyses.spotlight import spotlight, spotlight_model
from hooked import checkpoint, cli
from hooked.io import read_json, read_tensors
from hooked.protocol import collect_activations
from hooked.rotations import random_orthonormal
from papers.spotlight.autoencoder import Autoencoder, iso_tanh, train_autoencoder
from papers.spotlight.repro import paper_claim


def test_streaming_through_a_model_equals_one_shot(mlp):
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    batches = list(x.split(64))
    streamed = spotlight_model(mlp, "blocks.1.hook_mlp_out", batches, epsilon=0.5, n_angles=40, top=4)
    whole = spotlight_model(mlp, "blocks.1.hook_mlp_out", [x], epsilon=0.5, n_angles=40, top=4)
    acts = collect_activations(mlp, [x], ["blocks.1.hook_mlp_out"])["blocks.1.hook_mlp_out"]
    direct = spotlight(acts, epsilon=0.5, n_angles=40)
    assert streamed.result.n == 300
    assert torch.equal(streamed.result.counts, whole.result.counts)
    assert torch.equal(streamed.result.counts, direct.counts)
    assert torch.equal(streamed.grandmother.counts, whole.grandmother.counts)
    assert torch.equal(streamed.grandmother.top_rows, whole.grandmother.top_rows)


def test_per_step_activations_pool_steps_or_pick_one(rnn):
    x = torch.randn(16, 5, 3, generator=torch.Generator().manual_seed(1))
    pooled = spotlight_model(rnn, "hook_h", [x], epsilon=0.5, n_angles=16)
    assert pooled.shape == (16, 5, 4) and pooled.result.n == 80
    acts = collect_activations(rnn, [x], ["hook_h"])["hook_h"]
    assert torch.equal(pooled.result.counts, spotlight(acts, epsilon=0.5, n_angles=16).counts)
    one = spotlight_model(rnn, "hook_h", [x], epsilon=0.5, n_angles=16, step=2)
    assert one.result.n == 16
    assert torch.equal(one.result.counts, spotlight(acts[:, 2], epsilon=0.5, n_angles=16).counts)
    with pytest.raises(ValueError, match="out of range"):
        spotlight_model(rnn, "hook_h", [x], step=9)


def test_model_level_errors(mlp):
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="not a per-step"):
        spotlight_model(mlp, "hook_out", [x], step=0)
    with pytest.raises(Exception, match="hook_outt"):
        spotlight_model(mlp, "hook_outt", [x])
    with pytest.raises(ValueError, match="no batches"):
        spotlight_model(mlp, "hook_out", [])


def test_verdict_and_labels_through_a_model():
    # a model whose hook point sees inputs along the axes: aligned, and each axis its own label
    import hooked

    class Identity(hooked.HookedModule):
        def __init__(self):
            super().__init__()
            self.hook_x = hooked.HookPoint()

        def forward(self, x):
            return self.hook_x(x)

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(6, (900,), generator=g)
    x = torch.nn.functional.one_hot(labels, 6).float() + 0.03 * torch.randn(900, 6, generator=g)
    found = spotlight_model(
        Identity(),
        "hook_x",
        list(x.split(300)),
        labels=list(labels.split(300)),
        epsilon=0.9,
        null_bases=16,
        n_angles=64,
    )
    assert found.alignment["verdict"] == "aligned" and found.alignment["z"] > 3
    best = found.grandmother.selective(top=6)
    assert {d["direction"] for d in best} == {f"+{k}" for k in range(6)}
    assert all(d["purity"] == 1.0 and d["label"] == int(d["direction"][1:]) for d in best)
    assert "ALIGNED" in found.report()


def test_cli_runs_spotlight_on_a_registered_model(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(
        [
            "run",
            "spotlight",
            "--model",
            "toy-relu",
            "--hook",
            "hook_hidden",
            "--out",
            str(out),
            "--null-bases",
            "4",
            "--n-angles",
            "32",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "spotlight resonance at hook_hidden" in printed and "verdict" in printed
    record = read_json(out / "result.json")
    srm = record["result"]["srm"]
    assert srm["dim"] == 2 and srm["n_angles"] == 32 and len(srm["mean"]) == 32
    assert record["result"]["alignment"]["verdict"] in ("aligned", "anti-aligned", "isotropic")
    assert (out / "spotlight.png").stat().st_size > 1000
    tensors = read_tensors(out / "srm.safetensors")
    assert tensors["counts"].shape == (2, 32) and tensors["basis"].shape == (2, 2)


def test_cli_errors_are_clear(tmp_path, capsys):
    code = cli.main(
        [
            "run",
            "spotlight",
            "--model",
            "toy-relu",
            "--hook",
            "hook_hidden",
            "--out",
            str(tmp_path),
            "--epsilon",
            "2",
        ]
    )
    assert code == 2 and "epsilon" in capsys.readouterr().err


# ---------------------------------------------------------------------- the autoencoders of the reproduction
def test_side_by_side_training_equals_training_alone():
    x = torch.rand(96, 64, generator=torch.Generator().manual_seed(0))
    stack = Autoencoder(64, 16, 4, ["relu", "isotanh", "tanh"], [None, None, 3], seed=1)
    alone = [stack.member(k) for k in range(3)]
    train_autoencoder(stack, x, epochs=2, batch_size=32, lr=0.05, progress=False)
    for k, model in enumerate(alone):
        train_autoencoder(model, x, epochs=2, batch_size=32, lr=0.05, progress=False)
        for a, b in zip(stack.member(k).state_dict().values(), model.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6)


def test_rotated_activation_acts_in_the_rotated_basis():
    model = Autoencoder(8, 8, 5, "relu", rotation_seed=7)
    q = random_orthonormal(5, 7, dtype=torch.float32)
    assert torch.equal(model.privileged_basis(0), q)
    x = torch.randn(10, 8)
    _, cache = model.run_with_cache(x, names_filter=["hook_pre", "hook_bottleneck"])
    expected = torch.relu(cache["hook_pre"] @ q.T) @ q  # h = Q^T relu(Q z)
    assert torch.allclose(cache["hook_bottleneck"], expected, atol=1e-6)
    assert (
        cache["hook_bottleneck"] @ q.T
    ).min() >= -1e-6  # coordinates in the rotated basis are ReLU outputs


def test_iso_tanh_keeps_directions_and_squashes_norms():
    x = torch.randn(50, 7) * 3
    y = iso_tanh(x)
    assert torch.allclose(y.norm(dim=1), torch.tanh(x.norm(dim=1)), atol=1e-6)
    assert torch.allclose(torch.nn.functional.cosine_similarity(x, y), torch.ones(50), atol=1e-6)
    q = random_orthonormal(7, 0, dtype=torch.float32)
    assert torch.allclose(iso_tanh(x @ q.T), iso_tanh(x) @ q.T, atol=1e-5)  # no preferred basis


def test_member_checkpoint_round_trip(tmp_path):
    stack = Autoencoder(64, 8, 4, ["gelu", "sigmoid"], [None, 2], seed=0)
    checkpoint.save(stack.member(1), tmp_path / "m")
    back = checkpoint.load(tmp_path / "m")
    x = torch.rand(5, 64)
    assert torch.allclose(back(x), stack(x)[:, 1], atol=1e-6)


def test_paper_claims_table():
    assert paper_claim("relu", False, "standard") == "aligned"
    assert paper_claim("relu", False, "rotated") == "isotropic"
    assert paper_claim("tanh", True, "rotated") == "aligned"
    assert paper_claim("tanh", True, "standard") == "isotropic"
    assert paper_claim("isotanh", False, "standard") == paper_claim("linear", False, "rotated") == "isotropic"


@pytest.mark.slow
def test_repro_runs_end_to_end_small(tmp_path):
    from hooked.io import RunDir
    from papers.spotlight.repro import spotlight_repro

    out = spotlight_repro(
        RunDir(tmp_path),
        activations=["relu", "linear"],
        rotated=["tanh"],
        epochs=2,
        epsilons=[0.9],
        explore_epsilons=[0.5],
        null_bases=4,
        n_angles=16,
        progress=False,
    )
    assert (
        out["agreement"]["preregistered_cells"] == 6
        and out["agreement"]["exploratory_cells"] == 6
        and set(out["models"]) == {"relu", "linear", "rotated-tanh"}
    )
    for name in ("srm_eps0.9.png", "srm_eps0.5.png", "verdicts.png", "ensemble_relu.png"):
        assert (tmp_path / name).exists()
    assert checkpoint.load(tmp_path / "models" / "rotated-tanh").rotation_seeds == [1]


class _TokenCode(hooked.HookedModule):
    """Each token's code depends on that token alone, so padding can change nothing but the count."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 6)
        self.hook_code = hooked.HookPoint()

    def forward(self, input_ids, attention_mask=None):
        return self.hook_code(torch.tanh(self.embed(input_ids)))


def test_spotlight_on_a_padded_batch_counts_only_the_real_tokens():
    torch.manual_seed(0)
    model = _TokenCode()
    rows = [torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8]), torch.tensor([1, 2, 9])]
    ids = torch.zeros(3, 4, dtype=torch.long)  # left-padded with token 0
    mask = torch.zeros(3, 4, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, 4 - len(r) :], mask[i, 4 - len(r) :] = r, 1
    kw = dict(epsilon=0.3, n_angles=16, null_bases=3)
    padded = spotlight_model(model, "hook_code", [{"input_ids": ids, "attention_mask": mask}], **kw)
    alone = spotlight_model(model, "hook_code", [r[None] for r in rows], **kw)
    assert padded.result.n == alone.result.n == 9
    assert torch.equal(padded.result.counts, alone.result.counts)
    unmasked = spotlight_model(model, "hook_code", [{"input_ids": ids}], **kw)
    assert unmasked.result.n == 12  # without its mask, the padding is counted too
