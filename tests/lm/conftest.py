"""Fixtures of the language-model tests: tiny random-weight models with a word-level tokenizer,
saved as Hugging Face folders and loaded through ``lm.load`` on every backend (fast, no
download), and SmolLM2-135M on every backend (for the slow tests)."""

from __future__ import annotations

import pytest
import torch

from hooked import lm

WORDS = (
    "<pad> <s> </s> <unk> the a cat dog sat on mat rug and ran to house is in big small red blue one two "
    "three four five six seven eight nine ten bird fish tree car road city river sea sun moon star green "
    "old new hot cold fast slow up down left right yes no we they it was has had will can"
).split()
assert len(WORDS) == 64


def word_tokenizer():
    """A word-level tokenizer over :data:`WORDS` (pad 0, BOS 1, EOS 2), built offline."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    inner = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    inner.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=inner, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_causal_lm(kind: str = "llama", seed: int = 0):
    """A random small causal LM over :data:`WORDS` (``llama`` and ``gpt2``: two layers, whose greedy
    output is not degenerate; ``neox`` and ``gemma2``: three layers)."""
    import transformers

    common = dict(vocab_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.3)
    sizes = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, max_position_embeddings=128)
    if kind == "llama":
        config = transformers.LlamaConfig(
            num_hidden_layers=2, num_key_value_heads=2, tie_word_embeddings=False, **sizes, **common
        )
        cls = transformers.LlamaForCausalLM
    elif kind == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **common)
        cls = transformers.GPT2LMHeadModel
    elif kind == "neox":  # parallel attention and MLP
        config = transformers.GPTNeoXConfig(
            num_hidden_layers=3, use_parallel_residual=True, **sizes, **common
        )
        cls = transformers.GPTNeoXForCausalLM
    elif kind == "gemma2":  # norms after attention and MLP too; sliding-window layers (window 4)
        config = transformers.Gemma2Config(
            num_hidden_layers=3, num_key_value_heads=2, head_dim=8, sliding_window=4, **sizes, **common
        )
        cls = transformers.Gemma2ForCausalLM
    else:
        raise ValueError(kind)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(config).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    model.generation_config.bos_token_id = 1
    return model


def save_tiny(folder, kind: str = "llama", tokenizer: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    tiny_causal_lm(kind).save_pretrained(folder)
    if tokenizer:
        word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny(tiny_folder):
    """``{backend: model}``: the tiny Llama through ``lm.load`` on hf, wrap and bridge."""
    return {backend: lm.load(tiny_folder, backend=backend) for backend in ("hf", "wrap", "bridge")}


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """The tiny GPT-2 (absolute positions) on hf and wrap."""
    folder = save_tiny(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")
    return {backend: lm.load(folder, backend=backend) for backend in ("hf", "wrap")}


@pytest.fixture(scope="session")
def smol():
    """``{backend: SmolLM2-135M}``: hf (sdpa, untouched by a bridge), wrap (of that same object) and
    bridge (its own copy: booting a bridge changes the transformers model in place)."""
    hf = lm.load("smollm2-135m", backend="hf")
    return {"hf": hf, "wrap": lm.wrap_lm(hf, hf.tokenizer), "bridge": lm.load("smollm2-135m")}


TEXTS = ["the cat sat on the mat", "a dog ran", "the big red house is in the old city", "we"]
