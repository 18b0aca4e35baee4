"""Text to token ids and back with a loaded language model's own tokenizer; padded batches.

* :func:`to_tokens`: ids ``[batch, pos]`` of texts of equal token length (no padding).
* :func:`tokenize`: a *padded batch* of texts of any lengths, ``{"input_ids", "attention_mask"}``,
  padded on the left (default) or the right. A dict batch is passed to a model as keyword
  arguments (``model(**batch)``, and :func:`hooked.protocol.split_batch` does the same), which every
  backend of :func:`hooked.lm.load` accepts, and run on a padded batch gives the same numbers at
  the real tokens as each text run alone.
* :func:`last_positions`: each row's last real token; :func:`first_positions`: its first.
* :func:`token_id`: the id of a one-token string.

A padded batch run *without* its mask gives wrong numbers and no error (the pad tokens are
attended to, and shift the positions of left-padded rows), so the ``bridge`` and ``wrap``
backends warn (:class:`UnmaskedPaddingWarning`) when ids look padded and no mask came with them:
rows that start (or end) with runs of the pad token of *different* lengths. Ordinary unpadded
input never has that shape: a pad token at the edge of every row alike (a BOS token that doubles
as the pad token, chat transcripts that all end with an end-of-turn token) is not padding.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor

from hooked.checks import flags, positive
from hooked.protocol import mask_ends, model_device

PaddingSide = Literal["left", "right"]


class UnmaskedPaddingWarning(UserWarning):
    """A batch of token ids looks padded, but no attention mask was passed with it."""


def to_tokens(model: Any, text: str | list[str], *, bos: bool = False, length: int | None = None) -> Tensor:
    """Token ids ``[batch, pos]`` of ``text`` with the model's tokenizer, on the model's device.

    No special tokens are added unless ``bos=True`` (which prepends the tokenizer's BOS token),
    so every backend gets the same ids (TransformerLens's bridge would prepend a BOS token to
    text it tokenizes itself). A list of texts must tokenize to equal lengths, unless ``length``
    cuts each to its first ``length`` tokens (shorter texts are then an error); texts of different
    lengths go in a padded batch instead (:func:`tokenize`).
    """
    tokenizer = _tokenizer(model)
    texts = _texts(text, "to_tokens")
    flags(bos=bos)
    if length is not None:
        positive(length=length)  # length=-1 would cut the last token off each text, 0 every token
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    empty = [t for t, i in zip(texts, ids) if not i]
    if empty and not bos:
        raise ValueError(
            f"to_tokens: {len(empty)} of the texts have no tokens (e.g. {empty[0]!r}); a forward needs "
            "at least one position (bos=True prepends the BOS token)"
        )
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
            f"to_tokens: the texts tokenize to different lengths {sorted(lengths)}; use "
            "lm.tokenize(model, texts) for a padded batch (ids and attention mask), or pass length=N "
            "to cut them"
        )
    tokens = torch.tensor(ids, dtype=torch.long, device=model_device(model))
    if bos:
        tokens = torch.cat([tokens.new_full((tokens.shape[0], 1), _bos_id(model)), tokens], dim=1)
    return tokens


def tokenize(
    model: Any,
    texts: str | list[str],
    *,
    padding_side: PaddingSide = "left",
    bos: bool = False,
    max_length: int | None = None,
) -> dict[str, Tensor]:
    """A padded batch of ``texts``: ``{"input_ids": [batch, pos], "attention_mask": [batch, pos]}``.

    Args:
        model: a model from :func:`hooked.lm.load` (anything with a ``tokenizer``).
        texts: one text or a list; they may tokenize to different lengths.
        padding_side: ``"left"`` (the last real token of every row is at position -1, as
            generation needs) or ``"right"`` (the first real token is at position 0).
        bos: prepend the tokenizer's BOS token to every text.
        max_length: keep only each text's first ``max_length`` tokens (BOS included).
    Returns:
        a dict of long tensors on the model's device; ``attention_mask`` is 1 at real tokens and
        0 at padding. The pad id is the tokenizer's pad token, else its EOS token (the mask, not
        the id, says what is padding).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    tokenizer = _tokenizer(model)
    texts = _texts(texts, "tokenize")
    flags(bos=bos)
    if max_length is not None:
        positive(max_length=max_length)
    rows = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if bos:
        rows = [[_bos_id(model), *r] for r in rows]
    if max_length is not None:
        rows = [r[:max_length] for r in rows]
    empty = [t for t, r in zip(texts, rows) if not r]
    if empty:
        raise ValueError(f"tokenize: {len(empty)} texts have no tokens (e.g. {empty[0]!r})")
    width = max(len(r) for r in rows)
    pad = pad_id(model)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # building the tensor from Python lists: one row at a time
        cols = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
        ids[i, cols] = torch.tensor(r, dtype=torch.long)
        mask[i, cols] = 1
    device = model_device(model)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def last_positions(batch: dict[str, Tensor] | Tensor) -> Tensor:
    """The index of each row's last real token ``[batch]`` (from the attention mask; a plain
    ids tensor has no padding, so its last position)."""
    ids, mask = _positioned(batch, "last_positions")
    if mask is None:
        return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
    return mask_ends(mask)[1]


def first_positions(batch: dict[str, Tensor] | Tensor) -> Tensor:
    """The index of each row's first real token ``[batch]`` (0 for right padding or none)."""
    ids, mask = _positioned(batch, "first_positions")
    if mask is None:
        return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    return mask_ends(mask)[0]


