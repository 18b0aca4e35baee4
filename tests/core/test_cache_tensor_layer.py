"""``cache[name, layer]`` with the layer a 0-d integer tensor, as TransformerLens takes it (its
Exploratory Analysis demo indexes ``cache["attn", layer]`` with ``topk(...).indices // n_heads``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.toys import MLPStack


def test_a_layer_may_be_a_zero_dimensional_integer_tensor():
    model = MLPStack(d=4, n_blocks=2)
    _, cache = model.run_with_cache(torch.randn(2, 4))
    want = cache["resid_pre", 1]
    for layer in (torch.tensor(1), torch.tensor([3, 5]).max() // 5 + 0, np.int64(1)):
        assert cache["resid_pre", layer] is want
    for layer in (torch.tensor(1.0), torch.tensor(True), torch.tensor([1])):
        with pytest.raises(KeyError, match="integer"):
            cache["resid_pre", layer]
