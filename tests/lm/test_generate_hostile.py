"""``lm.generate``, ``lm.to_tokens`` and ``lm.tokenize`` given what a hostile user gives them
(issue 22): every bad argument is refused before the first forward with a message naming it, and
the settings that are accepted answer as transformers' own ``generate`` does."""

from __future__ import annotations

import threading

import pytest
import torch

from hooked import lm
from hooked.errors import OptionError
from tests.lm.conftest import TEXTS
from tests.lm.test_generate import PROMPTS, hf_greedy

PROMPT = "the cat sat"
IDS = torch.tensor([[4, 6, 8], [4, 7, 8]])

# (label, prompts, keyword arguments, exception, message)
REFUSED = [
    ("max_new_tokens=0", PROMPT, dict(max_new_tokens=0), OptionError, "max_new_tokens must be a positive"),
    ("max_new_tokens<0", PROMPT, dict(max_new_tokens=-1), OptionError, "max_new_tokens must be a positive"),
    ("max_new_tokens float", PROMPT, dict(max_new_tokens=2.0), OptionError, "got 2.0"),
    ("max_new_tokens bool", PROMPT, dict(max_new_tokens=True), OptionError, "got True"),
    ("max_new_tokens str", PROMPT, dict(max_new_tokens="3"), OptionError, "got '3'"),
    (
        "temperature 0",
        PROMPT,
        dict(do_sample=True, temperature=0),
        OptionError,
        "temperature must be a finite",
    ),
    (
        "temperature<0",
        PROMPT,
        dict(do_sample=True, temperature=-1),
        OptionError,
        "temperature must be a finite",
    ),
    ("temperature nan", PROMPT, dict(do_sample=True, temperature=float("nan")), OptionError, "got nan"),
    ("temperature inf", PROMPT, dict(do_sample=True, temperature=float("inf")), OptionError, "got inf"),
    (
        "greedy temperature",
        PROMPT,
        dict(temperature=0.5),
        ValueError,
        "temperature=0.5 is a sampling setting",
    ),
    ("greedy top_p", PROMPT, dict(top_p=0.5), ValueError, "top_p=0.5 is a sampling setting"),
    ("greedy top_k", PROMPT, dict(top_k=3), ValueError, "top_k=3 is a sampling setting"),
    ("greedy seed", PROMPT, dict(seed=1), ValueError, "seed=1 is a sampling setting"),
    ("greedy two", PROMPT, dict(top_k=3, top_p=0.5), ValueError, "top_k=3, top_p=0.5 are sampling settings"),
    ("top_k 0", PROMPT, dict(do_sample=True, top_k=0), OptionError, "top_k must be a positive integer"),
    ("top_k<0", PROMPT, dict(do_sample=True, top_k=-1), OptionError, "top_k must be a positive integer"),
    ("top_k float", PROMPT, dict(do_sample=True, top_k=2.5), OptionError, "top_k must be a positive integer"),
    (
        "top_p 0",
        PROMPT,
        dict(do_sample=True, top_p=0),
        OptionError,
        r"top_p must be a finite number > 0 and <= 1",
    ),
    ("top_p>1", PROMPT, dict(do_sample=True, top_p=1.5), OptionError, "got 1.5"),
    ("top_p nan", PROMPT, dict(do_sample=True, top_p=float("nan")), OptionError, "got nan"),
    ("seed float", PROMPT, dict(do_sample=True, seed=1.5), TypeError, "seed must be an integer"),
    ("do_sample str", PROMPT, dict(do_sample="False"), OptionError, "do_sample must be True or False"),
    ("stop_at_eos int", PROMPT, dict(stop_at_eos=0), OptionError, "stop_at_eos must be True or False"),
    ("empty prompt", "", {}, ValueError, "have no tokens"),
    ("no prompts", [], {}, ValueError, "prompts is an empty list"),
    ("one empty of two", ["the cat", ""], {}, ValueError, "have no tokens"),
    ("a non-string", ["the", 3], {}, TypeError, "prompts must be a string"),
    (
        "ids [1, 0]",
        torch.zeros(1, 0, dtype=torch.long),
        {},
        ValueError,
        r"prompt ids \(1, 0\) hold no prompt",
    ),
    (
        "ids [0, 3]",
        torch.zeros(0, 3, dtype=torch.long),
        {},
        ValueError,
        r"prompt ids \(0, 3\) hold no prompt",
    ),
    ("float ids", torch.ones(1, 3), {}, ValueError, "must be integer"),
    ("bool ids", torch.ones(1, 3, dtype=torch.bool), {}, ValueError, "must be integer"),
    (
        "id = vocab",
        torch.tensor([[4, 64]]),
        {},
        IndexError,
        "prompt ids holds 64, outside the vocabulary of 64",
    ),
    ("negative id", torch.tensor([[4, -1]]), {}, IndexError, "prompt ids holds -1, outside the vocabulary"),
    (
        "a row of padding only",
        {"input_ids": IDS, "attention_mask": torch.tensor([[1, 1, 1], [0, 0, 0]])},
        {},
        ValueError,
        r"rows \[1\] of the attention mask have no real token",
    ),
    (
        "a mask of 2s",
        {"input_ids": IDS, "attention_mask": torch.tensor([[1, 1, 1], [0, 2, 1]])},
        {},
        ValueError,
        "attention_mask must hold only 0",
    ),
    ("eos out of vocab", PROMPT, dict(eos_token_id=999), IndexError, "eos_token_id holds 999"),
    ("eos str", PROMPT, dict(eos_token_id="2"), TypeError, "eos_token_id must be a token id"),
    ("eos float", PROMPT, dict(eos_token_id=[2.0]), TypeError, "eos_token_id must be a token id"),
]


