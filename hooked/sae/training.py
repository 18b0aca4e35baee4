"""Training dictionaries on an activation store: :func:`train` (``hooked sae train`` on the command line).

>>> sae = hooked.sae.train("acts/", "model.layers.6.hook_out", kind="topk", width=4096, k=32,
...                        steps=5000, out="runs/sae")

Batches stream from the store (:class:`hooked.sae.stream.StoreStream`: shuffled, never loaded
whole); one pass trains several dictionaries (other hooks, widths, k) on the same batches. What a
step does is in :mod:`hooked.sae.learner`: scaled activations, sparse TopK kernels, Adam with a
linear warm-up and a linear decay to 0 over the last ``decay`` fraction of the steps, decoder rows
at unit norm, ``b_dec`` from the geometric median, and the auxiliary TopK loss for dead features.

The run folder ``out``:

* ``run.json``: the settings, and when finished the final metrics (``"finished": true``);
* ``metrics.jsonl``: every ``metrics_every`` steps, one line per dictionary (MSE, explained
  variance, L0, dead and dense fractions, auxiliary loss, learning rate, tokens);
* ``checkpoints/step-NNNNNNNN/``: ``state.safetensors`` + ``state.json``, written whole (a folder
  renamed into place) every ``checkpoint_every`` steps; the last two are kept;
* ``NAME/``: each finished dictionary in SAELens's layout (:func:`hooked.sae.save`).

Run the same call again and it resumes from the last checkpoint: a run killed at any point (even
by SIGKILL) ends with the same dictionaries as one never interrupted. A folder of another run (other
settings) is refused with the differences listed; a finished run is returned as it is.

Under ``torchrun --nproc_per_node=N`` each rank takes ``batch_size / N`` rows of every batch;
gradients, statistics and the BatchTopK selection are summed over the ranks, so the run equals the
one-process run up to float rounding (``tests/sae`` states the tolerance); rank 0 writes the files.

A batch holding NaN or inf stops the run at that step with an error naming the step and the hook;
the last checkpoint stays as it was.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hooked.io import file_sha256, read_json, read_tensors, write_json, write_tensors
from hooked.sae.dictionary import SAE
from hooked.sae.files import RUN
from hooked.sae.files import load as load_dictionary
from hooked.sae.files import save as save_dictionary
from hooked.sae.learner import Comm, Learner, Spec
from hooked.sae.stream import StoreStream, store_columns

FORMAT = "hooked.sae.train/1"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


class TrainingError(ValueError):
    """Training cannot go on as asked; the message says at which step and why."""


def train(
    store: str | os.PathLike,
    hook: str | None = None,
    *,
    kind: str = "topk",
    width: int | None = None,
    k: int | None = None,
    l1: float | None = None,
    steps: int | None = None,
    out: str | os.PathLike | None = None,
    hook_out: str | None = None,
    dictionaries: Sequence[Mapping[str, Any]] | None = None,
    batch_size: int = 4096,
    lr: float | None = None,
    warmup: int | None = None,
    decay: float = 0.2,
    aux_k: int | None = None,
    aux_coeff: float = 1 / 32,
    dead_tokens: int = 1_000_000,
    b_dec_init: str = "median",
    bandwidth: float = 0.05,
    init: SAE | str | os.PathLike | None = None,
    seed: int = 0,
    metrics_every: int = 100,
    checkpoint_every: int = 1000,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    progress: bool = True,
) -> SAE | dict[str, SAE]:
    """Train a dictionary (or several) on the activations in ``store``.

    Args:
        store: a folder written by ``hooked harvest`` / :func:`hooked.store.harvest`.
        hook: the store column (hook name) the dictionary reads.
        kind: ``topk``, ``batchtopk``, ``standard`` (ReLU + L1) or ``jumprelu``.
        width: features (e.g. 16 x d_model).
        k: active features per row (``topk``, ``batchtopk``).
        l1: sparsity coefficient: L1 for ``standard``, L0 for ``jumprelu`` (default 1 for both).
        steps: optimiser steps (default: one pass over the store).
        out: the run folder (checkpoints, metrics, the dictionaries); ``None`` keeps nothing on disk.
        hook_out: train a transcoder from ``hook`` to this column instead of an SAE.
        dictionaries: several dictionaries in one pass, each a dict of the fields above (``hook``,
            ``kind``, ``width``, ``k``, ``l1``, ``hook_out``, ``lr``, ``aux_k``, ``aux_coeff``,
            ``dead_tokens``, ``b_dec_init``, ``init``) and a ``name`` (its folder in ``out``);
            unset fields take the values given to this call.
        batch_size: rows (tokens) per step, summed over ranks under ``torchrun``.
        lr: Adam's learning rate (default ``2e-4 / sqrt(width / 2**14)``, Gao et al.).
        warmup: steps of linear warm-up (default ``min(1000, steps // 10)``).
        decay: the last fraction of steps over which the learning rate falls linearly to 0.
        aux_k, aux_coeff: the auxiliary TopK loss on dead features (default ``d_in // 2``, 1/32).
        dead_tokens: a feature not active for this many tokens is dead.
        b_dec_init: ``median`` (geometric median of the first batch), ``mean`` or ``zeros``.
        bandwidth: JumpReLU: the width of the kernel that gives the threshold its gradient, and
            the initial threshold (in the scaled units, where a row's mean square is 1 per dimension).
        init: start from this dictionary (an SAE or its folder) instead of random weights.
        seed: seeds the initial weights and the order of the rows.
        metrics_every, checkpoint_every: in steps.
        dtype: of the dictionaries returned (training runs in float32).
        overwrite: start afresh in a folder holding another or a finished run.
        progress: a progress bar (rank 0).
    Returns:
        the dictionary, or ``{name: dictionary}`` when ``dictionaries`` was given.
    """
    defaults = dict(
        hook=hook,
        kind=kind,
        width=width,
        k=k,
        l1=l1,
        hook_out=hook_out,
        lr=lr,
        aux_k=aux_k,
        aux_coeff=aux_coeff,
        dead_tokens=dead_tokens,
        b_dec_init=b_dec_init,
        bandwidth=bandwidth,
        init=init,
    )
    specs, inits = _specs(dictionaries, defaults)
    from hooked.checks import positive

    positive(batch_size=batch_size, metrics_every=metrics_every, checkpoint_every=checkpoint_every)
    if steps is not None:
        positive(steps=steps)
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must be a fraction of the steps in [0, 1], got {decay!r}")
    comm = Comm()
    columns = [c for s in specs for c in (s.hook, s.hook_out) if c is not None]
    shapes = store_columns(store, columns)
    stream = StoreStream(store, columns, batch_size, seed=seed, rank=comm.rank, world=comm.world)
    steps = steps if steps is not None else stream.per_epoch
    warmup = warmup if warmup is not None else min(1000, steps // 10)
    learners = [
        Learner(s, shapes[s.hook][0], shapes[s.hook_out or s.hook][0], seed=_seed(seed, s.name))
        for s in specs
    ]
    settings = _settings(stream, specs, batch_size, steps, seed, warmup, decay)
    run = _RunFolder(Path(out), settings, comm, overwrite) if out is not None else None
    step = 0
    if run is not None:
        if run.finished:
            saes = {s.name: load_dictionary(run.path / s.name) for s in specs}
            return _result(saes, dictionaries, dtype)
        step = run.resume(learners, stream)

    bar = _bar(progress and comm.rank == 0, steps, step)
    try:
        while step < steps:
            batch = next(stream)
            rate = _learning_rate(step, steps, warmup, decay)
            _check_finite(batch, columns, step, comm, run)
            for learner, init_sae in zip(learners, inits):
                x = batch[learner.spec.hook].float()
                y = batch[learner.spec.hook_out].float() if learner.spec.hook_out is not None else x
                if not learner.initialised:
                    learner.initialise(x, y, batch_size, comm, init_sae)
                loss = learner.loss(x, y, batch_size, comm)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"step {step}: the loss of {learner.spec.name!r} at {learner.spec.hook!r} is "
                        f"{float(loss)} (training diverged; try a smaller lr){_kept(run)}"
                    )
                loss.backward()
                learner.update(rate * learner.lr, comm)
            step += 1
            if step % metrics_every == 0 or step == steps:
                lines = [
                    {
                        "step": step,
                        "tokens": step * batch_size,
                        "name": ln.spec.name,
                        "lr": rate * ln.lr,
                        **ln.metrics(),
                    }
                    for ln in learners
                ]
                if run is not None:
                    run.log(lines)
                if bar is not None:
                    first = lines[0]
                    bar.set_postfix(
                        ev=f"{first['explained_variance']:.3f}",
                        l0=f"{first['l0']:.1f}",
                        dead=f"{first['dead_fraction']:.2f}",
                    )
            if run is not None and (step % checkpoint_every == 0 or step == steps):
                run.checkpoint(step, learners, stream)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    meta = {"store": settings["store"], "steps": steps, "tokens": steps * batch_size}
    saes = {ln.spec.name: ln.export(dtype, meta) for ln in learners}
    if run is not None:
        run.finish(saes)
    return _result(saes, dictionaries, dtype)


def _seed(seed: int, name: str) -> int:
    """A dictionary's own seed: from the run's seed and its name, so that it starts the same
    whether it trains alone or beside others."""
    return (seed * 1_000_003 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)) % 2**63


def _result(saes: dict[str, SAE], dictionaries: Any, dtype: torch.dtype) -> SAE | dict[str, SAE]:
    saes = {n: s.to(dtype) for n, s in saes.items()}
    return saes if dictionaries is not None else next(iter(saes.values()))


def _specs(
    dictionaries: Sequence[Mapping[str, Any]] | None, defaults: dict[str, Any]
) -> tuple[list[Spec], list[SAE | None]]:
    if dictionaries is None:
        entries = [{"name": "sae"}]
    else:
        entries = list(dictionaries)
        if not entries:
            raise ValueError("dictionaries is empty; give at least one")
    allowed = {*defaults, "name"}
    specs, inits = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise TypeError(f"dictionaries[{i}] must be a dict of settings, got {type(entry).__name__}")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ValueError(
                f"dictionaries[{i}]: unknown setting {unknown[0]!r}; known: {', '.join(sorted(allowed))}"
            )
        merged = {**defaults, **entry}
        merged.setdefault("name", f"sae{i}")
        if merged["hook"] is None:
            raise ValueError("hook is required: the store column (hook name) the dictionary reads")
        if merged["width"] is None:
            raise ValueError("width is required: the number of features")
        init = merged.pop("init")
        sae = load_dictionary(init) if isinstance(init, (str, os.PathLike)) else init
        if sae is not None and not isinstance(sae, SAE):
            raise TypeError(f"init must be a dictionary or its folder, got {type(sae).__name__}")
        name = str(merged["name"])
        if not name or name in (RUN, METRICS, CHECKPOINTS) or "/" in name or name.startswith("."):
            raise ValueError(f"dictionary name {name!r} cannot be a folder name in the run folder")
        specs.append(Spec(init=None if sae is None else _fingerprint_sae(sae), **merged))
        inits.append(sae)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"two dictionaries share a name: {names}; give each its own name")
    for s in specs:
        if s.b_dec_init not in ("median", "mean", "zeros"):
            raise ValueError(f"b_dec_init must be 'median', 'mean' or 'zeros', got {s.b_dec_init!r}")
    return specs, inits


def _fingerprint_sae(sae: SAE) -> str:
    h = hashlib.sha256()
    for name, p in sae.named_parameters():
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _settings(
    stream: StoreStream, specs: list[Spec], batch_size: int, steps: int, seed: int, warmup: int, decay: float
) -> dict[str, Any]:
    """What the run's result depends on (a resumed run must match it)."""
    from hooked.store import manifest_of

    manifest = manifest_of(stream.store)
    shards = hashlib.sha256("".join(s["sha256"] for s in manifest["shards"]).encode()).hexdigest()
    store = {"path": str(stream.store.resolve()), "rows": manifest["rows"], "shards_sha256": shards}
    return {
        "format": FORMAT,
        "store": store,
        "dictionaries": [s.as_json() for s in specs],
        "batch_size": batch_size,
        "steps": steps,
        "seed": seed,
        "warmup": warmup,
        "decay": decay,
    }


def _learning_rate(step: int, steps: int, warmup: int, decay: float) -> float:
    """The factor on the learning rate at ``step``: linear warm-up, flat, linear decay to 0."""
    factor = 1.0
    if warmup and step < warmup:
        factor = (step + 1) / warmup
    decay_steps = math.floor(decay * steps)
    if decay_steps and step >= steps - decay_steps:
        factor = min(factor, (steps - step) / decay_steps)
    return factor


def _check_finite(
    batch: dict[str, torch.Tensor], columns: list[str], step: int, comm: Comm, run: Any
) -> None:
    bad = torch.tensor([float(not bool(torch.isfinite(batch[c]).all())) for c in columns])
    comm.sum(bad)
    if bool(bad.any()):
        hook = columns[int(bad.nonzero()[0])]
        raise TrainingError(
            f"step {step}: the batch read from the store at hook {hook!r} holds NaN or inf values; training "
            f"stopped{_kept(run)}"
        )


def _kept(run: Any) -> str:
    if run is None:
        return ""
    last = run.last_checkpoint()
    if last is None:
        return f"; no checkpoint was written in {run.path}"
    return f"; the last good checkpoint ({last.name}) is kept in {last.parent}"


def _bar(show: bool, total: int, start: int) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="sae train", unit="step")


class _RunFolder:
    """The run folder: settings, metrics, checkpoints, results (rank 0 writes, every rank reads)."""

    def __init__(self, path: Path, settings: dict[str, Any], comm: Comm, overwrite: bool):
        self.path, self.settings, self.comm = path, settings, comm
        self.id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        outcome: tuple[str, Any] = ("ok", False)
        if comm.rank == 0:  # rank 0 checks and prepares the folder; the others learn the outcome
            try:
                outcome = ("ok", self._prepare(overwrite))
            except ValueError as e:
                outcome = ("error", str(e))
        if comm.world > 1:
            from hooked import distributed

            outcome = distributed.broadcast(outcome)
        if outcome[0] == "error":
            raise ValueError(outcome[1])
        self.finished = bool(outcome[1])

    def _prepare(self, overwrite: bool) -> bool:
        """Check the folder, start or continue the run there; returns whether it is finished."""
        path, settings = self.path, self.settings
        if path.exists() and not path.is_dir():
            raise ValueError(f"the run folder {path} is a file")
        old = None
        if (path / RUN).is_file():
            old = read_json(path / RUN)
            if not isinstance(old, dict) or old.get("format") != FORMAT:
                raise ValueError(f"{path / RUN} is not a hooked sae training run (format {FORMAT!r})")
        elif path.is_dir() and any(path.iterdir()) and not overwrite:
            raise ValueError(
                f"{path} holds files but no {RUN}: not a training run folder; choose an empty or new folder"
            )
        if old is not None and not overwrite:
            diff = _differences(old.get("settings", {}), settings)
            if diff:
                raise ValueError(
                    f"{path} holds another run (other settings: {'; '.join(diff)}); choose another folder, "
                    "or pass overwrite=True (--overwrite) to start afresh there"
                )
            if old.get("finished"):
                return True
        if overwrite and path.is_dir():
            for child in path.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        path.mkdir(parents=True, exist_ok=True)
        if old is None or overwrite:
            write_json(
                path / RUN, {"format": FORMAT, "run_id": self.id, "finished": False, "settings": settings}
            )
        return False

    def last_checkpoint(self) -> Path | None:
        found = sorted((self.path / CHECKPOINTS).glob("step-*")) if (self.path / CHECKPOINTS).is_dir() else []
        found = [p for p in found if (p / "state.json").is_file()]
        return found[-1] if found else None

    def resume(self, learners: list[Learner], stream: StoreStream) -> int:
        """Load the last checkpoint (if any); returns the step to continue from."""
        last = self.last_checkpoint()
        if last is None:
            if self.comm.rank == 0:
                (self.path / METRICS).unlink(missing_ok=True)
            return 0
        info = read_json(last / "state.json")
        weights = last / "state.safetensors"
        if info.get("run_id") != self.id or info.get("format") != FORMAT:
            raise ValueError(
                f"{last} is a checkpoint of another run (run id {info.get('run_id')!r}, this run {self.id!r})"
            )
        if info.get("sha256") != file_sha256(weights):
            raise ValueError(f"{weights} does not match the sha256 {last / 'state.json'} records")
        tensors = read_tensors(weights)
        for ln in learners:
            name = ln.spec.name
            mine = {k.removeprefix(name + "/"): v for k, v in tensors.items() if k.startswith(name + "/")}
            ln.load_state(mine, info["learners"][name], f"{weights} ({name})")
        stream.seek(info["epoch"], info["index"])
        step = int(info["step"])
        if self.comm.rank == 0:
            self._truncate_metrics(step)
        _barrier(self.comm)
        return step

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines a killed run wrote after its last checkpoint (they are computed again)."""
        path = self.path / METRICS
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                break
        from hooked.io import atomic_write_bytes

        atomic_write_bytes(path, ("\n".join(kept) + "\n" if kept else "").encode())

    def log(self, lines: list[dict[str, Any]]) -> None:
        if self.comm.rank != 0:
            return
        from hooked.io import to_jsonable

        with open(self.path / METRICS, "a") as f:
            for line in lines:
                f.write(json.dumps(to_jsonable(line)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def checkpoint(self, step: int, learners: list[Learner], stream: StoreStream) -> None:
        if self.comm.rank == 0:
            root = self.path / CHECKPOINTS
            root.mkdir(exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".step-", dir=root))
            try:
                tensors, numbers = {}, {}
                for ln in learners:
                    t, n = ln.state()
                    tensors.update({f"{ln.spec.name}/{k}": v for k, v in t.items()})
                    numbers[ln.spec.name] = n
                write_tensors(tmp / "state.safetensors", tensors)
                info = {
                    "format": FORMAT,
                    "run_id": self.id,
                    "step": step,
                    "epoch": stream.epoch,
                    "index": stream.index,
                    "learners": numbers,
                    "sha256": file_sha256(tmp / "state.safetensors"),
                }
                write_json(tmp / "state.json", info)
                final = root / f"step-{step:08d}"
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            for old in sorted(root.glob("step-*"))[:-2]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier(self.comm)

    def finish(self, saes: dict[str, SAE]) -> None:
        if self.comm.rank == 0:
            for name, sae in saes.items():
                save_dictionary(sae, self.path / name, overwrite=True)
            info = read_json(self.path / RUN)
            info.update(finished=True, dictionaries=sorted(saes))
            write_json(self.path / RUN, info)
        _barrier(self.comm)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), json.loads(json.dumps(new.get(key)))
        if a != b:
            out.append(f"{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _barrier(comm: Comm) -> None:
    if comm.world > 1:
        from hooked import distributed

        distributed.barrier()
