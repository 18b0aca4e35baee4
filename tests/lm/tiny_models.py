"""Tiny random-weight decoders of each family transformers ships, built locally (no download).

``tiny_hf(family)`` gives a transformers causal LM in eval mode (2 layers, d_model 32, 4 heads,
vocabulary 64, float32, the family's default attention implementation); ``tiny_bridge(family)``
the same weights through TransformerLens's bridge, with a 64-word tokenizer saved to a temporary
folder (the bridge reloads tokenizers by name, so it must come from a folder).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

FAMILIES = ("llama", "gpt2", "gpt_neox", "qwen2", "mistral", "gemma", "gemma2")
VOCAB = 64


def tiny_config(family: str):
    import transformers

    common = dict(vocab_size=VOCAB, max_position_embeddings=64)
    llama_like = dict(
        common, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    if family == "llama":
        return transformers.LlamaConfig(**llama_like, num_key_value_heads=2)
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4)
        cfg.bos_token_id = cfg.eos_token_id = 2
        return cfg
    if family == "gpt_neox":
        return transformers.GPTNeoXConfig(**llama_like)
    if family == "qwen2":
        return transformers.Qwen2Config(**llama_like, num_key_value_heads=2)
    if family == "mistral":
        return transformers.MistralConfig(**llama_like, num_key_value_heads=2)
    if family == "gemma":
        return transformers.GemmaConfig(**llama_like, num_key_value_heads=1, head_dim=16)
    if family == "gemma2":
        return transformers.Gemma2Config(**llama_like, num_key_value_heads=2, head_dim=16)
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


def tiny_hf(family: str, seed: int = 0):
    """A random tiny causal LM of ``family``; norms get random gains and biases, so that a check
    that forgets them fails."""
    import transformers

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(tiny_config(family)).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name or ".ln_" in name or name.endswith(("ln_f.weight", "ln_f.bias")):
                    p.add_(0.3 * torch.randn_like(p))
    return model


def tiny_tokenizer(folder: Path):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    if not (folder / "tokenizer.json").is_file():
        words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
        words.pre_tokenizer = pre_tokenizers.Whitespace()
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=words, bos_token="t1", eos_token="t2", pad_token="t3", unk_token="t0"
        )
        fast.save_pretrained(folder)
    return transformers.AutoTokenizer.from_pretrained(folder)


def tiny_bridge(family: str, seed: int = 0):
    """``hooked.lm.bridge`` (TransformerLens 4 + hooked's hook methods) of a tiny model of ``family``."""
    from hooked import lm

    return lm.bridge(tiny_hf(family, seed), tiny_tokenizer(tokenizer_folder()), f"tiny-{family}")


@functools.cache
def tokenizer_folder() -> Path:
    """A temporary folder holding the tiny tokenizer (removed when the process exits)."""
    folder = Path(tempfile.mkdtemp(prefix="hooked-tiny-tokenizer-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    tiny_tokenizer(folder)
    return folder


# the norm, final norm and unembedding of each family, by hand (independent of hooked.lm.names.layouts)
def final_norm(hf):
    for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm"):
        try:
            return hf.get_submodule(path)
        except AttributeError:
            continue
    raise AttributeError(type(hf).__name__)
