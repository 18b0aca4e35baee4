"""``hooked repro lm``: the project's interventions and analyses on a real language model, offline.

Load SmolLM2-135M (or ``--model`` another LM) through TransformerLens's bridge or ``hooked.wrap``,
then run the stages:

* ``patching`` (here): batched activation patching of the residual stream, layers x positions, on a
  factual-recall prompt pair (heatmap);
* ``probes`` (here): ridge probes of Wikipedia topics on the residual stream of every layer
  (accuracy curve with a shuffled-label control);
* ``das`` (:mod:`papers.lm.das`): interchange interventions on city -> country prompts at
  residual-stream sites: full patching, DAS, PCA / difference-of-means / random subspaces;
* ``spotlight`` (:mod:`papers.lm.spotlight`): spotlight resonance of the MLP neurons and of
  the residual stream side by side, over Wikipedia text.

Extension points. Each part is a *stage*: a module with ``run(ctx: LMRun) -> dict`` (see
:mod:`papers.lm.run`), listed in :data:`STAGES`; ``--stages`` picks which run, in order. A new
analysis plugs in as one more module and one more entry in :data:`STAGES`, without touching the
loading or the other stages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from hooked.io import RunDir
from papers.lm import das, patching, probes, spotlight
from papers.lm.run import LMRun

STAGES = {"patching": patching.run, "probes": probes.run, "das": das.run, "spotlight": spotlight.run}


@dataclass
class LMRepro:
    """Real LM offline: activation patching, layer-wise probes, DAS / subspace patching, spotlight resonance.

    Args:
        model: smollm2-135m (embedded, offline), a .gguf file, a local Hugging Face folder or a hub name.
        device: torch device (cpu, cuda).
        dtype: parameter dtype (float32, bfloat16).
        backend: bridge (TransformerLens 4 TransformerBridge) or wrap (hooked.wrap of the transformers model).
        stages: comma-separated stages to run, in order (available: patching, probes, das, spotlight).
        chunk: activation patches per forward pass.
        per_topic: Wikipedia summaries per topic for the probes (4 topics).
        probe_tokens: tokens of each summary fed to the model.
        das_sites: interchange-intervention sites POSITION:LAYER (position subject or last; the residual
            stream entering LAYER), comma-separated.
        das_ranks: subspace ranks k for DAS and the fixed bases, comma-separated.
        das_steps: DAS training steps per site and rank.
        das_lr: DAS learning rate (AdamW, no weight decay).
        das_batch: training prompts per DAS step (each paired with another of the batch).
        das_partners: sources per held-out base prompt.
        spotlight_layers: blocks whose MLP neurons and residual stream are compared, comma-separated.
        spotlight_texts: Wikipedia summaries streamed through the model.
        spotlight_tokens: tokens of each summary (every token is a sample).
        spotlight_planes: random planes of basis-vector pairs counted per hook.
        spotlight_null: random rotations of the basis for the verdict.
        spotlight_epsilon: the paper-scale spotlight cone (cosine of its half angle).
        spotlight_scale: the dimension-scaled cone is SCALE * sqrt(2 / d).
        quick: small sets and few steps in every stage (a smoke test).
        seed: data sampling and fold seed.
    """

    model: str = "smollm2-135m"
    device: str = "cpu"
    dtype: str = "float32"
    backend: Literal["bridge", "wrap"] = "bridge"
    stages: str = "patching,probes,das,spotlight"
    chunk: int = 64
    per_topic: int = 60
    probe_tokens: int = 24
    das_sites: str = "subject:12,last:26"
    das_ranks: str = "8"
    das_steps: int = 100
    das_lr: float = 1e-2
    das_batch: int = 32
    das_partners: int = 3
    spotlight_layers: str = "2,14,26"
    spotlight_texts: int = 64
    spotlight_tokens: int = 32
    spotlight_planes: int = 2000
    spotlight_null: int = 8
    spotlight_epsilon: float = 0.9
    spotlight_scale: float = 2.0
    quick: bool = False
    seed: int = 0

    @staticmethod
    def report_figures(folder: Any) -> dict:
        """Interactive figures of report.html (hooked.views.report)."""
        from papers.lm.views import report_figures

        return report_figures(folder)

    def __call__(self, run_dir: RunDir) -> dict:
        from hooked import lm as lm_module

        names = [s.strip() for s in self.stages.split(",") if s.strip()]
        unknown = [s for s in names if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(STAGES)}")
        started = time.perf_counter()
        net = lm_module.load(self.model, device=self.device, dtype=self.dtype, backend=self.backend)
        load_s = time.perf_counter() - started
        ctx = LMRun(net, run_dir, self, quick=self.quick)
        ctx.log(
            f"loaded {self.model} ({self.backend}, {self.device}, {self.dtype}) in {load_s:.1f} s: "
            f"{len(net.hook_dict)} hook points"
        )
        results: dict[str, Any] = {"model": self.model, "backend": self.backend, "load_seconds": load_s}
        for name in names:
            t = time.perf_counter()
            results[name] = STAGES[name](ctx)
            results[name]["seconds"] = time.perf_counter() - t
            ctx.log(f"[{name}: {results[name]['seconds']:.1f} s]")
        return results
