"""``hooked repro onion``: onion representations in small GRUs (Csordás et al. 2024;
``docs/methods/onion.md``).

For each state size N (and seed): train the repeat-task model (``RepeatModel``: one GRU, or LSTM
with ``--cell lstm``, as encoder and decoder), then, with the model frozen, train and evaluate at
its ``hook_memory`` (the final encoder state):

* ``unigram``: the linear autosegment intervention with K = 9 variables (one per position),
  length-9 sequences;
* ``bigram``: the same with K = 8 variables (pairs of neighbouring positions), length 9;
* ``das``: a plain DAS intervention in the unigram regime, variable k = a fixed block of N/9
  rotated coordinates (no learned assignment: it converges in far fewer steps than autosegment);
* ``onion``: the magnitude intervention h~ + s(p) (tanh E[old] - tanh E[new]), lengths 2..9;

and, as read-outs without intervention, linear / MLP / onion probes of the stored tokens.
Intervention accuracy = whole-sequence exact match of the edited run with the original sequence,
on held-out sequences. The paper's claim (no table published): the smallest GRUs (N = 48, 64) store
the sequence by magnitude (linear interventions fail, the onion one succeeds); large GRUs
(N >= 512) store it linearly (linear interventions succeed).

Defaults are sized for a shared 2-core CPU (3 small sizes, far fewer steps than the paper's 40k
model / 60k intervention steps; autosegment in particular needs ~20k steps even on a perfectly
linear code, see the README); ``--sizes 48,64,128,256,512,1024 --steps 40000
--intervention-steps 60000 --device cuda`` is the paper's sweep. Every (size, seed) writes its own
JSON and checkpoint into the run folder and is skipped when present, so a sweep can be resumed,
or split over processes that share ``--out`` and collected by a last run over all sizes; a model
checkpoint with fewer than ``--steps`` steps is trained on (with a fresh AdamW state).

Only work done with the same settings is reused (:func:`papers.onion.training.plan_resume`): a
model with the same cell, size, seed, decoder (``no_input``), batch size and ``n_train``; an
intervention or probe with the same step count on that model. Before any work starts, a run
folder holding pieces made with other settings is refused, naming each difference, unless
``--overwrite`` (then those pieces are redone); what is reused is printed.

``torchrun --nproc_per_node=N -m hooked repro onion --out DIR`` shares the (size, seed) runs over N
ranks (:func:`hooked.distributed.sweep`; each run's global RNG is seeded from its index, so the
table is the same as in one process).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from hooked import distributed
from papers.onion.report import plot_table, size_table, verdict_text
from papers.onion.training import METHODS, prepare_resume, run_one


def onion(
    run_dir: Any,
    *,
    cell: Literal["gru", "lstm"] = "gru",
    sizes: tuple[int, ...] = (48, 64, 128),
    seeds: int = 1,
    methods: tuple[str, ...] = METHODS,
    steps: int = 6000,
    intervention_steps: int = 2000,
    probe_steps: int = 2000,
    batch_size: int = 256,
    no_input: bool = False,
    n_train: int = 1_000_000,
    probes: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Onion representations: linear (unigram, bigram) vs onion interventions over GRU sizes.

    Args:
        cell: recurrent cell of the repeat model (gru as in the paper, or lstm).
        sizes: state sizes N to train (the paper: 48,64,128,256,512,1024).
        seeds: models per size (the paper: 5).
        methods: interventions to train: unigram, bigram (autosegment, as in the paper), das (unigram regime,
            fixed blocks of N/9 rotated coordinates per position), onion.
        steps: training steps of each repeat model (the paper: 40000); a checkpoint in the run folder with
            fewer steps is trained on, and 0 reuses the checkpoints as they are.
        intervention_steps: training steps of each intervention (the paper: 60000).
        probe_steps: training steps of each probe.
        batch_size: batch size of every training loop (the paper: 256).
        no_input: decoder reads [SOS, NOI, ...] instead of the previous tokens.
        n_train: distinct training sequences in the pool.
        probes: also fit linear, MLP and onion probes of the stored tokens.
        device: torch device (cpu, cuda).
        progress: show progress bars.
    """
    import torch

    from hooked.checks import non_negative, positive, torch_device
    from hooked.errors import OptionError
    from papers.onion.repeat import make_repeat_data, sample_unique

    started = time.perf_counter()
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise OptionError(
            "methods", f"has unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}"
        )
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise OptionError("sizes", f"must be one or more positive integers, got {list(sizes)}")
    positive(seeds=seeds, intervention_steps=intervention_steps, probe_steps=probe_steps, n_train=n_train)
    positive(batch_size=batch_size)
    non_negative(steps=steps)
    if batch_size % 2 and {"unigram", "das"} & set(methods):
        raise OptionError(
            "batch_size", f"must be even for the unigram and das interventions, got {batch_size}"
        )
    if "das" in methods and min(sizes) < 9:
        raise OptionError("sizes", f"must be >= 9 for das (9 variables, one per position), got {min(sizes)}")
    torch_device(device)
    settings = dict(
        cell=cell,
        methods=tuple(methods),
        steps=steps,
        intervention_steps=intervention_steps,
        probe_steps=probe_steps,
        batch_size=batch_size,
        no_input=no_input,
        n_train=n_train,
        probes=probes,
    )
    run_dir = distributed.shared_run_dir(run_dir)
    device = distributed.local_device(device)
    progress = progress and distributed.is_main()
    if distributed.is_main():  # before any work: refuse, or redo, other settings' work
        prepare_resume(run_dir, sizes, seeds, settings)
    distributed.barrier()

    torch.manual_seed(0)
    data = make_repeat_data(n_train=n_train, seed=0)
    valid9 = sample_unique(5000, min_len=9, max_len=9, generator=torch.Generator().manual_seed(1234))
    pool9 = sample_unique(
        200_000, min_len=9, max_len=9, exclude=valid9.keys(30), generator=torch.Generator().manual_seed(99)
    )

    def one(item: tuple[int, int]) -> dict:
        size, seed = item
        row = run_one(run_dir, size, seed, data, valid9, pool9, device=device, progress=progress, **settings)
        for key in ("interventions", "intervention_details"):  # only what this run asked for
            row[key] = {m: v for m, v in row.get(key, {}).items() if m in methods}
        if not probes:
            row.pop("probes", None)
        return row

    # every (size, seed) is independent: under torchrun each rank trains its share
    items = [(size, seed) for size in sizes for seed in range(seeds)]
    rows = distributed.sweep(one, items, seed=0, gather="all")

    table = size_table(rows, sizes, probes)
    out = {
        "settings": settings,
        "sizes": list(sizes),
        "rows": rows,
        "table": table["cells"],
        "verdict": verdict_text(table),
        "seconds": time.perf_counter() - started,
    }
    if not distributed.is_main():
        return out
    print(
        f"\nrepeat task, {cell.upper()}, {'no-input' if no_input else 'autoregressive'} decoder, "
        f"{seeds} seed(s) per size"
    )
    print(table["text"])
    plot_table(run_dir, table, cell)
    print("\n" + out["verdict"])
    run_dir.json("onion.json", out)
    return out


onion.resumes = True  # `hooked repro onion --out DIR` resumes DIR (see prepare_resume)


def _report_figures(folder):
    from papers.onion.views import report_figures

    return report_figures(folder)


onion.report_figures = _report_figures  # interactive figures of report.html (hooked.views.report)
