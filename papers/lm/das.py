"""The ``das`` stage of ``hooked repro lm``: interchange interventions on city -> country prompts.

Facts: :func:`papers.lm.facts.city_facts` (hand-written, kept where the model answers right),
split by city into training and held-out prompts. First, full-vector activation patching of the
residual stream at every layer, at the city's token and at the last token, on held-out pairs
(where the country can be swapped at all); then, at each ``--das-sites`` site, DAS, PCA,
difference-of-means and random subspaces of each ``--das-ranks`` rank, against full patching
(:func:`papers.lm.subspace.subspace_site`). Writes ``das.json`` and ``das.png``.
"""

from __future__ import annotations

from typing import Any

from papers.lm.run import LMRun, int_list


def parse_sites(text: str, positions: dict[str, int], n_layers: int) -> list[tuple[str, int]]:
    """``"subject:12,last:26"`` -> ``[("subject", 12), ("last", 26)]``, checked."""
    sites = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, _, layer = item.partition(":")
        if name not in positions or not layer.strip().isdigit() or not 0 <= int(layer) <= n_layers:
            raise ValueError(
                f"--das-sites: {item!r} is not POSITION:LAYER with POSITION one of {', '.join(positions)} "
                f"and LAYER in 0..{n_layers} (the residual stream entering that layer; "
                f"{n_layers} = after the last)"
            )
        sites.append((name, int(layer)))
    if not sites:
        raise ValueError("--das-sites: no site given")
    return sites


def run(ctx: LMRun) -> dict:
    """Full patching over layers, then DAS and fixed bases at chosen residual sites."""
    from hooked import lm as lm_module
    from papers.lm.facts import city_facts, split_by_city
    from papers.lm.subspace import Site, full_patching_curve, plot_sweep, subspace_site

    o, model = ctx.options, ctx.model
    ranks = int_list(o.das_ranks, "das_ranks")
    facts = city_facts(model)
    train, test = split_by_city(facts, 0.3, seed=o.seed)
    hooks = lm_module.residual_hooks(model)
    labels = lm_module.residual_labels(len(hooks) - 1)
    positions = facts.positions()
    sites = parse_sites(o.das_sites, positions, len(hooks) - 1)
    steps, partners = o.das_steps, o.das_partners
    if ctx.quick:
        sites, ranks, steps, partners = sites[:1], ranks[:1], min(steps, 5), 1
    ctx.log(
        f"das: {len(facts)} facts the model knows ({len(train)} train, {len(test)} held-out cities, "
        f"{len(facts.countries)} countries); "
        f"{facts.dropped and {k: len(v) for k, v in facts.dropped.items()}} dropped"
    )

    curve = full_patching_curve(
        model, test, hooks, list(positions.values()), partners=1, seed=o.seed, progress=True
    )
    curve_json = {
        "labels": labels,
        "positions": {name: curve[:, i].tolist() for i, name in enumerate(positions)},
    }
    handover = {
        name: _last_above(curve[:, i].tolist(), labels, 0.5, last=(name == "subject"))
        for i, name in enumerate(positions)
    }
    ctx.log(
        "das: full patching moves >= half of the held-out pairs to the source's country at the city's "
        f"token up to {handover['subject']}, at the last token from {handover['last']} on"
    )

    results = []
    for name, layer in sites:
        site = Site(hooks[layer], positions[name], f"{labels[layer]} @ {name}")
        r = subspace_site(
            model,
            train,
            test,
            site,
            ranks,
            steps=steps,
            lr=o.das_lr,
            batch_size=o.das_batch,
            partners=partners,
            seed=o.seed,
            progress=True,
        )
        results.append(r)
        for row in r.rows:
            extra = f" (train {row['train_iia']:.2f})" if "train_iia" in row else ""
            ctx.log(
                f"das: {site.label:<18} {row['method']:<6} k={row['rank']:<4} IIA {row['iia']:.2f}{extra}, "
                f"base answer kept {row['kept']:.2f}, p(source answer) {row['p_source']:.2f}"
            )
    ctx.run_dir.json(
        "das.json",
        {
            "facts": facts.to_json(),
            "train_cities": train.subjects,
            "test_cities": test.subjects,
            "full_patching": curve_json,
            "sites": results,
            "settings": {
                "ranks": ranks,
                "steps": steps,
                "lr": o.das_lr,
                "batch": o.das_batch,
                "partners": partners,
            },
        },
    )
    ctx.run_dir.figure(
        "das.png",
        plot_sweep(
            results,
            curve_json,
            title=(
                f"interchange interventions, {facts.template!r}: "
                f"{len(train)} training / {len(test)} held-out cities"
            ),
        ),
    )
    return {
        "n_facts": len(facts),
        "n_train": len(train),
        "n_test": len(test),
        "n_countries": len(facts.countries),
        "full_patching_over_half": handover,
        "sites": {
            r.site.label: {f"{row['method']} k={row['rank']}": round(row["iia"], 3) for row in r.rows}
            for r in results
        },
    }


def _last_above(values: list[float], labels: list[str], threshold: float, *, last: bool) -> Any:
    """The last (``last``) or first label whose value is >= threshold; None if none is."""
    hits = [labels[i] for i, v in enumerate(values) if v >= threshold]
    return (hits[-1] if last else hits[0]) if hits else None
