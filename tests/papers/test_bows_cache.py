"""The cached bag-of-words dataset is checked when read back: any damaged, swapped or inconsistent
entry is reported and rebuilt, so the dataset returned always equals a fresh build."""

from __future__ import annotations

import json
import random
import shutil
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooked.io import file_sha256, read_json, write_json, write_tensors
from papers.bows import corpus as C
from tests.papers.test_superposition_data import DOCS

GROUPS = {"months": ["January", "February", "March"], "animals": ["cat", "dog"]}
KW = dict(vocab_size=12, window=2, groups=GROUPS)


def build(**kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = C.bow_dataset(DOCS, **{**KW, **kw})
    return ds, [str(w.message) for w in caught if "bag-of-words cache" in str(w.message)]


def rewrite(folder, offsets, ids, vocab_json=None):
    """Write an entry whose hashes and metadata are consistent, but whose content may be wrong."""
    info = read_json(folder / "vocab.json")
    if vocab_json is not None:
        info["vocab"] = vocab_json
    info["vocab_sha256"] = C._vocab_hash(info["vocab"])
    info["meta"]["samples"] = len(offsets) - 1
    samples = write_tensors(
        folder / "samples.safetensors",
        {"offsets": offsets, "ids": ids},
        metadata={"key": info["key"], "vocab_sha256": info["vocab_sha256"]},
    )
    info["samples_sha256"] = file_sha256(samples)
    write_json(folder / "vocab.json", info)


def damage(folder, how: str, rng: random.Random, other) -> None:
    samples, vocab = folder / "samples.safetensors", folder / "vocab.json"
    packed = C.read_tensors(samples)
    offsets, ids = packed["offsets"].clone(), packed["ids"].clone()
    info = read_json(vocab)
    if how == "flip a byte":
        data = bytearray(samples.read_bytes())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        samples.write_bytes(bytes(data))
    elif how == "truncate":
        data = samples.read_bytes()
        samples.write_bytes(data[: rng.randrange(len(data))])
    elif how == "delete samples":
        samples.unlink()
    elif how == "delete vocab":
        vocab.unlink()
    elif how == "not json":
        vocab.write_text("{ not json")
    elif how == "missing key":
        del info[rng.choice(sorted(info))]
        write_json(vocab, info)
    elif how == "negative id":
        ids[rng.randrange(len(ids))] = -1
        rewrite(folder, offsets, ids)
    elif how == "id out of range":
        ids[rng.randrange(len(ids))] = len(info["vocab"]["words"])
        rewrite(folder, offsets, ids)
    elif how == "unsorted offsets":
        i = rng.randrange(1, len(offsets) - 1)
        offsets[i] = offsets[-1] + 1 if offsets[i + 1] == offsets[i] else offsets[i + 1] + 1
        rewrite(folder, offsets, ids)
    elif how == "unsorted ids in a sample":
        k = next(k for k in range(len(offsets) - 1) if offsets[k + 1] - offsets[k] >= 2)
        a = int(offsets[k])
        ids[a], ids[a + 1] = ids[a + 1].clone(), ids[a].clone()
        rewrite(folder, offsets, ids)
    elif how == "permuted vocabulary":
        words = list(info["vocab"]["words"])
        while words == info["vocab"]["words"]:
            rng.shuffle(words)
        info["vocab"]["words"] = words
        write_json(vocab, info)
    elif how == "permuted vocabulary, hash recomputed":
        words = list(info["vocab"]["words"])
        while words == info["vocab"]["words"]:
            rng.shuffle(words)
        info["vocab"]["words"] = words
        info["vocab_sha256"] = C._vocab_hash(info["vocab"])
        write_json(vocab, info)
    elif how == "samples from another entry":
        shutil.copy(other / "samples.safetensors", samples)
    elif how == "whole other entry":
        shutil.copy(other / "samples.safetensors", samples)
        shutil.copy(other / "vocab.json", vocab)
    else:
        raise AssertionError(how)


DAMAGES = [
    "flip a byte",
    "truncate",
    "delete samples",
    "delete vocab",
    "not json",
    "missing key",
    "negative id",
    "id out of range",
    "unsorted offsets",
    "unsorted ids in a sample",
    "permuted vocabulary",
    "permuted vocabulary, hash recomputed",
    "samples from another entry",
    "whole other entry",
]


def same(a, b):
    return torch.equal(a.offsets, b.offsets) and torch.equal(a.ids, b.ids) and a.vocab.words == b.vocab.words


@pytest.mark.parametrize("how", DAMAGES)
def test_each_damage_is_reported_and_rebuilt(how, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKED_CACHE", str(tmp_path))
    fresh, _ = build()
    other, _ = build(window=3)
    folder, other_folder = tmp_path / "bows" / fresh.meta["cache"].split("/")[-1], other.meta["cache"]
    damage(folder, how, random.Random(0), C.Path(other_folder))
    again, warned = build()
    assert warned and str(folder) in warned[0]
    assert not again.meta["cached"] and same(again, fresh)
    reread, warned = build()  # the rebuilt entry is whole
    assert reread.meta["cached"] and not warned and same(reread, fresh)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=st.sampled_from(DAMAGES), seed=st.integers(0, 2**16))
def test_any_damage_still_gives_the_fresh_dataset(tmp_path_factory, how, seed):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOOKED_CACHE", str(root))
        fresh, _ = build()
        other, _ = build(window=3)
        damage(C.Path(fresh.meta["cache"]), how, random.Random(seed), C.Path(other.meta["cache"]))
        again, _ = build()
    assert same(again, fresh)


def test_check_packed_accepts_what_window_samples_builds():
    offsets, ids = C.window_samples([[0, 2], [1], [], [0, 3]], [0, 0, 1, 1], window=2)
    C.check_packed(offsets, ids, 4)
    with pytest.raises(ValueError, match=r"word ids must lie in \[0, 3\)"):
        C.check_packed(offsets, ids, 3)


def test_an_intact_cache_is_read_not_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKED_CACHE", str(tmp_path))
    fresh, _ = build()
    folder = C.Path(fresh.meta["cache"])
    stamp = (folder / "vocab.json").stat().st_mtime_ns
    again, warned = build()
    assert again.meta["cached"] and not warned and (folder / "vocab.json").stat().st_mtime_ns == stamp
    assert json.loads((folder / "vocab.json").read_text())["samples_sha256"] == file_sha256(
        folder / "samples.safetensors"
    )
