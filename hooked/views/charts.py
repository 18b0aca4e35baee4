"""General charts: a heatmap, bars, lines and points, shaded text, a list of numbers.

Each function returns a :class:`~hooked.views.page.View` of one panel; the views of language-model
results (:mod:`hooked.views.transformer`), of a feature (:mod:`hooked.views.features`) and of the
papers' figures are built from these panels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from hooked.views.page import View, array, as_numpy, labels

Scale = Literal["diverging", "sequential"]


def heatmap_panel(
    values: Any,
    *,
    rows: Sequence[Any] | None = None,
    cols: Sequence[Any] | None = None,
    scale: Scale | Mapping[str, Any] = "diverging",
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    value_label: str = "value",
    text: Sequence[Sequence[str]] | None = None,
    tips: Sequence[Sequence[str]] | None = None,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """The panel of :func:`heatmap` (to combine several in one view)."""
    a = as_numpy(values, "values")
    if a.ndim != 2:
        raise ValueError(f"heatmap: values must be 2-d [rows, columns], got shape {tuple(a.shape)}")
    n_rows, n_cols = a.shape
    for what, grid in (("text", text), ("tips", tips)):
        if grid is not None and (len(grid) != n_rows or any(len(r) != n_cols for r in grid)):
            raise ValueError(f"heatmap: {what} must be {n_rows} x {n_cols} like the values")
    spec = {"kind": scale} if isinstance(scale, str) else dict(scale)
    panel = {
        "type": "heatmap",
        "title": title,
        "values": array(a),
        "rows": labels(rows, n_rows, "heatmap rows"),
        "cols": labels(cols, n_cols, "heatmap cols"),
        "scale": spec,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "value_label": value_label,
        "note": note,
        **extra,
    }
    if text is not None:
        panel["text"] = [[str(s) for s in r] for r in text]
    if tips is not None:
        panel["tips"] = [[str(s) for s in r] for r in tips]
    return panel


def heatmap(values: Any, *, title: str = "", **kwargs: Any) -> View:
    """A grid of coloured cells, ``values[row, column]``; hover shows the row, column and exact value.

    ``scale``: ``"diverging"`` (centred on zero, symmetric), ``"sequential"``, or a dict
    ``{"kind", "min", "max"}`` (``{"kind": "categorical", "colors": [...], "names": [...]}`` for integer
    codes). NaN and infinities are drawn hatched and labelled, never with a colour of the scale.
    """
    return View([heatmap_panel(values, **kwargs)], title)


def bars_panel(
    values: Any,
    names: Sequence[Any],
    *,
    title: str = "",
    value_label: str = "value",
    tips: Sequence[str] | None = None,
    note: str = "",
) -> dict[str, Any]:
    a = as_numpy(values, "values")
    if a.ndim != 1:
        raise ValueError(f"bars: values must be 1-d, got shape {tuple(a.shape)}")
    panel = {
        "type": "bars",
        "title": title,
        "values": array(a),
        "labels": labels(names, a.shape[0], "bars labels"),
        "value_label": value_label,
        "note": note,
    }
    if tips is not None:
        panel["tips"] = labels(tips, a.shape[0], "bars tips")
    return panel


def bars(values: Any, names: Sequence[Any], *, title: str = "", **kwargs: Any) -> View:
    """Horizontal bars from zero (red positive, blue negative), one per name; hover shows the exact value."""
    return View([bars_panel(values, names, **kwargs)], title)


def series(
    x: Any,
    y: Any,
    *,
    name: str = "",
    lo: Any = None,
    hi: Any = None,
    err: Any = None,
    tips: Sequence[str] | None = None,
    color: str | None = None,
    mode: Literal["lines", "markers", "lines+markers"] = "lines+markers",
    **extra: Any,
) -> dict[str, Any]:
    """One line or set of points for :func:`lines`: ``y`` over ``x``, an optional band ``lo .. hi`` or
    error bars ``err``, a hover text per point (``tips``)."""
    xa, ya = as_numpy(x, "x").ravel(), as_numpy(y, "y").ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"series {name!r}: x has {xa.size} values, y {ya.size}")
    s: dict[str, Any] = {"name": name, "x": array(xa), "y": array(ya), "mode": mode, **extra}
    for key, v in (("lo", lo), ("hi", hi), ("err", err)):
        if v is not None:
            va = as_numpy(v, key).ravel()
            if va.shape != ya.shape:
                raise ValueError(f"series {name!r}: {key} has {va.size} values, y {ya.size}")
            s[key] = array(va)
    if (lo is None) != (hi is None):
        raise ValueError(f"series {name!r}: give both lo and hi for a band")
    if tips is not None:
        s["tips"] = labels(tips, ya.size, f"series {name!r} tips")
    if color is not None:
        s["color"] = color
    return s


def lines_panel(
    data: Sequence[Mapping[str, Any]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xlog: bool = False,
    ylog: bool = False,
    hlines: Sequence[tuple[float, str]] = (),
    xticks: Sequence[tuple[float, str]] | None = None,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    panel = {
        "type": "lines",
        "title": title,
        "series": [dict(s) for s in data],
        "xlabel": xlabel,
        "ylabel": ylabel,
        "xlog": xlog,
        "ylog": ylog,
        "hlines": [{"y": float(y), "label": str(t)} for y, t in hlines],
        "note": note,
        **extra,
    }
    if xticks is not None:
        panel["xticks"] = [{"v": float(v), "label": str(t)} for v, t in xticks]
    return panel


def lines(data: Sequence[Mapping[str, Any]], *, title: str = "", **kwargs: Any) -> View:
    """Lines and points (each a :func:`series`) on shared axes; hover on a point shows its values.
    ``equal=True, circle=True`` draw equal axes with the unit circle (2-d directions)."""
    return View([lines_panel(data, **kwargs)], title)


def text_panel(
    tokens: Sequence[str] | Sequence[Sequence[str]],
    values: Any,
    *,
    row_labels: Sequence[str] | None = None,
    scale: Scale | Mapping[str, Any] | None = None,
    title: str = "",
    value_label: str = "value",
    tips: Sequence[Sequence[str]] | None = None,
    note: str = "",
) -> dict[str, Any]:
    token_rows: Sequence[Any] = tokens  # one row of tokens, or several
    tip_rows: Sequence[Any] | None = tips
    if not tokens or isinstance(tokens[0], str):
        token_rows, values = [list(tokens)], [values]
        tip_rows = [tips] if tips is not None else None
    else:
        values = list(values) if not hasattr(values, "shape") else [values[i] for i in range(len(tokens))]
    if len(values) != len(token_rows):
        raise ValueError(f"shaded_text: {len(token_rows)} rows of tokens but {len(values)} rows of values")
    rows, all_values = [], []
    for k, (toks, vals) in enumerate(zip(token_rows, values)):
        a = as_numpy(vals, "values").ravel()
        toks = [str(t) for t in toks]
        if a.size != len(toks):
            raise ValueError(f"shaded_text: row {k} has {len(toks)} tokens but {a.size} values")
        row: dict[str, Any] = {"tokens": toks, "values": array(a)}
        if row_labels is not None:
            row["label"] = str(row_labels[k])
        if tip_rows is not None:
            row["tips"] = labels(tip_rows[k], len(toks), f"shaded_text tips of row {k}")
        rows.append(row)
        all_values.append(a)
    if scale is None:
        finite = np.concatenate(all_values) if all_values else np.zeros(0)
        finite = finite[np.isfinite(finite)]
        scale = "diverging" if finite.size and finite.min() < 0 else "sequential"
    spec: dict[str, Any] = {"kind": scale} if isinstance(scale, str) else dict(scale)
    if spec["kind"] == "sequential" and "min" not in spec:
        spec["min"] = 0.0
    return {
        "type": "text",
        "title": title,
        "rows": rows,
        "scale": spec,
        "value_label": value_label,
        "note": note,
    }


def shaded_text(
    tokens: Sequence[str] | Sequence[Sequence[str]], values: Any, *, title: str = "", **kwargs: Any
) -> View:
    """Tokens shaded by a value each (a feature's activation, a probe's score, a loss difference); hover
    shows the token and its value.

    ``tokens`` is one list of strings (``values`` ``[n]``) or several rows (``values`` a list of ``[n_k]``,
    or ``[rows, n]``); ``row_labels`` names the rows. The scale is diverging around zero when any value is
    negative, else sequential from zero; ``scale=`` sets it (``{"kind": "sequential", "max": 10}``).
    """
    return View([text_panel(tokens, values, **kwargs)], title)


def stats_panel(items: Mapping[str, Any] | Sequence[tuple[str, Any]], *, title: str = "") -> dict[str, Any]:
    """A two-column list of names and values."""
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    out = []
    for k, v in pairs:
        if isinstance(v, float) and not np.isfinite(v):
            v = "NaN" if np.isnan(v) else ("+inf" if v > 0 else "-inf")
        out.append([str(k), v if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)])
    return {"type": "stats", "title": title, "items": out}
