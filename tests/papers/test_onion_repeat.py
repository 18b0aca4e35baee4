"""The repeat task: data uniqueness and held-out split, model semantics, training, checkpoints."""

from __future__ import annotations

import pytest
import torch

from hooked import checkpoint
from papers.onion.repeat import (
    RepeatModel,
    evaluate,
    exact_match,
    make_repeat_data,
    sample_unique,
    sequence_keys,
    sequence_loss,
    train_repeat,
)


@pytest.fixture(scope="module")
def data():
    return make_repeat_data(n_train=20_000, n_valid=1000, seed=3)


def test_sequences_are_unique_and_validation_is_held_out(data):
    train_keys, valid_keys = data.train.keys(30), data.valid.keys(30)
    assert train_keys.unique().numel() == len(data.train) == 20_000
    assert valid_keys.unique().numel() == len(data.valid) == 1000
    assert not torch.isin(train_keys, valid_keys).any()
    for split in (data.train, data.valid):
        lengths = split.lengths.long()
        assert lengths.min() >= 2 and lengths.max() <= 9
        past_end = torch.arange(9)[None, :] >= lengths[:, None]
        assert (split.tokens[past_end] == 0).all() and split.tokens.max() < 30
    # at most 20% of the 900 sequences of length 2 are held out
    assert (data.valid.lengths == 2).sum() <= 180
    assert set(data.valid.lengths.tolist()) == set(range(2, 10))


def test_keys_tell_lengths_apart_and_sampling_is_seeded():
    tokens = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    keys = sequence_keys(tokens, torch.tensor([2, 3, 2]), 30)
    assert keys.unique().numel() == 3
    a = sample_unique(100, generator=torch.Generator().manual_seed(1))
    b = sample_unique(100, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.tokens, b.tokens)
    with pytest.raises(ValueError, match="only 30 sequences"):
        sample_unique(31, min_len=1, max_len=1)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_mixed_lengths_match_rows_run_alone(cell):
    torch.manual_seed(0)
    model = RepeatModel(cell, 16)
    x = torch.randint(30, (4, 6))
    lengths = torch.tensor([6, 2, 4, 3])
    logits = model(x, lengths)
    assert logits.shape == (4, 6, 30)
    for i, n in enumerate(lengths.tolist()):
        alone = model(x[i : i + 1, :n])
        assert torch.allclose(logits[i, :n], alone[0], atol=1e-5)
    assert model.encode(x, lengths).shape == (4, model.memory_size)
    assert model.memory_size == (32 if cell == "lstm" else 16)


def test_memory_hook_and_one_time_axis_for_encoder_and_decoder():
    model = RepeatModel("gru", 8)
    x = torch.randint(30, (3, 5))
    out, cache = model.run_with_cache(x, names_filter=["hook_memory", "rnn.hook_h_l0"])
    assert cache["hook_memory"].shape == (3, 8)
    assert cache["rnn.hook_h_l0"].shape == (3, 10, 8)  # 5 encoder steps, then 5 decoder steps
    assert torch.allclose(cache["rnn.hook_h_l0"][:, 4], cache["hook_memory"])
    # editing the memory changes the decoder's output; editing the last decoder step does not
    zeroed = model.run_with_hooks(x, fwd_hooks=[("hook_memory", lambda h, hook: torch.zeros_like(h))])
    assert torch.allclose(zeroed, model.decode(torch.zeros(3, 8), x))
    assert not torch.allclose(zeroed, out)


def test_decoder_inputs_of_both_variants():
    torch.manual_seed(0)
    x, other = torch.randint(30, (2, 5)), torch.randint(30, (2, 5))
    teacher = RepeatModel("gru", 8)
    memory = teacher.encode(x)
    assert not torch.allclose(teacher.decode(memory, x), teacher.decode(memory, other))
    # step t reads target t-1: the first step does not depend on the target
    assert torch.allclose(teacher.decode(memory, x)[:, 0], teacher.decode(memory, other)[:, 0])
    blind = RepeatModel("gru", 8, no_input=True)
    memory = blind.encode(x)
    assert torch.allclose(blind.decode(memory, x), blind.decode(memory, other))


def test_loss_and_exact_match_known_answers():
    target = torch.tensor([[1, 2, 0], [1, 2, 2]])
    lengths = torch.tensor([2, 3])
    logits = torch.full((2, 3, 4), -10.0)
    logits[0, 0, 1] = logits[0, 1, 2] = logits[0, 2, 3] = 10.0  # row 0 right inside its length
    logits[1, 0, 1] = logits[1, 1, 2] = logits[1, 2, 3] = 10.0  # row 1 wrong at its last position
    assert exact_match(logits, target, lengths).tolist() == [True, False]
    per_pos = torch.nn.functional.cross_entropy(logits[1, 2][None], target[1, 2][None])
    assert torch.allclose(sequence_loss(logits, target, lengths), per_pos / 5, atol=1e-4)


def test_training_learns_and_checkpoint_round_trips(data, tmp_path):
    torch.manual_seed(0)
    model = RepeatModel("gru", 24)
    history = train_repeat(model, data, steps=80, batch_size=64, progress=False, eval_every=80)
    assert history["loss"][-1] < history["loss"][0]
    assert history["eval_step"] == [80] and 0.0 <= history["valid_accuracy"][0] <= 1.0
    checkpoint.save(model, tmp_path / "ckpt", meta={"valid_accuracy": history["valid_accuracy"][-1]})
    loaded = checkpoint.load(tmp_path / "ckpt")
    assert isinstance(loaded, RepeatModel) and loaded.config == model.config
    x, lengths = data.valid.batch(torch.arange(50))
    assert torch.equal(loaded(x, lengths), model(x, lengths))
    assert evaluate(loaded, data.valid) == evaluate(model, data.valid)
    assert (
        checkpoint.read_config(tmp_path / "ckpt")["meta"]["valid_accuracy"] == history["valid_accuracy"][-1]
    )