@pytest.mark.parametrize("backend", ["wrap", "bridge"])
@pytest.mark.parametrize(
    "prompts, kwargs, error, match", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_bad_arguments_are_refused_before_the_first_forward(tiny, backend, prompts, kwargs, error, match):
    model = tiny[backend]
    name = lm.residual_hooks(model)[0]
    fired = []
    kwargs = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(error, match=match):
        lm.generate(model, prompts, fwd_hooks=[(name, lambda a, hook: fired.append(1))], **kwargs)
    assert fired == []  # nothing ran
    assert not any(hp.has_hooks() for hp in model.hook_dict.values())


def test_sampling_settings_at_their_edges_answer_as_their_meaning(tiny):
    """``top_p`` below every token's probability keeps only the most likely token (greedy), as does
    ``top_k=1``; ``top_k`` above the vocabulary is no cut (the same samples as without it); a
    temperature given as a one-element tensor is its number."""
    model = tiny["wrap"]
    greedy = lm.generate(model, TEXTS, 5, stop_at_eos=False, return_tokens=True).tokens

    def sample(**kw):
        return lm.generate(
            model, TEXTS, 5, do_sample=True, stop_at_eos=False, return_tokens=True, **kw
        ).tokens

    assert torch.equal(sample(top_p=1e-9, seed=3, temperature=3.0), greedy)
    assert torch.equal(sample(top_k=1, seed=3, temperature=3.0), greedy)
    free = sample(seed=4, temperature=3.0)
    assert not torch.equal(free, greedy)
    assert torch.equal(sample(top_k=10**6, seed=4, temperature=3.0), free)
    assert torch.equal(sample(top_p=1.0, seed=4, temperature=3.0), free)
    assert torch.equal(sample(seed=4, temperature=torch.tensor(3.0)), free)


def test_stop_tokens_of_a_batch_of_different_lengths_are_transformers(tiny):
    """Prompts of different lengths in one left-padded batch, with end-of-sequence ids given by
    the caller (two of them): the tokens and where each row stops are transformers' own."""
    hf, model = tiny["hf"], tiny["wrap"]
    batch = lm.tokenize(hf, TEXTS, padding_side="left")
    free = hf_greedy(hf, batch, 8)
    stops = [int(free[0, 2]), int(free[2, 1])]  # tokens the model does produce: rows stop early
    assert 0 not in stops and 2 not in stops
    want = hf_greedy(hf, batch, 8, eos_token_id=stops)
    got = lm.generate(model, TEXTS, 8, eos_token_id=stops, return_tokens=True)
    assert torch.equal(got.tokens, want)
    for row, n in zip(want.tolist(), got.lengths.tolist()):  # up to its first stop token, included
        first = next((i for i, t in enumerate(row) if t in stops), None)
        assert n == (len(row) if first is None else first + 1)
    assert got.lengths[0] <= 3 and got.lengths[2] <= 2
    assert got.texts[0] == hf.tokenizer.decode(want[0, : got.lengths[0] - 1])


def test_learned_positions_are_refused_past_the_table_and_used_up_to_it(tiny_gpt2):
    """GPT-2's position table has 128 rows: a 3-token prompt takes 126 new tokens (the last is
    never fed back), equal to transformers'; one more is refused before any forward."""
    hf, model = tiny_gpt2["hf"], tiny_gpt2["wrap"]
    ids = torch.tensor([[4, 6, 8]])
    with pytest.raises(ValueError, match=r"need 129 positions.*has 128; .*max_new_tokens=126"):
        lm.generate(model, ids, 127, stop_at_eos=False)
    got = lm.generate(model, ids, 126, stop_at_eos=False, return_tokens=True).tokens
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    assert torch.equal(got, hf_greedy(hf, batch, 126, min_new_tokens=126))


def test_pass_hooks_need_the_cache_plain_hooks_do_not(tiny):
    model = tiny["wrap"]
    name = lm.residual_hooks(model)[1]
    for wrapper in (lm.on_prompt, lm.on_new_tokens):
        with pytest.raises(ValueError, match=f"the {wrapper.__name__} hook at"):
            lm.generate(model, PROMPT, 3, fwd_hooks=[(name, wrapper(lambda a, hook: a + 1))], use_cache=False)

    def steer(act, hook):
        return act + 1

    cached = lm.generate(model, PROMPT, 3, fwd_hooks=[(name, steer)], stop_at_eos=False)
    assert cached == lm.generate(
        model, PROMPT, 3, fwd_hooks=[(name, steer)], stop_at_eos=False, use_cache=False
    )
    assert cached != lm.generate(model, PROMPT, 3, stop_at_eos=False)


def test_calls_from_two_threads_take_turns(tiny):
    """A steering call holds the model while a plain call from another thread waits: without the
    turn-taking, the plain call's forwards would run the steering hook attached to the shared model."""
    model = tiny["wrap"]
    name = lm.residual_hooks(model)[1]
    plain = lm.generate(model, TEXTS, 4, stop_at_eos=False)
    steered_alone = lm.generate(model, TEXTS, 4, stop_at_eos=False, fwd_hooks=[(name, lambda a, hook: a + 3)])
    assert steered_alone != plain
    inside, other_done = threading.Event(), threading.Event()
    results = {}

    def steer(act, hook):
        if threading.current_thread().name == "steer" and not inside.is_set():
            inside.set()
            other_done.wait(1.0)  # the plain call runs now, unless it has to wait its turn
        return act + 3

    def run_steered():
        results["steered"] = lm.generate(model, TEXTS, 4, stop_at_eos=False, fwd_hooks=[(name, steer)])

    def run_plain():
        inside.wait(5.0)
        results["plain"] = lm.generate(model, TEXTS, 4, stop_at_eos=False)
        other_done.set()

    threads = [threading.Thread(target=run_steered, name="steer"), threading.Thread(target=run_plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"steered": steered_alone, "plain": plain}
    assert not any(hp.has_hooks() for hp in model.hook_dict.values())


# ---------------------------------------------------------------------- tokens
@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda m: lm.to_tokens(m, PROMPT, length=-1),
            OptionError,
            "length must be a positive integer, got -1",
        ),
        (
            lambda m: lm.to_tokens(m, PROMPT, length=0),
            OptionError,
            "length must be a positive integer, got 0",
        ),
        (lambda m: lm.to_tokens(m, PROMPT, length=2.5), OptionError, "length must be a positive integer"),
        (lambda m: lm.to_tokens(m, ""), ValueError, "1 of the texts have no tokens"),
        (lambda m: lm.to_tokens(m, []), ValueError, "texts is an empty list"),
        (lambda m: lm.to_tokens(m, [1, 2]), TypeError, "texts must be strings, got a int"),
        (lambda m: lm.to_tokens(m, 5), TypeError, "texts must be a string or a list of strings"),
        (lambda m: lm.to_tokens(m, PROMPT, bos="no"), OptionError, "bos must be True or False"),
        (lambda m: lm.tokenize(m, [PROMPT], max_length=0), OptionError, "max_length must be a positive"),
        (lambda m: lm.tokenize(m, [PROMPT], max_length=-1), OptionError, "max_length must be a positive"),
        (lambda m: lm.tokenize(m, [PROMPT], max_length=1.5), OptionError, "max_length must be a positive"),
        (lambda m: lm.tokenize(m, []), ValueError, "texts is an empty list"),
        (lambda m: lm.tokenize(m, [""]), ValueError, "have no tokens"),
        (lambda m: lm.tokenize(m, [PROMPT], bos=1), OptionError, "bos must be True or False"),
        (lambda m: lm.tokenize(m, [PROMPT], padding_side="middle"), ValueError, "padding_side must be"),
        (lambda m: lm.token_id(m, 5), TypeError, "token_id needs a string"),
        (
            lambda m: lm.last_positions(torch.zeros(2, 0, dtype=torch.long)),
            ValueError,
            "at least one position",
        ),
        (
            lambda m: lm.first_positions(torch.zeros(2, 0, dtype=torch.long)),
            ValueError,
            "at least one position",
        ),
        (
            lambda m: lm.last_positions(
                {"input_ids": IDS, "attention_mask": torch.tensor([[1, 1, 1], [0, 2, 1]])}
            ),
            ValueError,
            "attention_mask must hold only 0",
        ),
        (
            lambda m: lm.last_positions({"input_ids": IDS, "attention_mask": [[1, 1, 1], [1, 1, 1]]}),
            TypeError,
            "attention_mask must be a tensor",
        ),
    ],
)
def test_bad_token_arguments_are_refused(tiny, call, error, match):
    with pytest.raises(error, match=match):
        call(tiny["wrap"])


