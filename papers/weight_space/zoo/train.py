"""Training a whole zoo at once: every run is a member of one stacked computation.

The parameters of all runs are stacked on a leading axis and trained through
:func:`~papers.weight_space.zoo.lstm.stacked_lstm` with one optimizer: the loss is the sum over runs of
each run's mean loss, so every run gets exactly the gradient it would get alone, and AdamW is
elementwise, so its update is each run's own update. Weight decay may differ per run (zoo 2); it
is applied decoupled, as ``torch.optim.AdamW`` does, before the Adam step.

Snapshots (the paper: steps 0, 100, 200, 500, 1k, 2k, 5k, 10k, 20k of 20k) are taken before the
update of their step, so step 0 is the initialisation; a run with fewer steps takes them at the
same fractions of training. Each snapshot records the parameters, the return / accuracy, and
sequences with the member's log-probabilities on them (what the emulation objective imitates).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from papers.weight_space.zoo.lstm import LSTMLayout, Params, init_params, stacked_lstm
from papers.weight_space.zoo.store import Zoo

PAPER_SNAPSHOTS = (0, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000)
PAPER_LR = (0.01, 0.003, 0.0003)  # at steps 0, half, end (piecewise linear)


def snapshot_steps(steps: int, paper: Sequence[int] = PAPER_SNAPSHOTS) -> list[int]:
    """The paper's snapshot steps rescaled to ``steps`` total (distinct, sorted, last = steps)."""
    end = paper[-1]
    return sorted({min(steps, round(s * steps / end)) for s in paper})


def learning_rate(step: int, steps: int, values: Sequence[float] = PAPER_LR) -> float:
    """Piecewise linear: values[0] at 0 -> values[1] at steps/2 -> values[2] at steps."""
    half = steps / 2
    if step <= half:
        return values[0] + (values[1] - values[0]) * step / max(half, 1e-9)
    return values[1] + (values[2] - values[1]) * min(1.0, (step - half) / max(steps - half, 1e-9))


