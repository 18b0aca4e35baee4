"""Training for the onion reproduction: the repeat-task model of one size and seed, then (model
frozen) each intervention and probe at ``hook_memory``; one JSON per (size, seed), from which
finished pieces are reused."""

from __future__ import annotations

import time
from typing import Any

METHODS = ("unigram", "bigram", "das", "onion")
PROBES = ("linear probe", "mlp probe", "onion probe")


def run_one(
    run_dir: Any,
    size: int,
    seed: int,
    data: Any,
    valid9: Any,
    pool9: Any,
    *,
    cell: str,
    steps: int,
    methods: tuple[str, ...],
    intervention_steps: int,
    probe_steps: int,
    batch_size: int,
    no_input: bool,
    n_train: int,
    probes: bool,
    device: str,
    progress: bool,
) -> dict:
    """Train (or reload) one model, then its interventions and probes; one JSON per (size, seed),
    rewritten after every piece, from which finished pieces are reused."""
    import torch

    from hooked import checkpoint
    from hooked.io import read_json
    from hooked.models.repeat import RepeatModel, evaluate, train_repeat

    tag = f"{cell}-N{size}-seed{seed}"
    result_path = run_dir / f"{tag}.json"
    row: dict[str, Any] = {
        "cell": cell,
        "size": size,
        "seed": seed,
        "no_input": no_input,
        "batch_size": batch_size,
    }
    if result_path.exists():
        row = read_json(result_path)
        print(f"{tag}: reusing what {result_path} holds")
    model_dir = run_dir / "models" / tag
    t0 = time.perf_counter()
    done, histories = 0, []
    if (model_dir / "config.json").exists():  # reuse a checkpoint; train on if it has fewer steps
        model = checkpoint.load(model_dir, device=device)
        meta = checkpoint.read_config(model_dir)["meta"]
        done, histories = int(meta.get("steps", 0)), list(meta.get("histories", []))
    else:
        torch.manual_seed(1000 * seed + size)
        model = RepeatModel(cell, size, no_input=no_input).to(device)
    if done < steps:
        history = train_repeat(
            model,
            data,
            steps=steps - done,
            batch_size=batch_size,
            seed=seed + done,
            progress=f"{tag} model" if progress else False,
        )
        histories.append({"from_step": done, **history})  # continued runs start a fresh AdamW state
        done = steps
        checkpoint.save(model, model_dir, meta={"steps": done, "histories": histories})
        row = {k: v for k, v in row.items() if k not in ("interventions", "intervention_details", "probes")}
    model.eval()
    if row.get("model_steps") != done:
        row["model_steps"] = done
        row["model_history"] = histories
        row["model_seconds"] = time.perf_counter() - t0
        row["model_valid_accuracy"] = evaluate(model, data.valid)
        row["model_valid9_accuracy"] = evaluate(model, valid9)
        run_dir.json(f"{tag}.json", row)
    print(
        f"{tag}: model exact match {row['model_valid_accuracy']:.3f} "
        f"(length 9: {row['model_valid9_accuracy']:.3f})"
    )

    row.setdefault("interventions", {})
    row.setdefault("intervention_details", {})
    for method in methods:
        if method in row["interventions"]:
            continue
        t0 = time.perf_counter()
        acc, details = _intervention(
            model,
            method,
            data,
            valid9,
            pool9,
            steps=intervention_steps,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=f"{tag} {method}" if progress else False,
        )
        details["seconds"] = time.perf_counter() - t0
        details["steps"] = intervention_steps
        row["interventions"][method] = acc
        row["intervention_details"][method] = details
        run_dir.json(f"{tag}.json", row)
        print(f"{tag}: {method} intervention accuracy {acc:.3f} ({intervention_steps} steps)")
    if probes and "probes" not in row:
        row["probes"] = _probes(
            model,
            data,
            steps=probe_steps,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=f"{tag} probes" if progress else False,
        )
        row["probe_steps"] = probe_steps
        run_dir.json(f"{tag}.json", row)
        print(f"{tag}: probes " + ", ".join(f"{k} {v:.3f}" for k, v in row["probes"].items()))
    return row


def _intervention(
    model: Any,
    method: str,
    data: Any,
    valid9: Any,
    pool9: Any,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    device: str,
    progress: Any,
) -> tuple[float, dict]:
    from interventions.onion import OnionIntervention
    from interventions.subspace import DAS, Autosegment
    from papers.onion.glue import fixed_batches, repeat_loss, repeat_metric, sampler

    d = model.memory_size
    regime = "unigram" if method == "das" else method
    if method == "onion":
        iv = OnionIntervention(d, model.n_symbols, seed=seed)
        train_split, valid_split = data.train, data.valid
    elif method == "das":
        iv = DAS(d, 9, seed=seed)
        train_split, valid_split = pool9, valid9
    elif method in ("unigram", "bigram"):
        iv = Autosegment(d, 9 if method == "unigram" else 8, seed=seed)
        train_split, valid_split = pool9, valid9
    else:
        raise ValueError(f"unknown method {method!r}; expected some of {METHODS}")
    iv = iv.to(device)
    losses = iv.fit(
        model,
        "hook_memory",
        sampler(regime, train_split, model.n_symbols, batch_size),
        loss=repeat_loss,
        steps=steps,
        seed=seed,
        progress=progress,
    )
    acc = iv.evaluate(
        model, "hook_memory", fixed_batches(regime, valid_split, model.n_symbols), metric=repeat_metric
    )
    details: dict[str, Any] = {"loss_first": losses[0], "loss_last": losses[-1], "losses": losses}
    if method in ("unigram", "bigram"):
        details["variable_sizes"] = iv.variable_sizes()  # last entry: "rest"
    return acc, details


def _probes(
    model: Any, data: Any, *, steps: int, batch_size: int, seed: int, device: str, progress: Any
) -> dict[str, float]:
    import torch

    from hooked.protocol import collect_activations
    from interventions.onion import OnionProbe
    from interventions.probes import SequenceProbe

    n_fit = min(len(data.train), 100_000)
    fit_split = type(data.train)(data.train.tokens[:n_fit], data.train.lengths[:n_fit])

    def acts(split: Any) -> torch.Tensor:
        batches = [(x.to(device), ln.to(device)) for x, ln in split.batches(4096)]
        return collect_activations(model, batches, "hook_memory")["hook_memory"]

    a_fit, a_valid = acts(fit_split), acts(data.valid)
    tok_fit, len_fit = fit_split.tokens.long(), fit_split.lengths.long()
    tok_valid, len_valid = data.valid.tokens.long(), data.valid.lengths.long()
    d, max_len = model.memory_size, data.max_len
    made = {
        "linear probe": SequenceProbe(d, model.n_symbols, max_len),
        "mlp probe": SequenceProbe(d, model.n_symbols, max_len, hidden=d),
        "onion probe": OnionProbe(d, model.n_symbols, max_len),
    }
    out = {}
    for name, probe in made.items():
        probe = probe.to(device)
        probe.fit(
            a_fit,
            tok_fit,
            len_fit,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            progress=f"{progress} {name}" if progress else False,
        )
        out[name] = probe.accuracy(a_valid, tok_valid, len_valid)
    return out
