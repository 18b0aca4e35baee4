"""Encoders of RNN weights: DWS equivariance, probing through the target RNN, emulation."""

from __future__ import annotations

import pytest
import torch

from hooked.protocol import check_hookable
from papers.weight_space.encoders import (
    ENCODERS,
    DWSEncoder,
    Emulator,
    ProbingEncoder,
    build_encoder,
    embed_zoo,
    tensor_specs,
    total_variation,
    train_emulation,
)
from papers.weight_space.zoo import (
    LSTMLayout,
    Zoo,
    init_params,
    load_member,
    permute_hidden,
    random_permutations,
)

LAYOUT = LSTMLayout(d_in=6, d_out=6, hidden=8, layers=2)
TINY = {
    "flat": dict(hidden=(16,)),
    "stats": dict(hidden=(16,)),
    "transformer": dict(d_model=16, n_layers=1, heads=2),
    "dws": dict(channels=(6, 5), hidden=(16,)),
    "noninteractive": dict(core=16, hidden=16, probes=2),
    "interactive": dict(core=16, hidden=16, probes=2),
}


def tiny(name: str, layout: LSTMLayout = LAYOUT, **kw):
    torch.manual_seed(0)
    return build_encoder(name, layout, probe_steps=5, **{**TINY[name], **kw})


def params(m: int = 3, seed: int = 0, layout: LSTMLayout = LAYOUT):
    return init_params(m, layout, torch.Generator().manual_seed(seed))


def permute_output(t: torch.Tensor, groups: tuple[str, ...], perms: list[torch.Tensor]) -> torch.Tensor:
    """Apply the hidden permutations to a DWS output tensor [M, C, rows(, cols)] by its axis groups."""
    for axis, g in enumerate(groups):
        if g.startswith("h"):
            p = perms[int(g[1:])]  # [M, H]
            shape = [p.shape[0], 1] + [1] * len(groups)
            shape[2 + axis] = p.shape[1]
            index = p.view(shape).expand(
                *t.shape[:2], *[p.shape[1] if j == axis else t.shape[2 + j] for j in range(len(groups))]
            )
            t = t.gather(2 + axis, index)
    return t


