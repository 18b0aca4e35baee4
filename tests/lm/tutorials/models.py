"""The models the notebooks run on: SmolLM2-135M, and a small random Llama with SmolLM2's tokenizer.

The notebooks hard-code layer and head indices (layer 11, head 10) and token ids up to 20000, so the
small model has 12 layers of 12 heads (grouped-query attention: 4 key-value heads, as SmolLM2's
ratio of 3) and SmolLM2's vocabulary, with random norm gains so that weight processing (folding
the norms) changes something. It runs the notebooks' slowest cells (thousands of patched forwards)
in seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def small_llama(folder: Path, seed: int = 0) -> Path:
    """Save the small random Llama (with SmolLM2-135M's tokenizer) to ``folder``; returns it."""
    import transformers

    from hooked.lm.loading.loader import resolve

    if (folder / "config.json").is_file():
        return folder
    smollm2, _ = resolve("smollm2-135m")
    config = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=0.1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(0.3 * torch.randn_like(p))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (Path(smollm2) / name).is_file():
            shutil.copy(Path(smollm2) / name, folder / name)
    return folder


if __name__ == "__main__":
    import sys

    print(small_llama(Path(sys.argv[1])))
