"""A view: panels described as JSON, drawn in the browser by a small script that ships with hooked.

:class:`View` holds a title and a list of panels (plain dicts: ``{"type": "heatmap", ...}``, see
``assets/views.js`` for each type's fields). ``view.html()`` is a fragment that draws itself where
it is inserted (Jupyter's ``_repr_html_``); ``view.save(path)`` writes a standalone page (atomically)
that opens offline: the script and its style are inlined, nothing is fetched from anywhere.

:func:`array` turns tensors and arrays into the JSON the script reads: finite numbers as numbers,
NaN and infinities as the strings ``"NaN"``, ``"inf"``, ``"-inf"`` (JSON has no NaN), or for large
arrays base64 float16 / float32 (IEEE: NaN and infinities survive). :func:`script_json` embeds JSON
in a page so that no text in it (a token ``</script>``) can end the script element.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

_SPECIAL = {"nan": "NaN", "inf": "inf", "-inf": "-inf"}
_COUNTER = itertools.count()


# ---------------------------------------------------------------------- data
def as_numpy(values: Any, name: str = "values") -> np.ndarray:
    """A float numpy array of ``values`` (tensor, array, nested lists; ``None`` in lists reads as NaN)."""
    if hasattr(values, "detach"):
        t = values.detach().cpu()
        if t.dtype.is_complex:
            raise TypeError(f"{name}: complex values cannot be shown")
        keep32 = str(t.dtype) in ("torch.float32", "torch.float16", "torch.bfloat16")
        return t.float().numpy() if keep32 else t.double().numpy()
    try:
        a = np.asarray(values, dtype=float) if not isinstance(values, np.ndarray) else values
    except (TypeError, ValueError):  # JSON's stand-ins for non-finite numbers: None, "nan", "-inf"
        try:
            a = np.asarray(_none_to_nan(values), dtype=float)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: expected numbers ({e})") from None
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected numbers, got an array of {a.dtype}")
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


_WORDS = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf}


def number(v: Any) -> float:
    """A number read back from JSON: ``None`` (features.json) and the strings ``"nan"``, ``"inf"``,
    ``"-inf"`` (``hooked.io.write_json``'s non-finite floats) as NaN / infinities."""
    if v is None:
        return math.nan
    if isinstance(v, str):
        try:
            return _WORDS[v.strip().lower()]
        except KeyError:
            raise ValueError(f"expected a number, got the text {v!r}") from None
    return float(v)


def _none_to_nan(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_none_to_nan(x) for x in v]
    return number(v)


def array(values: Any, *, encoding: str = "json", name: str = "values") -> dict[str, Any]:
    """``values`` as the JSON the script reads: ``{"shape": [...], "v": [...]}`` (exact: float32 values
    in their shortest form), or ``"f16"`` / ``"f32"``: base64 of little-endian IEEE values (compact;
    float16 keeps about 3 significant digits)."""
    a = as_numpy(values, name)
    shape = list(a.shape)
    if encoding == "f16":
        return {"shape": shape, "f16": base64.b64encode(a.astype("<f2").tobytes()).decode()}
    if encoding == "f32":
        return {"shape": shape, "f32": base64.b64encode(a.astype("<f4").tobytes()).decode()}
    if encoding != "json":
        raise ValueError(f"encoding must be 'json', 'f16' or 'f32', got {encoding!r}")
    flat = a.ravel()
    # numpy prints each value in the shortest form that reads back to the same float32 / float64
    text = flat.astype(str)
    finite = np.isfinite(flat)
    if finite.all():
        return {"shape": shape, "v": [float(s) for s in text]}
    return {"shape": shape, "v": [float(s) if ok else _SPECIAL[s] for s, ok in zip(text, finite)]}


def labels(items: Iterable[Any] | None, n: int, what: str) -> list[str]:
    """``items`` as ``n`` strings (``None``: ``"0" .. "n-1"``); a ValueError naming ``what`` when the
    count differs."""
    if items is None:
        return [str(i) for i in range(n)]
    out = [str(x) for x in items]
    if len(out) != n:
        raise ValueError(f"{what}: {len(out)} labels for {n} entries")
    return out


def script_json(obj: Any) -> str:
    """``obj`` as JSON that is safe inside ``<script type="application/json">`` (no ``<``, ``>``, ``&``
    or line separators in the text: a token ``</script>`` cannot end the element)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for ch, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, esc)
    return text


# ---------------------------------------------------------------------- assets
@cache
def runtime() -> str:
    """The drawing script with its style inlined (read once from the package)."""
    base = resources.files("hooked.views") / "assets"
    js = (base / "views.js").read_text(encoding="utf-8")
    css = (base / "views.css").read_text(encoding="utf-8")
    return js.replace('"__CSS__"', json.dumps(css).replace("</", "<\\/"))


PAGE_STYLE = """
body { margin: 18px 24px; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ddd; }
"""


def document(title: str, body: str, *, style: str = PAGE_STYLE) -> str:
    """A standalone HTML page: ``body`` (trusted markup, already escaped) and the script that draws every
    view in it."""
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n{body}\n"
        f"<script>\n{runtime()}\n</script>\n<script>hookedViews.renderAll();</script>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------- the view
class View:
    """Panels to draw, with a title. Shows inline in Jupyter; ``save(path)`` writes a standalone page.

    Views are made by :mod:`hooked.views`' functions (``attention``, ``patching_grid``, ...); ``a + b``
    puts two views' panels on one page.
    """

    def __init__(self, panels: Sequence[Mapping[str, Any]], title: str = ""):
        self.panels = [dict(p) for p in panels]
        self.title = str(title)

    @property
    def data(self) -> dict[str, Any]:
        """What the script draws: ``{"title", "panels"}``."""
        return {"title": self.title, "panels": self.panels}

    def _id(self, unique: bool) -> str:
        digest = hashlib.sha1(script_json(self.data).encode()).hexdigest()[:10]
        return f"hv-{digest}" + (f"-{next(_COUNTER)}" if unique else "")

    def fragment(self, *, unique: bool = False) -> str:
        """The view's markup without the script: for a page that includes the script once."""
        vid = self._id(unique)
        return (
            f"<div class='hv-view' id='{vid}'><noscript>this view needs JavaScript</noscript></div>\n"
            f"<script type='application/json' id='{vid}-data'>{script_json(self.data)}</script>\n"
        )

    def html(self) -> str:
        """A fragment that draws itself where it is inserted (the script included)."""
        frag = self.fragment(unique=True)
        vid = frag.split("id='", 1)[1].split("'", 1)[0]
        return f"{frag}<script>\n{runtime()}\nhookedViews.render('{vid}');\n</script>\n"

    def _repr_html_(self) -> str:
        return self.html()

    def page(self) -> str:
        """A standalone HTML page of this view."""
        return document(self.title or "hooked view", self.fragment())

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`page` to ``path`` atomically; returns the path."""
        from hooked.io import atomic_write_bytes

        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"View.save: {path} should end in .html (it is a web page)")
        return atomic_write_bytes(path, self.page().encode("utf-8"))

    def __add__(self, other: View) -> View:
        if not isinstance(other, View):
            return NotImplemented
        title = " | ".join(t for t in (self.title, other.title) if t)
        return View(self.panels + other.panels, title)

    def __repr__(self) -> str:
        kinds = ", ".join(p.get("type", "?") for p in self.panels)
        return f"View({self.title!r}: {kinds})"