# ---------------------------------------------------------------------- DWS
@pytest.mark.parametrize("layout", [LAYOUT, LSTMLayout(d_in=4, d_out=10, hidden=5, layers=3)])
def test_dws_layers_are_equivariant_and_the_embedding_invariant(layout):
    enc = DWSEncoder(layout, channels=(7, 5), hidden=(16,))
    p = params(4, layout=layout)
    perms = random_permutations(4, layout, torch.Generator().manual_seed(1))
    q = permute_hidden(p, perms)
    _, cache_p = enc.run_with_cache(p)
    _, cache_q = enc.run_with_cache(q)
    specs = tensor_specs(layout)
    checked = 0
    for layer in range(2):
        for key, groups in specs:
            name = f"layers.{layer}.out.hook_{key.replace('lstm.', '').replace('.', '_')}"
            want = permute_output(cache_p[name], groups, perms)
            torch.testing.assert_close(cache_q[name], want, atol=1e-5, rtol=1e-4)
            checked += 1
    assert checked == 2 * len(specs)
    torch.testing.assert_close(cache_q["hook_pooled"], cache_p["hook_pooled"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cache_q["hook_embed"], cache_p["hook_embed"], atol=1e-5, rtol=1e-4)
    # not trivially invariant: the embedding depends on the weights
    assert (enc(params(4, seed=9, layout=layout)) - cache_p["hook_embed"]).abs().max() > 1e-3


def test_dws_is_not_invariant_to_mixing_hidden_units_across_gates():
    """Permuting rows of weight_ih_l0 alone (not a symmetry) changes the embedding."""
    enc = DWSEncoder(LAYOUT, channels=(6,), hidden=(8,))
    p = params(2)
    q = dict(p)
    q["lstm.weight_ih_l0"] = p["lstm.weight_ih_l0"].flip(1)
    assert (enc(p) - enc(q)).abs().max() > 1e-4


# ---------------------------------------------------------------------- every encoder
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_gives_unit_embeddings_through_its_hooks_and_trains(name):
    enc = tiny(name)
    check_hookable(enc)
    p = params(3)
    out, cache = enc.run_with_cache(p)
    assert out.shape == (3, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(cache["hook_embed"], out)
    assert len(enc.hook_dict) > 2  # hook points on its layers too
    (out @ torch.randn(16)).sum().backward()
    grads = [p_.grad for p_ in enc.parameters() if p_.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["flat", "transformer"])
def test_permutation_augmentation_only_while_training(name):
    enc = tiny(name)
    p = params(2)
    enc.eval()
    torch.testing.assert_close(enc(p), enc(p))
    enc.train()
    torch.manual_seed(1)
    a = enc(p)
    b = enc(p)
    assert (a - b).abs().max() > 1e-6  # fresh permutations each call


def test_bad_params_are_named():
    enc = tiny("stats")
    p = params(2)
    p["lstm.weight_hh_l0"] = p["lstm.weight_hh_l0"][:, :, :3]
    with pytest.raises(ValueError, match=r"StatsEncoder params\['lstm.weight_hh_l0'\]"):
        enc(p)


# ---------------------------------------------------------------------- probing
@pytest.mark.parametrize("interactive", [False, True])
def test_probing_encoder_runs_the_target_rnn_on_its_probes(interactive):
    """The answers the encoder reads are the target ZooLSTM's outputs on the probe inputs."""
    enc = tiny("interactive" if interactive else "noninteractive")
    p = params(3)
    _, cache = enc.run_with_cache(p)
    probes, answers = cache["hook_probe_in"], cache["hook_probe_out"]  # [M, T, P, d_in], [M, T, P, d_out]
    assert probes.shape == (3, 5, 2, 6) and answers.shape == (3, 5, 2, 6)
    for m in range(3):
        model = load_member(p, m, LAYOUT)  # the member as a hooked nn.LSTM model
        want = model(probes[m].transpose(0, 1)).log_softmax(-1)  # [P, T, d_out]
        torch.testing.assert_close(answers[m], want.transpose(0, 1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("interactive", [False, True])
def test_probing_gradients_reach_the_probes_not_the_zoo(interactive):
    enc = tiny("interactive" if interactive else "noninteractive")
    zoo_params = {k: v.clone().requires_grad_() for k, v in params(3).items()}
    enc(zoo_params).sum().backward()
    assert all(v.grad is None for v in zoo_params.values())
    decoder_grad = enc.decoder.layers[-1].linear.weight.grad  # it makes the probe inputs
    assert decoder_grad is not None and decoder_grad.abs().sum() > 0
    if not interactive:
        assert enc.static.grad is not None and enc.static.grad.abs().sum() > 0


def test_probing_embedding_depends_on_the_target_and_probe_edits_change_answers():
    enc = tiny("interactive")
    p = params(2)
    q = {k: v.clone() for k, v in p.items()}
    q["head.bias"][:, 0] += 3.0  # a different target network
    assert (enc(p) - enc(q)).abs().max() > 1e-4

    def uniform(x, hook):
        return torch.full_like(x, 1.0 / x.shape[-1])

    from hooked import at_step

    _, clean = enc.run_with_cache(p, names_filter="hook_probe_out")
    with enc.hooks(fwd_hooks=[("hook_probe_in", at_step(2, uniform))]):
        _, edited = enc.run_with_cache(p, names_filter="hook_probe_out")
    torch.testing.assert_close(edited["hook_probe_out"][:, :2], clean["hook_probe_out"][:, :2])
    assert (edited["hook_probe_out"][:, 2] - clean["hook_probe_out"][:, 2]).abs().max() > 1e-5


def test_probing_input_kinds():
    enc = ProbingEncoder(
        LAYOUT,
        interactive=True,
        probe_steps=3,
        probes=1,
        core=8,
        hidden=8,
        probe_input="sigmoid",
        probe_range=(-1.0, 2.5),
    )
    _, cache = enc.run_with_cache(params(2), names_filter="hook_probe_in")
    x = cache["hook_probe_in"]
    assert ((x > -1) & (x < 2.5)).all() and not torch.allclose(x.sum(-1), torch.ones(()))
    enc = ProbingEncoder(LAYOUT, interactive=False, probe_steps=3, probes=2, core=8, hidden=8)
    _, cache = enc.run_with_cache(params(2), names_filter="hook_probe_in")
    torch.testing.assert_close(cache["hook_probe_in"].sum(-1), torch.ones(2, 3, 2))
    torch.testing.assert_close(cache["hook_probe_in"][0], cache["hook_probe_in"][1])  # static: same for all
    with pytest.raises(ValueError, match="probe_input"):
        ProbingEncoder(LAYOUT, probe_input="linear")


# ---------------------------------------------------------------------- emulation
def test_total_variation_known_answers():
    p = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]]).clamp_min(1e-12).log()
    q = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]]).clamp_min(1e-12).log()
    torch.testing.assert_close(total_variation(p, p), torch.zeros(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        total_variation(p, q), torch.tensor([0.5]), atol=1e-6, rtol=0
    )  # mean of 0 and 1


def test_emulator_conditions_on_the_embedding_at_the_first_step():
    emu = Emulator(embed_dim=4, d_in=6, d_out=6, hidden=8, layers=1)
    x = torch.randn(2, 5, 6)
    a = emu(x, torch.randn(2, 4))
    b = emu(x, torch.randn(2, 4))
    assert (a - b).abs().max() > 1e-5
    torch.testing.assert_close(a.exp().sum(-1), torch.ones(2, 5))


def _random_zoo(n: int = 6) -> Zoo:
    gen = torch.Generator().manual_seed(0)
    seqs = torch.randint(0, 6, (n, 2, 7), generator=gen)
    members = [{"run": i, "step": 0, "task": [0, 0, 0, 0], "return": 0.0} for i in range(n)]
    return Zoo("formal-languages", LAYOUT, params(n), seqs, torch.randn(n, 2, 6, 6).log_softmax(-1), members)


def test_train_emulation_updates_the_encoder_and_embed_zoo_reads_hook_embed():
    zoo = _random_zoo()
    enc = tiny("stats")
    before = embed_zoo(enc, zoo)
    run = train_emulation(
        enc, zoo, steps=3, members=4, seqs=2, emulator_hidden=8, emulator_layers=1, progress=False
    )
    assert len(run.losses) == 3 and all(l > 0 for l in run.losses)
    after = embed_zoo(enc, zoo, batch=4)
    assert after.shape == (6, 16) and not torch.allclose(before, after)
    with torch.no_grad():
        torch.testing.assert_close(after, enc(zoo.params))