def make_optimizer(params: Mapping[str, Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay applied by :func:`train_step` (per-run decay)."""
    return torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=0.0)


def train_step(
    params: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    loss_fn,
    lr: float,
    weight_decay: Tensor | float = 0.0,
) -> Tensor:
    """One AdamW step of every member; returns the per-member losses [M].

    ``weight_decay`` is a float or [M] (one per member); the result equals
    ``torch.optim.AdamW(lr=lr, weight_decay=wd_m)`` run on member m alone.
    """
    logits, _ = stacked_lstm(params, x)
    losses = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    with torch.no_grad():
        for group in optimizer.param_groups:
            group["lr"] = lr
        wd = torch.as_tensor(weight_decay, dtype=torch.float32, device=losses.device)
        if wd.dim() == 0:
            wd = wd.expand(losses.shape[0])
        if bool((wd != 0).any()):
            for p in params.values():
                p.mul_((1 - lr * wd).view(-1, *([1] * (p.dim() - 1))))
    optimizer.step()
    return losses.detach()


def train_zoo(
    tasks,
    *,
    steps: int = 20_000,
    batch_size: int = 32,
    hidden: int = 32,
    layers: int = 2,
    weight_decay: Tensor | float = 1e-4,
    lr_values: Sequence[float] = PAPER_LR,
    snapshots: Sequence[int] | None = None,
    seed: int = 0,
    progress: bool | str = True,
) -> Zoo:
    """Train one member per run of ``tasks`` (a :class:`LanguageTasks` / :class:`DigitTasks`) together.

    Returns a :class:`Zoo` with one entry per (run, snapshot), ordered run by run.
    """
    from tqdm.auto import tqdm

    layout: LSTMLayout = tasks.layout(hidden, layers)
    runs = tasks.runs
    gen = torch.Generator().manual_seed(seed)
    eval_gen = torch.Generator().manual_seed(seed + 1)
    params: Params = {k: v.requires_grad_() for k, v in init_params(runs, layout, gen).items()}
    opt = make_optimizer(params, lr_values[0])
    wd = torch.as_tensor(weight_decay, dtype=torch.float64).expand(runs).clone()
    snaps = sorted(set(snapshots)) if snapshots is not None else snapshot_steps(steps)
    if snaps and snaps[-1] > steps:
        raise ValueError(f"train_zoo: snapshot step {snaps[-1]} is beyond steps={steps}")
    records: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(
        total=steps,
        desc=progress if isinstance(progress, str) else f"zoo {tasks.kind}",
        disable=not progress,
        leave=False,
    )
    losses = torch.full((runs,), float("nan"))
    for step in range(steps + 1):
        if step in snaps:
            with torch.no_grad():
                frozen = {k: v.detach().clone() for k, v in params.items()}
                ev = tasks.evaluate(frozen, eval_gen)
            records.append({"step": step, "params": frozen, "eval": ev, "train_loss": losses.clone()})
            bar.set_postfix(ret=f"{ev['return'].mean():.2f}")
        if step == steps:
            break
        x, y = tasks.batch(batch_size, gen)
        losses = train_step(params, opt, x, y, tasks.loss, learning_rate(step, steps, lr_values), wd)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - started
    return _assemble(
        tasks,
        layout,
        records,
        wd,
        dict(
            steps=steps,
            batch_size=batch_size,
            lr_values=list(lr_values),
            train_seed=seed,
            snapshots=snaps,
            train_seconds=seconds,
            model_steps_per_second=runs * steps / seconds if seconds else None,
            **tasks.meta(),
        ),
    )


def _assemble(tasks, layout: LSTMLayout, records: list[dict], wd: Tensor, meta: dict) -> Zoo:
    """Snapshot-major records -> run-major zoo members."""
    runs, n_snap = tasks.runs, len(records)
    order = [(r, s) for r in range(runs) for s in range(n_snap)]
    idx_r = torch.tensor([r for r, _ in order])
    idx_s = torch.tensor([s for _, s in order])

    def gather(get) -> Tensor:
        stacked = torch.stack([get(rec) for rec in records])  # [snapshots, runs, ...]
        return stacked[idx_s, idx_r]

    params = {k: gather(lambda rec, k=k: rec["params"][k]) for k in layout.shapes}
    sequences = gather(lambda rec: rec["eval"]["sequences"])
    logits = gather(lambda rec: rec["eval"]["logits"]).float()
    members = []
    for r, s in order:
        rec = records[s]
        m = {
            "run": r,
            "step": rec["step"],
            "task": tasks.task_json(r),
            "return": float(rec["eval"]["return"][r]),
        }
        for key in ("test_loss", "train_loss"):
            if key in rec["eval"]:
                m[key] = float(rec["eval"][key][r])
        loss = float(rec["train_loss"][r])
        if not math.isnan(loss):  # the last training batch's loss (none before the first step)
            m["batch_loss"] = loss
        m["weight_decay"] = float(wd[r])
        members.append(m)
    return Zoo(
        kind=tasks.kind,
        layout=layout,
        params=params,
        sequences=sequences,
        logits=logits,
        members=members,
        meta=meta,
    )


def build_zoo(
    kind: str = "formal-languages",
    *,
    runs: int = 64,
    steps: int = 20_000,
    batch_size: int = 32,
    max_n: int = 9,
    n_return: int = 1000,
    n_store: int = 100,
    read: str = "rows",
    tile: int = 2,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    progress: bool | str = True,
) -> Zoo:
    """Draw ``runs`` tasks (and, for digits, a weight decay per run) and train them all at once.

    ``kind`` is "formal-languages" (zoo 1: d_k uniform in {-3..2}, weight decay 1e-4) or "digits"
    (zoo 2: angle uniform on [0, 360), weight decay from {0, 0.001, 0.01, 0.1}). The defaults are
    the paper's settings; the CPU reproduction passes smaller ones.
    """
    from papers.weight_space.zoo.tasks import DigitTasks, LanguageTasks, random_language_tasks

    gen = torch.Generator().manual_seed(seed)
    if kind == "formal-languages":
        tasks = LanguageTasks(
            random_language_tasks(runs, gen), max_n=max_n, n_return=n_return, n_store=n_store
        )
        wd: Tensor | float = 1e-4
    elif kind == "digits":
        angles = torch.rand(runs, generator=gen) * 360.0
        wd = torch.tensor([0.0, 0.001, 0.01, 0.1], dtype=torch.float64)[
            torch.randint(4, (runs,), generator=gen)
        ]
        tasks = DigitTasks(angles, read=read, tile=tile, n_store=n_store, seed=seed)
    else:
        raise ValueError(f"build_zoo: kind must be 'formal-languages' or 'digits', got {kind!r}")
    zoo = train_zoo(
        tasks,
        steps=steps,
        batch_size=batch_size,
        hidden=hidden,
        layers=layers,
        weight_decay=wd,
        seed=seed + 1,
        progress=progress,
    )
    zoo.meta["seed"] = seed
    return zoo
