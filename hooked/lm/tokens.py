"""Text to token ids and back, with a loaded language model's own tokenizer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hooked.protocol import model_device


def to_tokens(model: Any, text: str | list[str], *, bos: bool = False, length: int | None = None) -> Tensor:
    """Token ids ``[batch, pos]`` of ``text`` with the model's tokenizer, on the model's device.

    No special tokens are added unless ``bos=True`` (which prepends the tokenizer's BOS token),
    so every backend gets the same ids (TransformerLens's bridge would prepend a BOS token to
    text it tokenizes itself). A list of texts must tokenize to equal lengths, unless ``length``
    cuts each to its first ``length`` tokens (shorter texts are then an error).
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"{type(model).__name__} has no tokenizer (load it with hooked.lm.load)")
    texts = [text] if isinstance(text, str) else list(text)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if length is not None:
        short = [(t, len(i)) for t, i in zip(texts, ids) if len(i) < length]
        if short:
            raise ValueError(
                f"to_tokens: {len(short)} texts have fewer than length={length} tokens, "
                f"e.g. {short[0][0][:60]!r} ({short[0][1]} tokens)"
            )
        ids = [i[:length] for i in ids]
    lengths = {len(i) for i in ids}
    if len(lengths) > 1:
        raise ValueError(
            f"to_tokens: the texts tokenize to different lengths {sorted(lengths)}; pass length=N to cut them"
        )
    tokens = torch.tensor(ids, dtype=torch.long, device=model_device(model))
    if bos:
        if tokenizer.bos_token_id is None:
            raise ValueError(f"to_tokens(bos=True): the tokenizer of {type(model).__name__} has no BOS token")
        tokens = torch.cat([tokens.new_full((tokens.shape[0], 1), tokenizer.bos_token_id), tokens], dim=1)
    return tokens


def token_id(model: Any, text: str) -> int:
    """The id of ``text`` if it is exactly one token (e.g. ``" Paris"``), else a ValueError."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = model.tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"{text!r} is {len(ids)} tokens {pieces}, not one; pick an answer that is a single token"
        )
    return ids[0]
