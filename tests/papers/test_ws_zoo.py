"""RNN model zoos: the stacked LSTM, batched training, the formal languages, digits, storage."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from papers.weight_space.zoo import (
    DigitTasks,
    LanguageTasks,
    LSTMLayout,
    Zoo,
    ZooFormatError,
    ZooLSTM,
    accepts,
    build_zoo,
    init_params,
    load_member,
    permute_hidden,
    random_permutations,
    sample_strings,
    snapshot_steps,
    stacked_lstm,
    train_step,
)
from papers.weight_space.zoo.lstm import check_params
from papers.weight_space.zoo.tasks import BOS, EOS, image_sequences, rotate_images
from papers.weight_space.zoo.train import learning_rate, make_optimizer

SMALL = LSTMLayout(d_in=6, d_out=6, hidden=8, layers=2)


@pytest.fixture(scope="module")
def tiny_zoo():
    return build_zoo(
        "formal-languages", runs=4, steps=6, batch_size=4, max_n=3, n_return=16, n_store=3, progress=False
    )


# ---------------------------------------------------------------------- stacked LSTM
@pytest.mark.parametrize("layout", [SMALL, LSTMLayout(d_in=4, d_out=10, hidden=5, layers=3)])
def test_stacked_lstm_equals_each_members_hooked_lstm(layout):
    gen = torch.Generator().manual_seed(0)
    params = init_params(3, layout, gen)
    x = torch.randn(3, 2, 7, layout.d_in, generator=gen)
    logits, state = stacked_lstm(params, x[:, :, :4])
    logits2, _ = stacked_lstm(params, x[:, :, 4:], state)  # the state carries over
    for m in range(3):
        model = load_member(params, m, layout)
        want = model(x[m])
        torch.testing.assert_close(torch.cat([logits[m], logits2[m]], dim=1), want, atol=1e-5, rtol=1e-5)


def test_stacked_lstm_with_shared_input_broadcasts_over_members():
    params = init_params(2, SMALL, torch.Generator().manual_seed(1))
    x = torch.randn(3, 5, 6)
    shared, _ = stacked_lstm(params, x)
    per, _ = stacked_lstm(params, x.expand(2, -1, -1, -1))
    torch.testing.assert_close(shared, per)


def test_zoo_lstm_has_nn_lstm_state_dict_keys_and_hooks():
    model = ZooLSTM(6, 6)
    assert list(model.state_dict()) == list(LSTMLayout(6, 6).shapes)
    assert sum(p.numel() for p in model.parameters()) == 13_766  # the paper's generator size
    _, cache = model.run_with_cache(torch.randn(2, 5, 6))
    assert cache["hook_lstm_out"].shape == (2, 5, 32) and cache["hook_logits"].shape == (2, 5, 6)
    # the LSTM is hooked per step: its top layer's h stack is the LSTM output
    assert torch.allclose(cache["lstm.hook_h_l1"], cache["hook_lstm_out"], atol=1e-6)


def test_zoo_member_per_step_edit_changes_only_later_steps():
    from hooked import at_step

    model = ZooLSTM(6, 6)
    x = torch.randn(3, 7, 6)
    plain = model(x)
    edited = model.run_with_hooks(x, fwd_hooks=[("lstm.hook_h_l0", at_step(3, lambda h, hook: h * 0))])
    torch.testing.assert_close(
        edited[:, :3], plain[:, :3], rtol=0, atol=1e-6
    )  # fused per layer vs all layers at once
    assert not torch.allclose(edited[:, 3:], plain[:, 3:])


def test_permuting_hidden_units_keeps_the_function_and_moves_the_weights():
    params = init_params(3, SMALL, torch.Generator().manual_seed(2))
    perms = random_permutations(3, SMALL, torch.Generator().manual_seed(3))
    permuted = permute_hidden(params, perms)
    x = torch.randn(3, 2, 6, 6)
    torch.testing.assert_close(stacked_lstm(permuted, x)[0], stacked_lstm(params, x)[0], atol=1e-6, rtol=1e-5)
    assert not torch.equal(permuted["lstm.weight_hh_l0"], params["lstm.weight_hh_l0"])
    # known answer: unit i of layer 0 in the forget gate block is old unit perms[0][m, i]
    m, i, H = 1, 2, SMALL.hidden
    old = perms[0][m, i]
    torch.testing.assert_close(
        permuted["lstm.weight_ih_l0"][m, H + i], params["lstm.weight_ih_l0"][m, H + old]
    )
    torch.testing.assert_close(
        permuted["lstm.weight_hh_l0"][m, i, i], params["lstm.weight_hh_l0"][m, old, old]
    )


def test_check_params_names_the_bad_tensor():
    params = init_params(2, SMALL)
    params["lstm.weight_hh_l1"] = torch.zeros(2, 32, 9)
    with pytest.raises(ValueError, match=r"lstm\.weight_hh_l1.*\(2, 32, 9\)"):
        check_params(params, SMALL)
    del params["head.bias"]
    with pytest.raises(ValueError, match="missing.*head.bias"):
        check_params(params, SMALL)


# ---------------------------------------------------------------------- batched training
def test_stacked_training_step_equals_per_model_step():
    """Three AdamW steps of the stacked zoo == three steps of each member trained alone."""
    gen = torch.Generator().manual_seed(4)
    tasks = LanguageTasks(torch.tensor([[0, 1, -1, 0], [0, -2, 0, 2], [0, 0, 0, 0]]), max_n=3)
    layout = tasks.layout(hidden=8)
    init = init_params(3, layout, gen)
    wd = torch.tensor([0.0, 0.01, 0.1])
    stacked = {k: v.clone().requires_grad_() for k, v in init.items()}
    opt = make_optimizer(stacked, 0.01)
    singles = [load_member(init, m, layout) for m in range(3)]
    opts = [
        torch.optim.AdamW(s.parameters(), lr=0.01, weight_decay=float(wd[m])) for m, s in enumerate(singles)
    ]
    for step in range(3):
        x, y = tasks.batch(5, gen)
        lr = learning_rate(step, 10, (0.01, 0.003, 0.0003))
        losses = train_step(stacked, opt, x, y, tasks.loss, lr, wd)
        for m, (model, o) in enumerate(zip(singles, opts)):
            for g in o.param_groups:
                g["lr"] = lr
            loss = torch.nn.functional.cross_entropy(model(x[m]).flatten(0, 1), y[m].flatten())
            o.zero_grad()
            loss.backward()
            for key, p in model.state_dict(keep_vars=True).items():  # gradients equal before the update
                torch.testing.assert_close(stacked[key].grad[m], p.grad, atol=1e-6, rtol=1e-4)
            o.step()
            torch.testing.assert_close(losses[m], loss.detach(), atol=1e-6, rtol=1e-5)
    for m, model in enumerate(singles):
        for key, p in model.state_dict().items():
            torch.testing.assert_close(stacked[key][m].detach(), p, atol=1e-6, rtol=1e-4)


def test_snapshot_schedule_and_learning_rate():
    assert snapshot_steps(20_000) == [0, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000]
    assert snapshot_steps(400) == [0, 2, 4, 10, 20, 40, 100, 200, 400]
    assert learning_rate(0, 100) == pytest.approx(0.01)
    assert learning_rate(50, 100) == pytest.approx(0.003)
    assert learning_rate(100, 100) == pytest.approx(0.0003)
    assert learning_rate(25, 100) == pytest.approx(0.0065)


def test_build_zoo_records_snapshots_run_by_run(tiny_zoo):
    zoo = tiny_zoo
    assert len(zoo) == 4 * len(zoo.meta["snapshots"])
    assert zoo.runs.tolist() == [r for r in range(4) for _ in zoo.meta["snapshots"]]
    assert zoo.steps[: len(zoo.meta["snapshots"])].tolist() == zoo.meta["snapshots"]
    first, last = zoo.params["head.weight"][0], zoo.params["head.weight"][len(zoo.meta["snapshots"]) - 1]
    assert not torch.equal(first, last)  # the run trained between its first and last snapshot
    # the stored log-probs are the member's own on its stored sequences
    i = 5
    model = zoo.model(i)
    seqs = torch.arange(zoo.sequences.shape[1])
    want = model(zoo.inputs(torch.full_like(seqs, i), seqs)).log_softmax(-1)
    torch.testing.assert_close(zoo.targets(torch.full_like(seqs, i), seqs), want, atol=1e-5, rtol=1e-4)
    assert ((zoo.sequences[..., 0]) == BOS).all()


# ---------------------------------------------------------------------- formal languages
task_vectors = st.lists(st.integers(-3, 2), min_size=3, max_size=3).map(lambda d: [0, *d])


@settings(max_examples=25, deadline=None)
@given(task=task_vectors, seed=st.integers(0, 10_000))
def test_language_samples_are_accepted_and_edits_are_not(task, seed):
    tasks = torch.tensor([task])
    strings = sample_strings(tasks, 8, 40, 6, torch.Generator().manual_seed(seed))
    assert accepts(tasks, strings).all()
    body_len = (strings[0] != EOS).sum(-1) - 1  # symbols between BOS and EOS
    # dropping the last symbol breaks the counts
    dropped = strings.clone()
    rows = torch.arange(8)
    dropped[0, rows, body_len] = EOS
    nonempty = body_len > 0
    assert not accepts(tasks, dropped)[0, nonempty].any()
    # no EOS at all: rejected
    assert not accepts(tasks, torch.where(strings == EOS, 0, strings)).any()


def test_accepts_known_answers():
    d = torch.tensor([[0, 1, -1, 0]])  # a^n b^(n+1) c^(n-1) d^n

    def s(text):
        ids = [BOS] + ["abcd".index(ch) for ch in text] + [EOS] * (14 - len(text))
        return torch.tensor([[ids]])

    assert accepts(d, s("abbd"))  # n=1: no c
    assert not accepts(d, s("abbcd"))  # one c too many
    assert accepts(d, s("aabbbcdd"))  # n=2
    assert not accepts(d, s("ababbcdd"))  # right counts, wrong order
    assert not accepts(d, s("aabbcdd"))  # one b short
    assert accepts(torch.tensor([[0, 0, 0, 0]]), s(""))  # n=0 of the language with d=0


# ---------------------------------------------------------------------- digits
def test_rotation_and_reading_order():
    img = torch.arange(64.0).view(1, 8, 8)
    same = rotate_images(img, torch.tensor([0.0]))[0, 0]
    torch.testing.assert_close(same, img[0], atol=1e-4, rtol=0)
    quarter = rotate_images(img, torch.tensor([90.0]))[0, 0]
    assert torch.allclose(quarter, torch.rot90(img[0], 1), atol=1e-3) or torch.allclose(
        quarter, torch.rot90(img[0], -1), atol=1e-3
    )
    rows = image_sequences(img, "rows")
    assert rows.shape == (1, 9, 8) and rows[0, 0].abs().sum() == 0 and torch.equal(rows[0, 1:], img[0])
    tiles = image_sequences(img, "tiles", tile=2)
    assert tiles.shape == (1, 17, 4)
    assert tiles[0, 1].tolist() == [0.0, 1.0, 8.0, 9.0] and tiles[0, 2].tolist() == [2.0, 3.0, 10.0, 11.0]


def test_digit_tasks_batch_and_evaluation_shapes():
    tasks = DigitTasks(torch.tensor([0.0, 45.0]), read="tiles", tile=4, n_store=3)
    x, y = tasks.batch(5, torch.Generator().manual_seed(0))
    assert x.shape == (2, 5, 5, 16) and y.shape == (2, 5)
    params = init_params(2, tasks.layout(hidden=4))
    ev = tasks.evaluate(params)
    assert ev["sequences"].shape == (2, 3, 5, 16) and ev["logits"].shape == (2, 3, 5, 10)
    assert ((0 <= ev["return"]) & (ev["return"] <= 1)).all()


# ---------------------------------------------------------------------- storage
def test_zoo_round_trip_and_members_load_as_hooked_models(tiny_zoo, tmp_path):
    tiny_zoo.save(tmp_path / "z")
    back = Zoo.load(tmp_path / "z")
    assert back.members == tiny_zoo.members and back.kind == tiny_zoo.kind and back.layout == tiny_zoo.layout
    for k in tiny_zoo.params:
        assert torch.equal(back.params[k], tiny_zoo.params[k])
    assert torch.equal(back.sequences, tiny_zoo.sequences) and torch.equal(back.logits, tiny_zoo.logits)
    model = back.model(3)
    assert isinstance(model, ZooLSTM)
    x = back.inputs(torch.tensor([3]), torch.tensor([0]))
    _, cache = model.run_with_cache(x, names_filter="hook_lstm_out")
    assert cache["hook_lstm_out"].shape == (1, x.shape[1], 32)
    want, _ = stacked_lstm({k: v[3:4] for k, v in back.params.items()}, x[None])
    torch.testing.assert_close(model(x), want[0], atol=1e-5, rtol=1e-5)
    sub = back.subset([1, 3])
    assert len(sub) == 2 and sub.members[1] == back.members[3]


def _rewrite_tensors(folder, edit):
    from hooked.io import read_tensors, write_tensors

    t = read_tensors(folder / "zoo.safetensors")
    edit(t)
    write_tensors(folder / "zoo.safetensors", t)


def test_bad_zoo_files_say_what_is_wrong(tiny_zoo, tmp_path):
    folder = tmp_path / "z"
    tiny_zoo.save(folder)
    with pytest.raises(FileNotFoundError, match="no zoo folder"):
        Zoo.load(tmp_path / "nothing")

    _rewrite_tensors(folder, lambda t: t.pop("params.lstm.weight_hh_l1"))
    with pytest.raises(ZooFormatError, match=r"missing tensors \['params.lstm.weight_hh_l1'\]"):
        Zoo.load(folder)

    tiny_zoo.save(folder)
    _rewrite_tensors(folder, lambda t: t.__setitem__("params.head.weight", t["params.head.weight"][:, :, :5]))
    with pytest.raises(
        ZooFormatError, match=r"params\['head.weight'\] has shape .*expected \[members, 6, 32\]"
    ):
        Zoo.load(folder)

    tiny_zoo.save(folder)
    _rewrite_tensors(folder, lambda t: t.__setitem__("logits", t["logits"][:, :, :-1]))
    with pytest.raises(ZooFormatError, match="'logits' has shape"):
        Zoo.load(folder)

    tiny_zoo.save(folder)
    index = json.loads((folder / "zoo.json").read_text())
    index["members"] = index["members"][:-1]
    index["n_members"] -= 1
    (folder / "zoo.json").write_text(json.dumps(index))
    with pytest.raises(ZooFormatError, match=r"\d+ member records but the parameters hold \d+ members"):
        Zoo.load(folder)

    index["format"] = "something-else"
    (folder / "zoo.json").write_text(json.dumps(index))
    with pytest.raises(ZooFormatError, match="not a zoo index"):
        Zoo.load(folder)

    tiny_zoo.save(folder)
    (folder / "zoo.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Zoo.load(folder)


def test_zoo_rejects_non_finite_parameters(tiny_zoo):
    params = dict(tiny_zoo.params)
    params["head.bias"] = params["head.bias"].clone()
    params["head.bias"][0, 0] = float("nan")
    with pytest.raises(ZooFormatError, match="head.bias.*NaN"):
        Zoo(
            kind=tiny_zoo.kind,
            layout=tiny_zoo.layout,
            params=params,
            sequences=tiny_zoo.sequences,
            logits=tiny_zoo.logits,
            members=tiny_zoo.members,
        )


def test_zoo_lstm_model_entry_loads_a_member(tiny_zoo, tmp_path):
    from hooked import registry

    tiny_zoo.save(tmp_path / "z")
    model, batch = registry.get("model", "zoo-lstm").call(zoo=str(tmp_path / "z"), member=2)
    assert isinstance(model, ZooLSTM) and batch.shape[-1] == 6
    assert torch.equal(model.state_dict()["head.bias"], tiny_zoo.params["head.bias"][2])
