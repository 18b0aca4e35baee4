"""What the BOWS models learned, read through their hook points: Gram matrices against the data's
co-occurrence, the months' cycle, interference, clusters and the latent-size sweep."""

from __future__ import annotations

from typing import Any

MONTH_LABELS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def offdiag_corr(a: Any, b: Any) -> float:
    """Pearson correlation of the off-diagonal entries of two square matrices."""
    import torch

    mask = ~torch.eye(a.shape[-1], dtype=torch.bool)
    x, y = a[mask].double(), b[mask].double()
    x, y = x - x.mean(), y - y.mean()
    denom = (x.norm() * y.norm()).clamp_min(1e-12)
    return float((x @ y) / denom)


def synthetic_summary(rows: list[dict], kinds: list[str], wds: list[float], n_features: int) -> dict:
    import statistics

    out: dict[str, Any] = {}
    for kind in kinds:
        for wd in wds:
            sel = [
                r for r in rows if r["kind"] == kind and r["weight_decay"] == wd and r["latent"] < n_features
            ]
            if not sel:
                continue
            entry = {
                "gram_corr_similarity": statistics.fmean(r["gram_corr_similarity"] for r in sel),
                "constructive_share": statistics.fmean(r["constructive_share"] for r in sel),
                "mean_context_active": statistics.fmean(r["mean_context_active"] for r in sel),
                "context_gap": statistics.fmean(
                    r["mean_context_active"] - r["mean_context_inactive"] for r in sel
                ),
                "false_positive_share": statistics.fmean(r["false_positive_share"] for r in sel),
                "val_loss": statistics.fmean(r["val_loss"] for r in sel),
            }
            if kind == "circular":
                entry["cyclic_adjacent_fraction"] = statistics.fmean(
                    r["cyclic_adjacent_fraction"] for r in sel
                )
                entry["cyclic_at_L2"] = next(
                    (r["cyclic_adjacent_fraction"] for r in sel if r["latent"] == 2), None
                )
            out[f"{kind}/wd={wd:g}"] = entry
    return out


def months_data(run_dir: Any, X: Any, months: list[int]) -> dict:
    import torch

    from analyses.superposition.groups import cooccurrence_correlation, cyclic_order
    from analyses.superposition.plots import correlation_figure

    C = cooccurrence_correlation(X, months)
    k = len(months)
    ring = torch.arange(k)
    adjacent = float(C[ring, (ring + 1) % k].mean())
    others = float((C.sum() - C.diagonal().sum() - 2 * C[ring, (ring + 1) % k].sum()) / (k * k - 3 * k))
    # the data's own 2-D picture: PCA of the month indicator columns over windows with a month
    rows = X[:, months][X[:, months].sum(dim=1) > 0]
    centred = (rows - rows.mean(dim=0)).double()
    _, _, Vh = torch.linalg.svd(centred, full_matrices=False)
    coords = (torch.eye(k, dtype=torch.float64) - rows.mean(dim=0).double()) @ Vh[:2].T
    run_dir.figure(
        "bows_months_corr.png",
        correlation_figure(
            C, ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        ),
    )
    return {
        "windows_with_a_month": int(len(rows)),
        "month_frequency": X[:, months].mean(dim=0),
        "corr": C,
        "mean_corr_adjacent": adjacent,
        "mean_corr_other": others,
        "data_pca_cycle": cyclic_order(coords.float()),
    }


def analyse_text_models(
    run_dir: Any,
    model: Any,
    vocab: Any,
    X_val: Any,
    wds: list[float],
    months: list[int] | None,
    n_clusters: int,
    seed: int,
    corr: Any,
) -> list[dict]:
    import torch

    from analyses.superposition.groups import cluster_groups, group_geometry, offdiag_gram_norm
    from analyses.superposition.interference import interference_stats, r2_context_vs_alone
    from analyses.superposition.plots import months_pca_figure, r2_figure
    from analyses.superposition.weights import feature_directions, hook_bias

    n_inst = len(wds)
    example = torch.zeros(1, n_inst, len(vocab))
    W = feature_directions(model, "hook_hidden", example)  # [I, L, V]
    b = hook_bias(model, "hook_pre", example)  # [I, V]
    x_val = X_val[:, None, :].expand(-1, n_inst, -1)
    r2_ctx, r2_alone = r2_context_vs_alone(model, "hook_out", x_val)  # [I, V] each
    groups = {name: vocab.group_ids(name) for name in vocab.groups if len(vocab.group_ids(name)) >= 2}
    results, pcas = [], []
    for i, wd in enumerate(wds):
        res: dict[str, Any] = {"weight_decay": wd}
        norms = W[i].norm(dim=0)
        res["represented_words"] = int((norms > 0.5).sum())
        res["gram_corr_similarity"] = offdiag_corr(W[i].T @ W[i], corr)  # arranged by co-occurrence?
        res["interference"] = interference_stats(W[i], b[i], X_val)
        ok = ~(r2_ctx[i].isnan() | r2_alone[i].isnan())
        res["r2"] = {
            "words": int(ok.sum()),
            "mean_in_context": float(r2_ctx[i][ok].mean()),
            "mean_alone": float(r2_alone[i][ok].mean()),
            "share_better_in_context": float((r2_ctx[i][ok] > r2_alone[i][ok]).float().mean()),
            "best_gain_words": [
                vocab.words[j]
                for j in torch.argsort(torch.where(ok, r2_ctx[i] - r2_alone[i], -torch.inf), descending=True)[
                    :10
                ].tolist()
            ],
        }
        res["clusters"] = cluster_groups(W[i], groups, n_clusters=n_clusters, seed=seed)
        res["offdiag_gram_norm"] = {name: float(offdiag_gram_norm(W[i], ids)) for name, ids in groups.items()}
        if months is not None:
            res["months"] = group_geometry(W[i], months, cyclic=True, seed=seed)
            pcas.append((f"wd = {wd:g}", res["months"]["pca_coords"], res["months"]["cyclic"]))
        results.append(res)
    if pcas:
        run_dir.figure("bows_months_pca.png", months_pca_figure(pcas, MONTH_LABELS))
    run_dir.figure("bows_r2.png", r2_figure(r2_ctx, r2_alone, [f"wd = {wd:g}" for wd in wds]))
    return results


def latent_sweep(run_dir: Any, model: Any, vocab: Any, sizes: list[int], wd: float) -> dict:
    import torch

    from analyses.superposition.groups import offdiag_gram_norm
    from analyses.superposition.plots import gram_norm_figure
    from analyses.superposition.weights import feature_directions

    W = feature_directions(model, "hook_hidden", torch.zeros(1, len(sizes), len(vocab)))
    norms = {
        name: offdiag_gram_norm(W, vocab.group_ids(name))
        for name in ("months", "numbers", "planets")
        if len(vocab.group_ids(name)) >= 2
    }
    run_dir.figure("bows_gram_vs_latent.png", gram_norm_figure(sizes, norms, wd))
    return {"latent_sizes": sizes, "weight_decay": wd, "offdiag_gram_norm": norms}