def test_token_lengths_and_empty_texts_answer_what_they_say(tiny):
    """``length=n`` keeps the first n tokens (``-1`` used to drop the last one); an empty text is
    one BOS token with ``bos=True``; a tuple of texts is a list of them."""
    model = tiny["wrap"]
    whole = lm.to_tokens(model, PROMPT)
    assert whole.tolist() == [[4, 6, 8]]
    assert lm.to_tokens(model, PROMPT, length=2).tolist() == [[4, 6]]
    assert lm.to_tokens(model, PROMPT, length=3).tolist() == [[4, 6, 8]]
    assert lm.to_tokens(model, "", bos=True).tolist() == [[1]]
    assert lm.to_tokens(model, (PROMPT, "a dog ran")).tolist() == [[4, 6, 8], [5, 7, 13]]
    batch = lm.tokenize(model, ("a", PROMPT), max_length=2)
    assert batch["input_ids"].tolist() == [[0, 5], [4, 6]] and batch["attention_mask"].tolist() == [
        [0, 1],
        [1, 1],
    ]


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_stop_tokens_and_padding_sides_are_transformers(smol):
    """On SmolLM2, prompts of different lengths with caller-given stop ids, left- or right-padded:
    the tokens and where each row stops are transformers' own greedy ``generate``."""
    hf, model = smol["hf"], smol["wrap"]
    batch = lm.tokenize(hf, PROMPTS)
    free = hf_greedy(hf, batch, 10)
    stops = [int(free[0, 3]), int(free[1, 1])]
    want = hf_greedy(hf, batch, 10, eos_token_id=stops)
    for prompts in (PROMPTS, lm.tokenize(model, PROMPTS, padding_side="right")):
        got = lm.generate(model, prompts, 10, eos_token_id=stops, return_tokens=True)
        assert got.tokens.shape == want.shape
        for row, mine, n in zip(want.tolist(), got.tokens.tolist(), got.lengths.tolist()):
            first = next((i for i, t in enumerate(row) if t in stops), None)
            assert n == (len(row) if first is None else first + 1)  # up to its stop token, included
            assert mine[:n] == row[:n]  # (the padding after it may use another pad id)
        assert got.lengths[0] <= 4 and got.lengths[1] <= 2
