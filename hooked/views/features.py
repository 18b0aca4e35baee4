"""The page of a sparse-autoencoder feature, from the ``features.json`` that ``hooked sae eval`` writes.

Format ``hooked.sae.features/1``: ``{"format", "hook", "model", "n_tokens", "features": [{"index",
"density", "max_activation", "histogram": {"edges", "counts"}, "top_contexts": [{"tokens",
"activations", "max_position"}], "promoted": [{"token", "logit"}], "suppressed": [...]}]}``; numbers
that were not finite are ``null`` and are shown as NaN/missing, never as 0. Each feature gets its
numbers, the histogram of its nonzero activations, its top-activating contexts with every token shaded
by its activation, and the tokens it promotes and suppresses through the unembedding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hooked.views.charts import bars_panel, stats_panel, text_panel
from hooked.views.page import View, array

FORMAT = "hooked.sae.features/1"


def read_features(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """``features.json`` (a path or the loaded dict), checked: its format and every field a page reads;
    a ValueError names the file and the field otherwise."""
    from hooked.io import read_json

    where = "features" if isinstance(source, Mapping) else str(Path(source))
    data = dict(source) if isinstance(source, Mapping) else read_json(source)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{where}: not a features file (format {got!r}, expected {FORMAT!r})")
    feats = data.get("features")
    if not isinstance(feats, list):
        raise ValueError(f"{where}: 'features' must be a list")
    for k, f in enumerate(feats):
        ctx = f"{where}: features[{k}]"
        if not isinstance(f, dict) or not isinstance(f.get("index"), int):
            raise ValueError(f"{ctx}: needs an integer 'index'")
        hist = f.get("histogram")
        if hist is not None:
            edges, counts = hist.get("edges"), hist.get("counts")
            if not isinstance(edges, list) or not isinstance(counts, list) or len(edges) != len(counts) + 1:
                raise ValueError(f"{ctx} (feature {f['index']}): histogram needs edges (K+1) and counts (K)")
        for j, c in enumerate(f.get("top_contexts") or []):
            toks, acts = c.get("tokens"), c.get("activations")
            if not isinstance(toks, list) or not isinstance(acts, list) or len(toks) != len(acts):
                raise ValueError(
                    f"{ctx} (feature {f['index']}): top_contexts[{j}] needs as many activations as tokens"
                )
    return data


def _panels(feature: Mapping[str, Any], data: Mapping[str, Any]) -> list[dict[str, Any]]:
    idx = feature["index"]
    items = [
        ("feature", idx),
        ("hook", data.get("hook")),
        ("model", data.get("model")),
        ("density (fraction of tokens active)", _num(feature.get("density"))),
        ("max activation", _num(feature.get("max_activation"))),
        ("tokens evaluated", data.get("n_tokens")),
    ]
    panels = [stats_panel([(k, v) for k, v in items if v is not None], title=f"feature {idx}")]
    hist = feature.get("histogram")
    if hist is not None:
        panels.append(
            {
                "type": "histogram",
                "title": "activations (nonzero)",
                "edges": array(hist["edges"]),
                "counts": array(hist["counts"]),
                "xlabel": "activation",
                "ylabel": "tokens",
            }
        )
    contexts = feature.get("top_contexts") or []
    if contexts:
        row_labels = [
            f"#{j + 1} max {_show(_num(c['activations'][c['max_position']]) if _valid_pos(c) else None)}"
            for j, c in enumerate(contexts)
        ]
        panels.append(
            text_panel(
                [c["tokens"] for c in contexts],
                [c["activations"] for c in contexts],
                row_labels=row_labels,
                scale={"kind": "sequential", "min": 0.0},
                title="top-activating contexts",
                value_label="activation",
            )
            | {"break_after": True}
        )
    for key, title in (("promoted", "promoted tokens (W_dec · W_U)"), ("suppressed", "suppressed tokens")):
        items = feature.get(key) or []
        if items:
            panels.append(
                bars_panel(
                    [it.get("logit") for it in items],
                    [str(it.get("token", "")) for it in items],
                    title=title,
                    value_label="logit",
                )
            )
    panels[-1]["break_after"] = True
    return panels


def _num(v: Any) -> Any:
    return float("nan") if v is None else v


def _show(v: Any) -> str:
    if v is None or v != v:
        return "NaN/missing"
    return f"{v:.4g}"


def _valid_pos(c: Mapping[str, Any]) -> bool:
    p = c.get("max_position")
    return isinstance(p, int) and 0 <= p < len(c["activations"])


def feature_page(
    source: str | os.PathLike | Mapping[str, Any],
    index: int | Sequence[int] | None = None,
    *,
    title: str = "",
) -> View:
    """The page of feature ``index`` (a feature's dictionary index; a list of them; ``None``: every
    feature in the file) from ``features.json``."""
    data = read_features(source)
    feats = data["features"]
    if index is not None:
        wanted = [index] if isinstance(index, int) else list(index)
        by_index = {f["index"]: f for f in feats}
        missing = [i for i in wanted if i not in by_index]
        if missing:
            shown = sorted(by_index)[:20]
            raise ValueError(f"feature_page: feature(s) {missing} are not in the file; it reports {shown}")
        feats = [by_index[i] for i in wanted]
    panels = [p for f in feats for p in _panels(f, data)]
    default = f"SAE features at {data.get('hook', '?')}" + (
        f" ({data['model']})" if data.get("model") else ""
    )
    return View(panels, title or default)
