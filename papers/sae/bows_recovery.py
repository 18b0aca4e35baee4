"""Does a sparse autoencoder recover the true features of the Bag-of-Words Superposition model?
(``hooked repro sae-bows``; issue 24's question, ``docs/methods/bows.md`` for the model.)

The BOWS model is a tied ReLU autoencoder ``x' = ReLU(W^T W x + b)`` on binary bags of words; its
hidden activation ``h = W x`` (hook ``hook_hidden``) is a sum of the columns ``W_j`` of the
features present, so the true features in the hidden space are known: the columns of ``W``. An
SAE trained on ``h`` recovers them to the degree that its decoder rows point along them:
*recovery* is the mean, over the features the model represents (``||W_j||`` at least a tenth of the
largest), of the best cosine between ``W_j`` and any decoder row. A dictionary of random unit rows
of the same width gives the chance level (in a few dimensions even random rows come close to
every direction), reported beside it, and *precision* (the mean over decoder rows of their best
cosine with a true feature) says whether the rows that do not match are spent elsewhere.

Settings, each with correlated and with independent features of the same frequencies:

* **synthetic** (the paper's controlled setting): 12 binary features, ``circular`` (neighbours
  co-occur: the months analogue) against ``iid`` (each feature independent, same mean density);
  BOWS models of latent size ``latents`` (fewer dimensions than features: superposition);
* **text**: Wikipedia bags of words (``papers.bows.corpus``, V words), against the same bags with
  every word's occurrences shuffled across samples (frequencies kept, co-occurrence gone).

For each BOWS model, TopK SAEs of every ``width`` x ``k`` (L0) train in one pass over a store of
its hidden activations (:func:`hooked.sae.train` with several dictionaries).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import hooked


class _Hidden(hooked.HookedModule):
    """``h = x @ W.T`` at ``hook_hidden``: one BOWS model's hidden layer, as a store reads it."""

    def __init__(self, W: Tensor):
        super().__init__()
        self.register_buffer("W", W.detach().clone())
        self.hook_hidden = hooked.HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_hidden(x @ self.W.T)


def recovery(decoder: Tensor, true: Tensor, min_norm: float = 0.1) -> dict[str, float]:
    """Best-cosine recovery of the columns of ``true [d, n]`` by the rows of ``decoder [m, d]``."""
    norms = true.norm(dim=0)
    kept = norms >= min_norm * norms.max()
    T = true[:, kept] / norms[kept]
    D = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = D.double() @ T.double()  # [m, n_kept]
    return {
        "recovery": float(cos.max(0).values.mean()),
        "precision": float(cos.max(1).values.mean()),
        "represented": int(kept.sum()),
    }


def chance(true: Tensor, width: int, repeats: int = 20, seed: int = 0) -> float:
    """The recovery of random unit rows of ``width`` (mean over ``repeats`` draws)."""
    g = torch.Generator().manual_seed(seed)
    d = true.shape[0]
    return (
        sum(recovery(torch.randn(width, d, generator=g), true)["recovery"] for _ in range(repeats)) / repeats
    )


