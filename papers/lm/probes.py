"""The ``probes`` stage of ``hooked repro lm``: ridge probes of Wikipedia topic on every layer's
residual stream (:func:`analyses.probes.layer_probes`). Writes ``probes.json`` and ``probes.png``."""

from __future__ import annotations

from typing import Any

from papers.lm.run import LMRun


def run(ctx: LMRun) -> dict:
    """Ridge probes of Wikipedia topic on every layer's residual stream (last token, mean-pooled)."""
    from analyses.probes import layer_probes, plot_layer_probes
    from hooked import lm as lm_module
    from papers.lm.wiki_text import wiki_topics

    per_topic = 20 if ctx.quick else ctx.options.per_topic
    texts, labels, topics = wiki_topics(per_topic=per_topic, seed=ctx.options.seed)
    tokens = lm_module.to_tokens(ctx.model, texts, length=ctx.options.probe_tokens)
    hooks = lm_module.residual_hooks(ctx.model)
    result = layer_probes(
        ctx.model,
        tokens,
        labels,
        hooks,
        lm_module.residual_labels(len(hooks) - 1),
        seed=ctx.options.seed,
        progress=True,
    )
    result.info["topics"] = topics
    ctx.run_dir.json("probes.json", result)
    ctx.run_dir.figure(
        "probes.png",
        plot_layer_probes(result, f"Wikipedia topic ({len(topics)} classes) from the residual stream"),
    )
    summary: dict[str, Any] = {"topics": topics, "n_texts": len(texts), "tokens_per_text": tokens.shape[1]}
    for name, r in result.results.items():
        acc = r.accuracy
        summary[name] = {
            "first_layer": float(acc[0]),
            "best": float(acc.max()),
            "best_at": result.labels[int(acc.argmax())],
            "last_layer": float(acc[-1]),
            "chance": r.chance,
        }
        ctx.log(
            f"probes [{name}]: {acc[0]:.2f} at {result.labels[0]}, best {acc.max():.2f} at "
            f"{result.labels[int(acc.argmax())]}, {acc[-1]:.2f} at {result.labels[-1]} "
            f"(chance {r.chance:.2f})"
        )
    return summary
