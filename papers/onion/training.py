"""Training for the onion reproduction: the repeat-task model of one size and seed, then (model
frozen) each intervention and probe at ``hook_memory``; one JSON per (size, seed), from which
finished pieces are reused.

What may be reused (:func:`plan_resume`): a model checkpoint records the settings it was trained
with (:data:`MODEL_SETTINGS`), the (size, seed) JSON records them too, each intervention its step
count and the probes theirs. A piece made with other settings is never reused: the run is refused
before any work starts, or, with ``--overwrite``, the piece is deleted and redone.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

METHODS = ("unigram", "bigram", "das", "onion")
PROBES = ("linear probe", "mlp probe", "onion probe")
MODEL_SETTINGS = ("cell", "size", "seed", "no_input", "batch_size", "n_train")
"""The settings a trained repeat model depends on (its data, architecture and training loop)."""


def tag_of(cell: str, size: int, seed: int) -> str:
    return f"{cell}-N{size}-seed{seed}"


def _differences(saved: Any, wanted: dict[str, Any]) -> list[str]:
    if not isinstance(saved, dict):
        return ["its settings are not recorded (made by an older version)"]
    out = []
    for k, v in wanted.items():
        if k not in saved:
            out.append(f"{k} not recorded (now {v!r})")
        elif saved[k] != v:
            out.append(f"{k} {saved[k]!r} (now {v!r})")
    return out


def plan_resume(
    run_dir: Any, tag: str, model_settings: dict[str, Any], settings: dict[str, Any]
) -> tuple[list[str], list[str], dict[str, Any]]:
    """What the run folder holds for one (size, seed): ``(conflicts, reused, discard)``.

    ``conflicts``: pieces made with other settings (one line each); ``reused``: what a run with
    ``settings`` reuses; ``discard``: what to delete to redo the conflicting pieces (``model``:
    True to delete the checkpoint and the whole JSON; ``methods``: interventions to drop;
    ``probes``: True to drop the probes).
    """
    from hooked import checkpoint
    from hooked.io import read_json

    conflicts: list[str] = []
    reused: list[str] = []
    discard: dict[str, Any] = {"model": False, "methods": [], "probes": False}
    model_dir = run_dir / "models" / tag
    result_path = run_dir / f"{tag}.json"
    steps = settings["steps"]
    model_steps = None
    if (model_dir / "config.json").exists():
        meta = checkpoint.read_config(model_dir).get("meta", {})
        diff = _differences(meta.get("settings"), model_settings)
        model_steps = int(meta.get("steps", 0))
        if not diff and steps and model_steps > steps:
            diff = [f"trained {model_steps} steps (now --steps {steps})"]
        if diff:
            conflicts.append(f"{tag} model ({model_dir}): " + ", ".join(diff))
            discard["model"] = True
        elif model_steps < steps:
            reused.append(f"{tag} model ({model_steps} steps, trained on to {steps})")
        else:
            reused.append(f"{tag} model ({model_steps} steps)")
    if not result_path.exists() or discard["model"]:
        return conflicts, reused, discard
    row = read_json(result_path)
    diff = _differences(row.get("settings"), model_settings)
    if model_steps is None:  # no checkpoint: the model is trained afresh, nothing in the JSON fits it
        diff = diff or [f"its model checkpoint {model_dir} is missing"]
    elif row.get("model_steps") not in (None, model_steps):
        diff = diff or [
            f"made with a model of {row.get('model_steps')} steps, the checkpoint has {model_steps}"
        ]
    if diff:
        conflicts.append(f"{tag} results ({result_path}): " + ", ".join(diff))
        discard["model"] = True
        return conflicts, reused, discard
    if model_steps < steps:
        return conflicts, reused, discard  # trained on: its interventions and probes are redone
    done = []
    for method, details in row.get("intervention_details", {}).items():
        if method not in settings["methods"] or method not in row.get("interventions", {}):
            continue
        if details.get("steps") != settings["intervention_steps"]:
            conflicts.append(
                f"{tag} {method} intervention: {details.get('steps')} steps "
                f"(now --intervention-steps {settings['intervention_steps']})"
            )
            discard["methods"].append(method)
        else:
            done.append(method)
    if done:
        reused.append(f"{tag} interventions {', '.join(done)} ({settings['intervention_steps']} steps)")
    if settings["probes"] and "probes" in row:
        if row.get("probe_steps") != settings["probe_steps"]:
            conflicts.append(
                f"{tag} probes: {row.get('probe_steps')} steps (now --probe-steps {settings['probe_steps']})"
            )
            discard["probes"] = True
        else:
            reused.append(f"{tag} probes ({settings['probe_steps']} steps)")
    return conflicts, reused, discard


def prepare_resume(run_dir: Any, sizes: Any, seeds: int, settings: dict[str, Any]) -> None:
    """Check every (size, seed)'s pieces in ``run_dir`` before any work: refuse the run if some
    were made with other settings (unless ``run_dir.overwrite``: then delete them), and print what
    is reused."""
    from hooked.io import read_json

    plans = {}
    for size in sizes:
        for seed in range(seeds):
            tag = tag_of(settings["cell"], size, seed)
            wanted = {k: settings.get(k) for k in MODEL_SETTINGS} | {"size": size, "seed": seed}
            plans[tag] = plan_resume(run_dir, tag, wanted, settings)
    conflicts = [line for c, _, _ in plans.values() for line in c]
    if conflicts and not getattr(run_dir, "overwrite", False):
        raise ValueError(
            f"repro onion: the run folder {run_dir.path} holds work done with other settings:\n  "
            + "\n  ".join(conflicts)
            + "\nchoose another --out, or pass --overwrite to redo those pieces"
        )
    for tag, (_, reused, discard) in plans.items():
        result_path = run_dir / f"{tag}.json"
        if discard["model"]:
            shutil.rmtree(run_dir / "models" / tag, ignore_errors=True)
            result_path.unlink(missing_ok=True)
            print(f"{tag}: redoing the model and everything on it (--overwrite)")
        elif discard["methods"] or discard["probes"]:
            row = read_json(result_path)
            for method in discard["methods"]:
                row["interventions"].pop(method, None)
                row["intervention_details"].pop(method, None)
            if discard["probes"]:
                row.pop("probes", None)
                row.pop("probe_steps", None)
            run_dir.json(f"{tag}.json", row)
            redone = discard["methods"] + ["probes"] * discard["probes"]
            print(f"{tag}: redoing {', '.join(redone)} (--overwrite)")
        if reused:
            print(f"resuming from {run_dir.path}: reusing " + "; ".join(reused))


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
    from papers.onion.repeat import RepeatModel, evaluate, train_repeat

    tag = tag_of(cell, size, seed)
    settings = dict(
        cell=cell, size=size, seed=seed, no_input=no_input, batch_size=batch_size, n_train=n_train
    )
    result_path = run_dir / f"{tag}.json"
    row: dict[str, Any] = {**settings, "settings": settings}
    model_dir = run_dir / "models" / tag
    t0 = time.perf_counter()
    done, histories = 0, []
    # pieces made with other settings were refused or deleted by prepare_resume; check again here,
    # for a caller that did not run it
    conflicts, _, _ = plan_resume(
        run_dir,
        tag,
        settings,
        dict(
            steps=steps,
            methods=methods,
            intervention_steps=intervention_steps,
            probes=probes,
            probe_steps=probe_steps,
        ),
    )
    if conflicts:
        raise ValueError(
            "repro onion: work done with other settings in the run folder: " + "; ".join(conflicts)
        )
    if (model_dir / "config.json").exists():  # reuse a checkpoint; train on if it has fewer steps
        # the class is named, not read from the config: folders saved while the model lived
        # in hooked.models.repeat resume too
        model = checkpoint.load(model_dir, cls=RepeatModel, device=device)
        meta = checkpoint.read_config(model_dir)["meta"]
        done, histories = int(meta.get("steps", 0)), list(meta.get("histories", []))
        if result_path.exists():
            row = read_json(result_path)
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
        checkpoint.save(model, model_dir, meta={"steps": done, "histories": histories, "settings": settings})
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
