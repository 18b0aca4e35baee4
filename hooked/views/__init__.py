"""Interactive views of results, and the report page of a run: HTML that opens offline.

Each function returns a :class:`View`: shown inline in Jupyter (``_repr_html_``), written as a
standalone page by ``view.save("x.html")`` (atomic; the drawing script, about 33 kB of plain
JavaScript that ships with hooked, is inlined: no CDN, no network). Hover any cell, bar, point or
token for its exact value; NaN and infinities are drawn hatched and labelled, never with a colour of
the scale; text from the data (tokens) is always shown as text, never run as markup.

Views of transformer results (tensors, an ActivationCache and token strings; no model):

* :func:`attention` - every layer and head's pattern, thumbnails to pick from, tokens on both axes;
* :func:`patching_grid` - layers x positions (or heads), diverging around zero, exact vs attribution
  side by side;
* :func:`logit_lens` - layers x positions, the top token and its probability per cell, top 5 on hover;
* :func:`logit_attribution`, :func:`head_attribution` - direct logit attribution per component / head;
* :func:`shaded_text` - tokens shaded by any value per token;
* :func:`feature_page` - a sparse-autoencoder feature from ``features.json``.

Circuits (:mod:`interventions.circuits`): :func:`circuit_view` (edge scores, the circuit, its
faithfulness curve) and :func:`draw_circuit` (the circuit as a PNG graph).

General charts for other figures: :func:`heatmap`, :func:`bars`, :func:`lines` (of :func:`series`).
:mod:`hooked.views.report` builds ``report.html`` of a run folder (``hooked report RUN_DIR``).

This package sits on the core (it reads tensors and caches); the core never imports it.
"""

from hooked.views.charts import bars, heatmap, lines, series, shaded_text
from hooked.views.circuits import circuit_view, draw_circuit
from hooked.views.features import feature_page, read_features
from hooked.views.page import View
from hooked.views.transformer import (
    attention,
    head_attribution,
    logit_attribution,
    logit_lens,
    patching_grid,
    pattern_hooks,
)

__all__ = [
    "View",
    "attention",
    "bars",
    "circuit_view",
    "draw_circuit",
    "feature_page",
    "head_attribution",
    "heatmap",
    "lines",
    "logit_attribution",
    "logit_lens",
    "patching_grid",
    "pattern_hooks",
    "read_features",
    "series",
    "shaded_text",
]
