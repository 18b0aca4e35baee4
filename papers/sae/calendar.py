"""Months and days of the week in SmolLM2-135M's residual stream, read through a sparse autoencoder
(``hooked repro sae-calendar``; issue 24's question).

Are there features for months and for days, and do their decoder directions lie on a circle in
calendar order (the cyclic structures the BOWS paper explains by co-occurrence)?

1. **Activations.** The residual stream after decoder layer ``layer`` (``model.layers.L.hook_out``
   on ``hooked.wrap``) on training-split Wikipedia summaries (:func:`hooked.sae.texts.wiki_texts`):
   every summary that names a month or a day, and as many others drawn at random, each cut to
   ``max_length`` tokens. Only the layers up to ``layer`` run (a copy of the model with the later
   layers dropped); the activations go to a ``hooked.store``.
2. **Dictionary.** A TopK SAE (``width``, ``k``) trained on that store (:func:`hooked.sae.train`).
3. **Probes.** Month and day names in context: in held-out summaries (months; days are nearly
   absent from the summaries) and in fixed sentence templates (both), each name being one token.
   Background: every other token of the held-out summaries.
4. **Features.** A feature is a *month feature* if it fires on at least ``min_rate`` of the
   probe tokens of some month and at least ``min_precision`` of its firings on probe and
   background tokens are on month names; the same for days.
5. **Circle.** For each month, the month features' part of the reconstruction (``sum_i f_i
   W_dec[i]`` over month features), averaged over that month's probe tokens; the 12 vectors,
   unit-normalised and centred, on their first two principal components; their angular order
   against the calendar (:func:`analyses.superposition.groups.cyclic_order`: the share of
   calendar neighbours that are angular neighbours, and its permutation p-value). The same for the
   raw residual stream (mean per month) as a reference that needs no dictionary, for the whole
   reconstruction and for the error (what the dictionary leaves out), and for days.

Everything is reported as measured; no threshold is tuned toward a circle.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

MONTHS = "January February March April May June July August September October November December".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
TEMPLATES = [
    "The meeting was moved to {w} because of the storm.",
    "She said that {w} is her favourite time to travel.",
    "We will see each other again in {w}, I hope.",
    "The report was published on a {w} and read by many.",
    "Nothing much happened that {w}, according to the diary.",
    "He remembered the cold {w} when the river froze.",
    "By {w} the new bridge should be open to traffic.",
    "The festival is held every {w} in the old town.",
]


def calendar(
    run_dir: Any,
    *,
    layer: int = 10,
    others: int = 500,
    max_length: int = 128,
    width: int = 4608,
    k: int = 32,
    epochs: int = 6,
    batch_size: int = 2048,
    min_rate: float = 0.3,
    min_precision: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Month and day features of a TopK SAE on SmolLM2-135M's residual stream, and their geometry.

    Args:
        layer: the decoder layer whose output the SAE reads.
        others: summaries without a month or day name added to the training texts.
        max_length: tokens per summary at most.
        width, k: the SAE's features and active features per token.
        epochs: passes over the activation store.
        batch_size: tokens per training step.
        min_rate: a month (day) feature fires on at least this share of some month's probe tokens.
        min_precision: and at least this share of its firings are on month (day) names.
        seed: text sampling, SAE initialisation and batch order.
        progress: progress bars.
    """
    from hooked import lm, store
    from hooked.sae import train
    from hooked.sae.texts import wiki_texts

    started = time.perf_counter()
    run_dir = _path(run_dir)
    hook = f"model.layers.{layer}.hook_out"
    model = lm.load("smollm2-135m", backend="wrap")
    tok = model.tokenizer
    names = MONTHS + DAYS
    ids = {w: tok(" " + w, add_special_tokens=False)["input_ids"] for w in names}
    if any(len(v) != 1 for v in ids.values()):
        raise ValueError(f"every month and day name must be one token here: {ids}")
    token_of = {w: v[0] for w, v in ids.items()}

    # 1. activations of training texts, through a copy of the model cut after `layer`
    texts = wiki_texts("train")
    dated = [t for t in texts if any(w in t for w in names)]
    rest = [t for t in texts if not any(w in t for w in names)]
    pick = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[:others].tolist()
    train_texts = dated + [rest[i] for i in pick]
    cut = _truncated(layer)
    store_dir = run_dir / "store"
    if not (store_dir / "manifest.json").is_file():
        batches = (
            lm.tokenize(cut, train_texts[i : i + 16], padding_side="right", max_length=max_length)
            for i in range(0, len(train_texts), 16)
        )
        store.harvest(cut, batches, [hook], store_dir, model_name="smollm2-135m-cut", progress=progress)
    rows = store.manifest_of(store_dir)["rows"]
    steps = max(1, epochs * rows // batch_size)
    sae = train(
        store_dir,
        hook,
        kind="topk",
        width=width,
        k=k,
        steps=steps,
        batch_size=batch_size,
        out=run_dir / "sae",
        seed=seed,
        progress=progress,
        checkpoint_every=200,
        dead_tokens=rows,
    )
    sae.requires_grad_(False)

    # 2. probe tokens: held-out summaries (months) and templates (months, days)
    heldout = [t for t in wiki_texts("heldout")]
    probe_texts = [t for t in heldout if any(w in t for w in names)]
    background_texts = [t for t in heldout if not any(w in t for w in names)][:200]
    tmpl = [s.format(w=w) for w in names for s in TEMPLATES]
    acts_at: dict[str, list[Tensor]] = {w: [] for w in names}
    resid_at: dict[str, list[Tensor]] = {w: [] for w in names}
    where: dict[str, list[str]] = {w: [] for w in names}
    background: list[Tensor] = []
    id_to_name = {v: w for w, v in token_of.items()}
    with torch.no_grad():
        for source, group in (("wiki", probe_texts), ("template", tmpl), ("background", background_texts)):
            for i in range(0, len(group), 16):
                batch = lm.tokenize(cut, group[i : i + 16], padding_side="right", max_length=max_length)
                _, cache = cut.run_with_cache(**batch, names_filter=[hook])
                x = cache[hook]
                f = sae.encode(x)
                mask = batch["attention_mask"].bool()
                if source == "background":
                    background.append(f[mask])
                    continue
                for b, t in (mask & _is_name(batch["input_ids"], id_to_name)).nonzero().tolist():
                    w = id_to_name[int(batch["input_ids"][b, t])]
                    acts_at[w].append(f[b, t])
                    resid_at[w].append(x[b, t])
                    where[w].append(source)
    bg = torch.cat(background)
    out: dict[str, Any] = {
        "layer": layer,
        "hook": hook,
        "train_texts": len(train_texts),
        "dated_texts": len(dated),
        "store_rows": rows,
        "sae": {"width": width, "k": k, "steps": steps, "batch_size": batch_size},
        "probe_counts": {w: {s: where[w].count(s) for s in ("wiki", "template")} for w in names},
        "background_tokens": int(bg.shape[0]),
    }
    for group_name, group in (("months", MONTHS), ("days", DAYS)):
        out[group_name] = _group(sae, group, acts_at, resid_at, bg, min_rate, min_precision)
    out["seconds"] = time.perf_counter() - started
    _report(out)
    from hooked.io import write_json

    write_json(run_dir / "calendar.json", out)
    return out


def _path(run_dir: Any) -> Any:
    from pathlib import Path

    return Path(run_dir)


def _truncated(layer: int) -> Any:
    """SmolLM2-135M under ``hooked.wrap`` with the decoder layers after ``layer`` dropped (what
    the kept layers compute is unchanged; the logits are not used)."""
    from torch import nn

    from hooked import lm

    hf, tokenizer = lm.load_hf("smollm2-135m")
    hf.model.layers = nn.ModuleList(list(hf.model.layers)[: layer + 1])
    hf.config.num_hidden_layers = layer + 1
    return lm.wrap_lm(hf.eval(), tokenizer)


def _is_name(ids: Tensor, id_to_name: dict[int, str]) -> Tensor:
    return torch.isin(ids, torch.tensor(sorted(id_to_name)))


def _group(
    sae: Any,
    group: list[str],
    acts_at: dict[str, list[Tensor]],
    resid_at: dict[str, list[Tensor]],
    background: Tensor,
    min_rate: float,
    min_precision: float,
) -> dict[str, Any]:
    """Features of one group (months or days), their selectivity, and the circle test."""
    from analyses.superposition.groups import cyclic_order, unit_pca_2d

    present = [w for w in group if acts_at[w]]
    result: dict[str, Any] = {"names_with_probes": present}
    if len(present) < 3:
        result["note"] = "fewer than 3 names have probe tokens"
        return result
    on = {w: (torch.stack(acts_at[w]) > 0).float() for w in present}  # [n_w, width]
    rate = torch.stack([on[w].mean(0) for w in present])  # [names, width]
    fires_on_group = sum(on[w].sum(0) for w in present)
    fires_elsewhere = (background > 0).float().sum(0)
    precision = fires_on_group / (fires_on_group + fires_elsewhere).clamp_min(1)
    chosen = ((rate.max(0).values >= min_rate) & (precision >= min_precision)).nonzero().reshape(-1)
    features = []
    for i in chosen.tolist():
        per = rate[:, i]
        features.append(
            {
                "feature": i,
                "precision": float(precision[i]),
                "fires_on": {w: round(float(per[j]), 3) for j, w in enumerate(present)},
                "background_rate": float(fires_elsewhere[i] / max(background.shape[0], 1)),
            }
        )
    result["features"] = features
    # names that have a feature of their own: fires on >= min_rate of that name, < min_rate of the others
    own = {}
    for w_idx, w in enumerate(present):
        others = torch.cat([rate[:w_idx], rate[w_idx + 1 :]]).max(0).values
        mine = ((rate[w_idx] >= min_rate) & (others < min_rate) & (precision >= min_precision)).nonzero()
        own[w] = mine.reshape(-1).tolist()
    result["name_specific_features"] = own
    if len(present) == len(group):
        idx = list(range(len(group)))
        resid = torch.stack([torch.stack(resid_at[w]).double().mean(0) for w in group]).T  # [d, names]
        coords, var2 = unit_pca_2d(resid.float(), idx)
        result["residual_circle"] = {"pc2_variance": var2, **cyclic_order(coords), "coords": coords.tolist()}
        # the circle in the whole reconstruction, and in what the dictionary leaves out (the error)
        recon = torch.stack(
            [(torch.stack(acts_at[w]).double() @ sae.W_dec.double()).mean(0) for w in group]
        ).T
        recon = recon + sae.b_dec.double()[:, None]
        for key, vecs in (("reconstruction_circle", recon), ("error_circle", resid - recon)):
            coords, var2 = unit_pca_2d(vecs.float(), idx)
            result[key] = {"pc2_variance": var2, **cyclic_order(coords), "coords": coords.tolist()}
        if len(chosen):
            W = sae.W_dec[chosen].double()
            recon = torch.stack(
                [(torch.stack(acts_at[w])[:, chosen].double() @ W).mean(0) for w in group]
            ).T  # [d, names]
            coords, var2 = unit_pca_2d(recon.float(), idx)
            result["feature_circle"] = {
                "pc2_variance": var2,
                **cyclic_order(coords),
                "coords": coords.tolist(),
            }
    return result


def _report(out: dict[str, Any]) -> None:
    print(
        f"\nSmolLM2-135M, {out['hook']}: SAE width {out['sae']['width']}, k {out['sae']['k']}, "
        f"{out['store_rows']} training tokens"
    )
    for group in ("months", "days"):
        g = out[group]
        counts = {
            w: sum(c.values())
            for w, c in out["probe_counts"].items()
            if w in (MONTHS if group == "months" else DAYS)
        }
        print(f"\n{group}: probe tokens per name {counts}")
        if "features" not in g:
            print(f"  {g.get('note')}")
            continue
        print(
            f"  {len(g['features'])} {group[:-1]} features (fire on >= rate of some name, precision >= "
            "threshold)"
        )
        own = {w: v for w, v in g["name_specific_features"].items() if v}
        print(
            f"  names with a feature of their own: {len(own)} of {len(g['names_with_probes'])} {sorted(own)}"
        )
        for key in ("residual_circle", "reconstruction_circle", "error_circle", "feature_circle"):
            if key in g:
                c = g[key]
                print(
                    f"  {key}: adjacent fraction {c['adjacent_fraction']:.2f} (1 = calendar order), "
                    f"p = {c['p_value']:.4f}, 2 PCs explain {c['pc2_variance']:.0%}"
                )
