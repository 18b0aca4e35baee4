"""Loading errors name the file and what to do; a damaged cached conversion is found by its
manifest and converted again; cached files get the modes of the user's umask."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from hooked import lm
from hooked.lm.loading import folders
from tests.lm.conftest import TEXTS, save_tiny


@pytest.fixture
def folder(tmp_path, tiny_folder):
    """A fresh copy of the tiny model's folder, to damage."""
    return Path(shutil.copytree(tiny_folder, tmp_path / "model"))


def test_a_folder_without_a_tokenizer_says_how_to_add_one(tmp_path, tiny_folder):
    bare = save_tiny(tmp_path / "bare", tokenizer=False)
    with pytest.raises(lm.LMLoadError) as e:
        lm.load(bare, backend="wrap")
    message = str(e.value)
    assert str(bare) in message and "has no tokenizer" in message
    assert "tokenizer.save_pretrained(folder)" in message and "tokenizer=" in message
    model = lm.load(bare, backend="wrap", tokenizer=tiny_folder)  # the tokenizer from elsewhere
    assert lm.generate(model, TEXTS[0], 3) == lm.generate(lm.load(tiny_folder, backend="wrap"), TEXTS[0], 3)
    with pytest.raises(lm.LMLoadError, match=r"could not load a tokenizer from tokenizer='/no/such'"):
        lm.load(bare, backend="hf", tokenizer="/no/such")


def test_missing_or_broken_config(folder):
    (folder / "config.json").write_text('{"model_type": "llama", ')
    with pytest.raises(
        lm.LMLoadError, match=rf"{folder / 'config.json'} is not valid JSON.*save the model again"
    ):
        lm.load(folder, backend="hf")
    (folder / "config.json").unlink()
    with pytest.raises(
        lm.LMLoadError, match=rf"{folder} is not a Hugging Face model folder \(it has no config.json\)"
    ):
        lm.load(folder, backend="hf")


def test_truncated_or_missing_weights_name_the_file(folder):
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(lm.LMLoadError) as e:
        lm.load(folder, backend="hf")
    assert f"{weights} is damaged" in str(e.value) and "truncated" in str(e.value)
    assert "save the model again" in str(e.value)
    weights.write_bytes(data[:5])
    with pytest.raises(lm.LMLoadError, match="less than the 8-byte header"):
        lm.load(folder, backend="hf")
    weights.write_bytes(data[:100])
    with pytest.raises(lm.LMLoadError, match="its header says .* bytes of metadata"):
        lm.load(folder, backend="hf")
    weights.unlink()
    with pytest.raises(lm.LMLoadError, match=rf"{folder} has no weights.*save_pretrained"):
        lm.load(folder, backend="hf")
    weights.write_bytes(data)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00002.safetensors"}})
    )
    with pytest.raises(lm.LMLoadError, match="names shards that are not in.*model-00002.safetensors"):
        lm.load(folder, backend="hf")


def test_transformers_errors_come_whole(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "nonsense"}))
    with pytest.raises(lm.LMLoadError) as e:
        lm.load(folder, backend="hf")
    message = str(e.value)
    assert message.startswith(f"could not load a causal LM and tokenizer from the folder {folder}")
    assert "nonsense" in message and "\n" not in message
    assert message.rstrip().endswith("transformers.git`")  # the end of transformers' message: not cut


# ---------------------------------------------------------------------- the cached conversion
@pytest.fixture
def cache(monkeypatch, tmp_path, tiny_folder):
    """A cache folder, a fake GGUF file, and a conversion that copies the tiny model (counted)."""
    monkeypatch.setenv("HOOKED_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(os.urandom(4096))
    calls = []

    def convert(src, out):
        calls.append(out)
        for p in Path(tiny_folder).iterdir():
            shutil.copy(p, Path(out) / p.name)
        os.chmod(Path(out) / "model.safetensors", 0o600)  # as safetensors writes it
        return Path(out)

    monkeypatch.setattr(lm.loading.loader, "convert_gguf", convert)
    old = os.umask(0o022)
    yield gguf, calls
    os.umask(old)


def test_a_conversion_has_a_manifest_and_usual_permissions(cache):
    gguf, calls = cache
    target = lm.converted_folder(gguf)
    assert len(calls) == 1
    manifest = json.loads((target / folders.MANIFEST).read_text())
    weights = target / "model.safetensors"
    assert manifest["files"]["model.safetensors"]["size"] == weights.stat().st_size
    assert len(manifest["files"]["config.json"]["sha256"]) == 64
    assert folders.manifest_problem(target, full=True) is None
    assert target.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in target.iterdir()} == {0o644}
    assert lm.converted_folder(gguf) == target and len(calls) == 1  # cached
    model = lm.load(gguf, backend="wrap")
    assert len(lm.generate(model, TEXTS[0], 2, return_tokens=True).tokens[0]) == 2


@pytest.mark.parametrize("damage", ["truncate weights", "delete config", "edit config", "delete manifest"])
def test_a_damaged_cached_conversion_is_converted_again(cache, damage, capsys):
    gguf, calls = cache
    target = lm.converted_folder(gguf)
    weights, config = target / "model.safetensors", target / "config.json"
    if damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "delete config":
        config.unlink()
    elif damage == "edit config":
        config.write_text(config.read_text().replace("32", "33", 1))  # same size, other bytes
    else:
        (target / folders.MANIFEST).unlink()  # a folder from before manifests: checked by layout
        weights.write_bytes(weights.read_bytes()[:-100])
    assert lm.converted_folder(gguf) == target
    assert len(calls) == 2, "converted again"
    assert "is damaged" in capsys.readouterr().err
    assert folders.manifest_problem(target, full=True) is None
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # nothing left lying around
    with torch.no_grad():
        lm.load(gguf, backend="hf")(lm.to_tokens(lm.load(gguf, backend="hf"), TEXTS[0]))


def test_a_sound_folder_from_before_manifests_is_adopted(cache, tiny_folder):
    gguf, calls = cache
    target = lm.converted_folder(gguf)
    (target / folders.MANIFEST).unlink()
    os.chmod(target, 0o700)
    assert lm.converted_folder(gguf) == target and len(calls) == 1  # not converted again
    assert (target / folders.MANIFEST).is_file() and target.stat().st_mode & 0o777 == 0o755
    full = folders.manifest_problem(target, full=True)
    assert full is None
    (target / "model.safetensors").write_bytes(b"x" * (target / "model.safetensors").stat().st_size)
    assert "does not match the SHA-256" in folders.manifest_problem(target, full=True)
