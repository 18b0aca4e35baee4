"""The project's methods on a real language model, offline: ``hooked repro lm``.

SmolLM2-135M (or any causal LM ``hooked.lm.load`` reads) through TransformerLens's bridge or
``hooked.wrap``; one module per stage (:mod:`.patching`, :mod:`.probes`, :mod:`.das`,
:mod:`.spotlight`), each ``run(ctx) -> dict`` on the shared context of :mod:`.run`; their data
(:mod:`.facts`: hand-written city -> country prompts; :mod:`.wiki_text`: Wikipedia summaries by
topic) and the experiments they run: clean -> corrupt residual patching of prompt pairs
(:mod:`.prompt_patching`), the interchange interventions (:mod:`.subspace`), MLP neurons against
the residual stream under spotlight resonance (:mod:`.mlp_spotlight`). The method:
``docs/methods/lm.md``.
"""
