"""``hooked repro lm``: the project's interventions and analyses on a real language model, offline.

Load SmolLM2-135M (or ``--model`` another LM) through TransformerLens's bridge or ``hooked.wrap``,
then run the stages:

* ``patching`` (here): batched activation patching of the residual stream, layers x positions, on a
  factual-recall prompt pair (heatmap);
* ``probes`` (here): ridge probes of Wikipedia topics on the residual stream of every layer
  (accuracy curve with a shuffled-label control);
* ``das`` (:mod:`hooked.repro.lm_das`): interchange interventions on city -> country prompts at
  residual-stream sites: full patching, DAS, PCA / difference-of-means / random subspaces;
* ``spotlight`` (:mod:`hooked.repro.lm_spotlight`): spotlight resonance of the MLP neurons and of
  the residual stream side by side, over Wikipedia text.

Extension points. Each part is a *stage*: ``fn(ctx: LMRun) -> dict`` registered with
``@stage("name")``; ``--stages`` picks which run, in order. A new analysis plugs in as a module
that registers its stage and is imported at the end of this one, without touching the loading
or the other stages::

    @stage("srm")
    def srm(ctx: LMRun) -> dict:
        acts = ctx.activations(...)            # any hook of ctx.model, via the hook protocol
        ctx.run_dir.figure("srm.png", fig)
        return {...}
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hooked.io import RunDir
from hooked.registry import register_repro

STAGES: dict[str, Callable[[LMRun], dict]] = {}


def stage(name: str) -> Callable[[Callable[[LMRun], dict]], Callable[[LMRun], dict]]:
    """Register ``fn(ctx) -> dict`` as a stage of ``hooked repro lm``."""

    def add(fn: Callable[[LMRun], dict]) -> Callable[[LMRun], dict]:
        STAGES[name] = fn
        return fn

    return add


@dataclass
class LMRun:
    """What every stage gets: the loaded model, the run folder and the command's options."""

    model: Any
    run_dir: RunDir
    options: dict
    quick: bool = False
    notes: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


@register_repro("lm")
def lm(
    run_dir: RunDir,
    *,
    model: str = "smollm2-135m",
    device: str = "cpu",
    dtype: str = "float32",
    backend: Literal["bridge", "wrap"] = "bridge",
    stages: str = "patching,probes,das,spotlight",
    chunk: int = 64,
    per_topic: int = 60,
    probe_tokens: int = 24,
    das_sites: str = "subject:12,last:26",
    das_ranks: str = "8",
    das_steps: int = 100,
    das_lr: float = 1e-2,
    das_batch: int = 32,
    das_partners: int = 3,
    spotlight_layers: str = "2,14,26",
    spotlight_texts: int = 64,
    spotlight_tokens: int = 32,
    spotlight_planes: int = 2000,
    spotlight_null: int = 8,
    spotlight_epsilon: float = 0.9,
    spotlight_scale: float = 2.0,
    quick: bool = False,
    seed: int = 0,
) -> dict:
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
        das_sites: interchange-intervention sites POSITION:LAYER (position subject or last; the residual stream entering LAYER), comma-separated.
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
    options = {k: v for k, v in locals().items() if k != "run_dir"}  # every option, for the stages
    from hooked import lm as lm_module

    names = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(STAGES)}")
    started = time.perf_counter()
    net = lm_module.load(model, device=device, dtype=dtype, backend=backend)
    load_s = time.perf_counter() - started
    ctx = LMRun(net, run_dir, options, quick=quick)
    ctx.log(f"loaded {model} ({backend}, {device}, {dtype}) in {load_s:.1f} s: {len(net.hook_dict)} hook points")
    results: dict[str, Any] = {"model": model, "backend": backend, "load_seconds": load_s}
    for name in names:
        t = time.perf_counter()
        results[name] = STAGES[name](ctx)
        results[name]["seconds"] = time.perf_counter() - t
        ctx.log(f"[{name}: {results[name]['seconds']:.1f} s]")
    return results


@stage("patching")
def patching_stage(ctx: LMRun) -> dict:
    """Residual-stream patching, clean -> corrupt, every layer x position, in batched forwards."""
    from analyses.lm_patching import EIFFEL, plot_patching, prompt_pair_patching

    result = prompt_pair_patching(ctx.model, EIFFEL, chunk=ctx.options["chunk"], progress=True)
    restored = result.restored
    best = divmod(int(restored.argmax()), restored.shape[1])
    ctx.run_dir.json("patching.json", result)
    ctx.run_dir.figure("patching.png", plot_patching(result))
    last = restored[:, -1]
    handover = next((result.labels[i] for i, v in enumerate(last.tolist()) if v > 0.5), None)
    summary = {
        "prompt_pair": vars(EIFFEL),
        "clean_logit_diff": result.clean,
        "corrupt_logit_diff": result.corrupt,
        "max_restored": float(restored.max()),
        "max_restored_at": {"residual": result.labels[best[0]], "token": result.clean_tokens[best[1]]},
        "first_layer_where_last_position_restores_over_half": handover,
        "patches": int(restored.numel()),
    }
    ctx.log(
        f"patching: clean LD {result.clean:.2f}, corrupt LD {result.corrupt:.2f}; largest restoration "
        f"{summary['max_restored']:.2f} at {summary['max_restored_at']}; the last position restores > 0.5 "
        f"from {handover} on"
    )
    return summary


@stage("probes")
def probes_stage(ctx: LMRun) -> dict:
    """Ridge probes of Wikipedia topic on every layer's residual stream (last token, mean-pooled)."""
    from analyses.probes import layer_probes, plot_layer_probes
    from analyses.wiki_text import wiki_topics
    from hooked import lm as lm_module

    per_topic = 20 if ctx.quick else ctx.options["per_topic"]
    texts, labels, topics = wiki_topics(per_topic=per_topic, seed=ctx.options["seed"])
    tokens = lm_module.to_tokens(ctx.model, texts, length=ctx.options["probe_tokens"])
    hooks = lm_module.residual_hooks(ctx.model)
    result = layer_probes(ctx.model, tokens, labels, hooks, lm_module.residual_labels(len(hooks) - 1),
                          seed=ctx.options["seed"], progress=True)
    result.info["topics"] = topics
    ctx.run_dir.json("probes.json", result)
    ctx.run_dir.figure("probes.png", plot_layer_probes(result, f"Wikipedia topic ({len(topics)} classes) from the residual stream"))
    summary: dict[str, Any] = {"topics": topics, "n_texts": len(texts), "tokens_per_text": tokens.shape[1]}
    for name, r in result.results.items():
        acc = r.accuracy
        summary[name] = {
            "first_layer": float(acc[0]),
            "best": float(acc.max()),
            "best_at": result.labels[int(acc.argmax())],
            "last_layer": float(acc[-1]),
            "chance": r.chance,
        }
        ctx.log(f"probes [{name}]: {acc[0]:.2f} at {result.labels[0]}, best {acc.max():.2f} at "
                f"{result.labels[int(acc.argmax())]}, {acc[-1]:.2f} at {result.labels[-1]} (chance {r.chance:.2f})")
    return summary


def int_list(text: str, option: str) -> list[int]:
    """``"2,14,26"`` -> ``[2, 14, 26]``, with an error naming the option."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{option.replace('_', '-')}: expected comma-separated integers, got {text!r}") from None


# the other stages register themselves on import
from hooked.repro import lm_das, lm_spotlight  # noqa: E402, F401
