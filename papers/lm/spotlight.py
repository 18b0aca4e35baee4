"""The ``spotlight`` stage of ``hooked repro lm``: spotlight resonance of MLP neurons vs the residual stream.

Streams Wikipedia summaries (:func:`papers.lm.wiki_text.wiki_token_rows`) through the model and runs
:func:`analyses.spotlight.spotlight_model` on the MLP hidden activations and on the residual stream
after the same block, at ``--spotlight-layers``, at the paper's cone and at a dimension-scaled one
(:func:`papers.lm.mlp_spotlight.side_by_side`). Writes ``spotlight.json`` and ``spotlight.png``.
"""

from __future__ import annotations

from papers.lm.run import LMRun, int_list


def run(ctx: LMRun) -> dict:
    """Spotlight resonance, MLP neurons and residual stream side by side, with verdicts."""
    from papers.lm.mlp_spotlight import plot_side_by_side, side_by_side
    from papers.lm.wiki_text import wiki_token_rows

    o = ctx.options
    layers = int_list(o.spotlight_layers, "spotlight_layers")
    texts, n_tokens, planes, null = (
        o.spotlight_texts,
        o.spotlight_tokens,
        o.spotlight_planes,
        o.spotlight_null,
    )
    if ctx.quick:
        layers, texts, n_tokens, planes, null = (
            layers[:1],
            min(texts, 8),
            min(n_tokens, 16),
            min(planes, 200),
            min(null, 3),
        )
    tokens = wiki_token_rows(ctx.model, texts, n_tokens, seed=o.seed)
    result = side_by_side(
        ctx.model,
        tokens,
        layers,
        epsilon=o.spotlight_epsilon,
        scale=o.spotlight_scale,
        max_planes=planes,
        null_bases=null,
        seed=o.seed,
        progress=True,
    )
    ctx.run_dir.json("spotlight.json", result)
    ctx.run_dir.figure("spotlight.png", plot_side_by_side(result))
    summary = {}
    for row in result.rows:
        key = f"layer {row['layer']} {row['kind']} {row['resolution']}"
        summary[key] = {
            k: row[k]
            for k in ("epsilon", "verdict", "z", "null_empty", "axis_cone_hits", "nonempty_directions")
        }
        z = row["z"]
        ctx.log(
            f"spotlight: {key:<24} d={row['d']:<5} eps={row['epsilon']:.3f} verdict {row['verdict']} "
            f"(z={z if z is None else round(z, 1)}{', null empty' if row['null_empty'] else ''}), "
            f"{row['axis_cone_hits']} hits of {row['n']} samples in the {2 * row['d']} axis cones; "
            f"fullest {[(c['direction'], c['count']) for c in row['fullest_cones']]}"
        )
    return {"layers": layers, "samples": int(tokens.numel()), "rows": summary}