def _sae_sweep(
    folder: Path,
    W: Tensor,
    X: Tensor,
    widths: list[int],
    ks: list[int],
    steps: int,
    batch_size: int,
    seed: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Store ``W``'s hidden activations of ``X``; train a TopK SAE per (width, k) in one pass."""
    from hooked import store
    from hooked.sae import train

    path = folder / "store"
    if not (path / "manifest.json").is_file():
        store.harvest(_Hidden(W), list(X.split(4096)), ["hook_hidden"], path, sequence=False, progress=False)
    specs = [
        {"name": f"w{w}-k{k}", "hook": "hook_hidden", "kind": "topk", "width": w, "k": k}
        for w in widths
        for k in ks
        if k <= w
    ]
    saes = train(
        path,
        dictionaries=specs,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        out=folder / "saes",
        dead_tokens=20 * batch_size,
        progress=progress,
        checkpoint_every=max(steps // 4, 1),
    )
    H = X @ W.T
    rows = []
    for spec in specs:
        sae = saes[spec["name"]].requires_grad_(False)
        with torch.no_grad():
            err = (sae(H) - H).pow(2).sum() / (H - H.mean(0)).pow(2).sum()
        rows.append(
            {
                "width": spec["width"],
                "k": spec["k"],
                **recovery(sae.W_dec.detach(), W),
                "chance": chance(W, spec["width"]),
                "explained_variance": 1 - float(err),
            }
        )
    return rows


def bows_recovery(
    run_dir: Any,
    *,
    latents: list[int] = [4, 8],  # noqa: B006
    n_features: int = 12,
    n_samples: int = 10_000,
    base_log_odds: float = 0.0,
    weight_decay: float = 1.0,
    bows_epochs: int = 200,
    widths: list[int] = [12, 24, 48],  # noqa: B006
    ks: list[int] = [1, 2, 4, 6],  # noqa: B006
    sae_steps: int = 2000,
    text: bool = True,
    vocab_size: int = 1000,
    text_latent: int = 100,
    text_epochs: int = 20,
    text_widths: list[int] = [1000, 2000],  # noqa: B006
    text_ks: list[int] = [8, 16, 32, 64],  # noqa: B006
    text_sae_steps: int = 3000,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """SAE recovery of BOWS features: correlated vs independent, by width and L0.

    Args:
        latents: BOWS latent sizes of the synthetic models (12 features).
        n_features, n_samples: of the synthetic data.
        base_log_odds: added to every feature's log-odds of being active (0: the paper's data, about
            6 of 12 features active per sample; -6: about 3.4, a sparser variant).
        weight_decay: AdamW weight decay of the BOWS models (the paper's synthetic: 1 or 6).
        bows_epochs: epochs of the synthetic BOWS models (lr 1e-2, batch 256, cosine).
        widths, ks: SAE widths and k (L0) of the synthetic sweep.
        sae_steps: SAE training steps (batch 256) per synthetic model.
        text: also the text setting.
        vocab_size, text_latent, text_epochs: the text BOWS model (lr 2e-3, batch 512, cosine).
        text_widths, text_ks, text_sae_steps: the text SAE sweep (batch 1024).
        seed: everything random.
        progress: progress bars.
    """
    from analyses.superposition.weights import feature_directions
    from hooked.models import ToyReLU
    from hooked.models.toy_relu_training import epoch_batches, set_hidden_sizes
    from papers.bows.synthetic import synthetic_bows
    from papers.bows.training import train_bows

    started = time.perf_counter()
    run_dir = Path(run_dir)
    out: dict[str, Any] = {"synthetic": [], "text": []}

    # synthetic: circular (correlated) vs iid (independent), latent sizes side by side
    kinds = ["circular", "iid"]
    data = torch.stack(
        [synthetic_bows(k, n_samples, n_features, base_log_odds=base_log_odds, seed=seed + 42) for k in kinds]
    )
    grid = [(k, L) for k in range(len(kinds)) for L in latents]
    model = ToyReLU(n_features, max(latents), len(grid), seed=seed)
    set_hidden_sizes(model, [L for _, L in grid])
    kind_of = torch.tensor([k for k, _ in grid])
    batches = epoch_batches(lambda idx: data[:, idx][kind_of].transpose(0, 1), n_samples, 256)
    train_bows(
        model,
        batches,
        steps=bows_epochs * batches.steps_per_epoch,
        lr=1e-2,
        weight_decay=weight_decay,
        grad_clip=1.0,
        seed=seed,
        progress="bows (synthetic)" if progress else False,
    )
    W_all = feature_directions(model, "hook_hidden", torch.zeros(1, len(grid), n_features))  # [I, Lmax, F]
    for i, (k, L) in enumerate(grid):
        W = W_all[i, :L].detach()
        X = data[k]
        rows = _sae_sweep(
            run_dir / f"synthetic-{kinds[k]}-L{L}", W, X, widths, ks, sae_steps, 256, seed, progress
        )
        density = float(X.mean())
        for r in rows:
            out["synthetic"].append(
                {
                    "data": kinds[k],
                    "correlated": kinds[k] != "iid",
                    "latent": L,
                    "features_per_sample": density * n_features,
                    **r,
                }
            )

    if text:
        out["text"] = _text(
            run_dir,
            vocab_size,
            text_latent,
            weight_decay,
            text_epochs,
            text_widths,
            text_ks,
            text_sae_steps,
            seed,
            progress,
        )
    out["seconds"] = time.perf_counter() - started
    _report(out)
    from hooked.io import write_json

    write_json(run_dir / "bows_recovery.json", out)
    return out


def _text(
    run_dir: Path,
    vocab_size: int,
    latent: int,
    weight_decay: float,
    epochs: int,
    widths: list[int],
    ks: list[int],
    steps: int,
    seed: int,
    progress: bool,
) -> list[dict[str, Any]]:
    from analyses.superposition.weights import feature_directions
    from hooked.models import ToyReLU
    from hooked.models.toy_relu_training import epoch_batches
    from papers.bows.corpus import bow_dataset
    from papers.bows.training import train_bows

    ds = bow_dataset(vocab_size=vocab_size)
    X = ds.dense()
    g = torch.Generator().manual_seed(seed)
    shuffled = torch.stack([col[torch.randperm(len(col), generator=g)] for col in X.T], dim=1)
    both = torch.stack([X, shuffled])  # [2, N, V]
    model = ToyReLU(X.shape[1], latent, 2, seed=seed)
    batches = epoch_batches(lambda idx: both[:, idx].transpose(0, 1), X.shape[0], 512)
    train_bows(
        model,
        batches,
        steps=epochs * batches.steps_per_epoch,
        lr=2e-3,
        weight_decay=weight_decay,
        grad_clip=None,
        seed=seed,
        progress="bows (text)" if progress else False,
    )
    W_all = feature_directions(model, "hook_hidden", torch.zeros(1, 2, X.shape[1]))  # [2, L, V]
    rows = []
    for i, name in enumerate(["wikipedia", "shuffled"]):
        W = W_all[i].detach()
        sweep = _sae_sweep(run_dir / f"text-{name}", W, both[i], widths, ks, steps, 1024, seed, progress)
        for r in sweep:
            r = {
                "data": name,
                "correlated": name == "wikipedia",
                "latent": latent,
                "vocab": X.shape[1],
                "features_per_sample": float(both[i].sum(1).mean()),
                **r,
            }
            rows.append(r)
    return rows


def _report(out: dict[str, Any]) -> None:
    for part in ("synthetic", "text"):
        if not out[part]:
            continue
        print(f"\n{part}: mean best cosine of the true features with a decoder row (chance: random rows)")
        print(
            f"{'data':>10} {'L':>4} {'width':>6} {'k':>4} {'recovery':>9} {'chance':>7} "
            f"{'precision':>9} {'EV':>6}"
        )
        for r in out[part]:
            print(
                f"{r['data']:>10} {r['latent']:>4} {r['width']:>6} {r['k']:>4} {r['recovery']:>9.3f} "
                f"{r['chance']:>7.3f} {r['precision']:>9.3f} {r['explained_variance']:>6.3f}"
            )
