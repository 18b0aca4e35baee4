"""Direct logit attribution against TransformerLens's own bridge: after
``enable_compatibility_mode()`` (norms folded into the weights) TransformerLens's
``apply_ln_to_stack`` divides by the scale only; hooked's applies the norm's gain read from the
model, so ``wrap`` (never processed) and the processed bridges answer the same."""

from __future__ import annotations

import warnings

import torch

from hooked import lm
from tests.lm.tutorials.runner import reference_bridge


def test_logit_lens_attribution_equals_transformer_lens_in_compatibility_mode(tiny_folder, tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference_bridge(str(tiny_folder))
        ref.enable_compatibility_mode()
        bridge = lm.load(tiny_folder, backend="bridge")
        bridge.enable_compatibility_mode()
    wrap = tiny["wrap"]
    tokens = wrap.to_tokens(["the cat sat on the mat", "a dog ran in the city"])
    stacks = {}
    for name, model in (("ref", ref), ("bridge", bridge), ("wrap", wrap)):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
            acc = cache.accumulated_resid(-1, incl_mid=True, pos_slice=-1)
            direction = model.W_U[:, 5] - model.W_U[:, 7]  # centred on the processed ones: same diff
            stacks[name] = cache.apply_ln_to_stack(acc, -1, pos_slice=-1) @ direction
    torch.testing.assert_close(stacks["bridge"], stacks["ref"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stacks["wrap"], stacks["ref"], atol=1e-4, rtol=1e-4)
