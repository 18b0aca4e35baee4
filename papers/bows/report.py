"""The BOWS reports: the printed summaries, the claims table and the figures."""

from __future__ import annotations

from typing import Any

from papers.claims import claim


def print_synthetic(summary: dict, wds: list[float]) -> None:
    print("\nSynthetic BOWS (means over latent sizes L < n):")
    print(
        f"  {'data / weight decay':<20} {'Gram~corr':>9} {'constructive':>12} {'ctx gap':>8} "
        f"{'false pos':>9} {'val loss':>8} {'cycle adj':>9}"
    )
    for key, e in summary.items():
        cyc = f"{e['cyclic_adjacent_fraction']:.2f}" if "cyclic_adjacent_fraction" in e else ""
        print(
            f"  {key:<20} {e['gram_corr_similarity']:>9.2f} {e['constructive_share']:>12.2f} "
            f"{e['context_gap']:>8.3f} {e['false_positive_share']:>9.3f} {e['val_loss']:>8.4f} {cyc:>9}"
        )
    print(
        "  Gram~corr: corr(off-diagonal WᵀW, held-out data correlations); constructive: share of active "
        "features whose"
    )
    print(
        "  co-active features push them up; ctx gap: mean interference on active minus on inactive features;"
    )
    print(
        "  false pos: inactive features with pre-activation > 0; cycle adj: circular features' angular "
        "neighbours in order."
    )
    print(
        "  paper: correlated features are arranged by co-activation (the Gram matrix follows the "
        "correlations), interference"
    )
    print(
        "         between co-active features is constructive, more so with weight decay; i.i.d. data shows "
        "no such structure."
    )


def synthetic_figures(
    run_dir: Any,
    W: Any,
    corr: Any,
    grid: list,
    kinds: list[str],
    wds: list[float],
    Ls: list[int],
    rows: list[dict],
) -> None:
    from analyses.superposition.plots import gram_grid_figure, synthetic_summary_figure

    for k, kind in enumerate(kinds):
        show = [L for L in Ls if L in (2, 3, 4, 6, 8, 10, 12)] or Ls
        grams = {}
        for i, (kk, wd, L) in enumerate(grid):
            if kk == k and L in show:
                Wn = W[i] / W[i].norm().clamp_min(1e-12)
                grams[(wd, L)] = Wn.T @ Wn
        run_dir.figure(f"bows_synthetic_gram_{kind}.png", gram_grid_figure(corr[k], grams, wds, show, kind))
    run_dir.figure("bows_synthetic_summary.png", synthetic_summary_figure(rows, kinds, wds))


def text_claims(out: dict, wds: list[float]) -> list[dict]:
    rows = []
    md = out.get("months_data")
    if md:
        rows.append(
            claim(
                "months co-occur by calendar (data)",
                "adjacent months co-occur more",
                f"mean corr adjacent {md['mean_corr_adjacent']:+.3f} vs others {md['mean_corr_other']:+.3f}; "
                f"data PCA cycle {md['data_pca_cycle']['adjacent_fraction']:.2f} adjacent",
                md["mean_corr_adjacent"] > md["mean_corr_other"],
            )
        )
    for m in out["models"]:
        wd = m["weight_decay"]
        if "months" in m:
            cyc = m["months"]["cyclic"]
            rows.append(
                claim(
                    f"months 12-cycle in W (wd={wd:g})",
                    "months form a calendar-order cycle",
                    f"{cyc['adjacent_fraction']:.2f} of neighbours adjacent (p={cyc['p_value']:.3f}), "
                    f"{'a full cycle' if cyc['is_cyclic'] else 'not a full cycle'}; "
                    f"cos(neighbours) {m['months']['mean_cos_neighbours']:+.2f} "
                    f"vs all {m['months']['mean_cos_all']:+.2f}",
                    cyc["is_cyclic"],
                )
            )
    sims = "; ".join(f"wd={m['weight_decay']:g}: {m['gram_corr_similarity']:+.2f}" for m in out["models"])
    rows.append(
        claim(
            "arranged by co-occurrence",
            "W_u . W_v follows how often u and v co-occur; more with weight decay",
            f"corr(off-diag WᵀW, word co-occurrence corr.) {sims}",
            None,
        )
    )
    inter = [(m["weight_decay"], m["interference"], m["r2"]) for m in out["models"]]
    found = "; ".join(
        f"wd={wd:g}: {s['constructive_share']:.2f} constructive, "
        f"{s['rescued_by_context_share']:.3f} rescued, "
        f"R² better in context for {r['share_better_in_context']:.2f} of words"
        for wd, s, r in inter
    )
    rows.append(
        claim(
            "constructive interference",
            "co-active words add up; more prevalent with weight decay",
            found,
            None,
        )
    )
    clus = "; ".join(
        f"wd={m['weight_decay']:g}: ARI {m['clusters']['adjusted_rand_index']:.2f}" for m in out["models"]
    )
    rows.append(claim("semantic clusters", "word vectors cluster by meaning (forced groups)", clus, None))
    sweep = out.get("latent_sweep")
    if sweep and "months" in sweep["offdiag_gram_norm"]:
        v = [float(x) for x in sweep["offdiag_gram_norm"]["months"]]
        rows.append(
            claim(
                "||G - diag G||_F (months) vs L",
                "plotted against L = 50..10,000 (V = 10,000); no single number",
                " ".join(f"L={L}:{x:.2f}" for L, x in zip(sweep["latent_sizes"], v)),
                None,
            )
        )
    return rows
