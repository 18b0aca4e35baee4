"""The ``patching`` stage of ``hooked repro lm``: clean -> corrupt residual-stream patching, every
layer x position, in batched forwards (:func:`papers.lm.prompt_patching.prompt_pair_patching`).
Writes ``patching.json`` and ``patching.png``."""

from __future__ import annotations

from papers.lm.run import LMRun


def run(ctx: LMRun) -> dict:
    """Residual-stream patching, clean -> corrupt, every layer x position, in batched forwards."""
    from papers.lm.prompt_patching import EIFFEL, plot_patching, prompt_pair_patching

    result = prompt_pair_patching(ctx.model, EIFFEL, chunk=ctx.options.chunk, progress=True)
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