def batch_ids_and_mask(batch: Any) -> tuple[Tensor, Tensor | None]:
    """``(input_ids, attention_mask or None)`` of a token batch: a dict (``input_ids`` or
    TransformerLens's ``input``, and ``attention_mask``) or a plain ids tensor."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, dict):
        ids = batch.get("input_ids", batch.get("input"))
        if isinstance(ids, Tensor):
            mask = batch.get("attention_mask")
            if mask is not None:
                if not isinstance(mask, Tensor):
                    raise TypeError(f"attention_mask must be a tensor, got {type(mask).__name__}")
                if tuple(mask.shape) != tuple(ids.shape):
                    raise ValueError(
                        f"attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(ids.shape)}"
                    )
                if bool(((mask != 0) & (mask != 1)).any()):  # e.g. 2s: positions would count double
                    raise ValueError(
                        "attention_mask must hold only 0 (padding) and 1 (real token), got values "
                        f"{mask.unique().tolist()[:8]}"
                    )
            return ids, mask
    raise TypeError(
        "expected a token batch: a tensor of ids [batch, pos] or a dict with 'input_ids' (and "
        f"'attention_mask'), as lm.tokenize returns; got {type(batch).__name__}"
    )


def token_id(model: Any, text: str) -> int:
    """The id of ``text`` if it is exactly one token (e.g. ``" Paris"``), else a ValueError."""
    if not isinstance(text, str):
        raise TypeError(f"token_id needs a string, got {type(text).__name__}: {text!r}")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = model.tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"{text!r} is {len(ids)} tokens {pieces}, not one; pick an answer that is a single token"
        )
    return ids[0]


def pad_id(model_or_tokenizer: Any) -> int:
    """The id padding is written with: the tokenizer's pad token, else its EOS token, else 0."""
    tokenizer = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


# ---------------------------------------------------------------------- padding without a mask
def padding_without_mask(tokenizer: Any, ids: Any) -> str | None:
    """How ``ids`` look padded (``"left"`` or ``"right"``), or None: rows that start (end) with
    runs of the pad token of different lengths. Only for a tokenizer whose pad id is a special
    token; cheap (a few vector ops on the ids)."""
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.shape[0] < 2 or ids.is_floating_point():
        return None
    pad = _special_pad_id(tokenizer)
    if pad is None:
        return None
    is_pad = ids == pad
    for side, edge in (("left", is_pad), ("right", is_pad.flip(1))):
        if not bool(edge[:, 0].any()):
            continue
        run = edge.long().cumprod(dim=1).sum(dim=1)  # pad tokens at that edge, per row
        if bool((run != run[0]).any()):
            return side
    return None


def warn_if_padded_without_mask(model: Any, ids: Any, attention_mask: Any, stacklevel: int = 3) -> None:
    """Warn (:class:`UnmaskedPaddingWarning`) when ``ids`` look padded and no mask came with them."""
    if attention_mask is not None:
        return
    side = padding_without_mask(getattr(model, "tokenizer", None), ids)
    if side is None:
        return
    warnings.warn(
        f"these token ids look {side}-padded (rows {'start' if side == 'left' else 'end'} with different "
        "numbers of pad tokens) but no attention_mask was passed, so the padding is attended to and "
        "the results differ from each text run alone; pass the batch from lm.tokenize(model, texts) "
        "as model(**batch), which carries its attention_mask",
        UnmaskedPaddingWarning,
        stacklevel=stacklevel,
    )


# ---------------------------------------------------------------------- helpers
def _texts(text: Any, what: str) -> list[str]:
    """``text`` (a string or a non-empty list / tuple of strings) as a list, else a clear error."""
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{what}: texts must be a string or a list of strings, got {type(text).__name__}")
    odd = [t for t in texts if not isinstance(t, str)]
    if odd:
        raise TypeError(f"{what}: texts must be strings, got a {type(odd[0]).__name__}: {odd[0]!r}")
    if not texts:
        raise ValueError(f"{what}: texts is an empty list; give at least one text")
    return list(texts)


def _positioned(batch: Any, what: str) -> tuple[Tensor, Tensor | None]:
    """``batch_ids_and_mask``, for ids ``[batch, pos]`` with at least one position."""
    ids, mask = batch_ids_and_mask(batch)
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(
            f"{what} needs token ids [batch, pos] with at least one position, got {tuple(ids.shape)}"
        )
    return ids, mask


def _tokenizer(model: Any) -> Any:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"{type(model).__name__} has no tokenizer (load it with hooked.lm.load)")
    return tokenizer


def _bos_id(model: Any) -> int:
    bos = getattr(_tokenizer(model), "bos_token_id", None)
    if bos is None:
        raise ValueError(f"bos=True: the tokenizer of {type(model).__name__} has no BOS token")
    return int(bos)


def _special_pad_id(tokenizer: Any) -> int | None:
    """The tokenizer's pad id (else its EOS id) if that is a special token, else None."""
    if tokenizer is None:
        return None
    if getattr(tokenizer, "pad_token_id", None) is None and getattr(tokenizer, "eos_token_id", None) is None:
        return None
    pad = pad_id(tokenizer)
    return pad if pad in set(getattr(tokenizer, "all_special_ids", None) or ()) else None
