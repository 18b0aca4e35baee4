"""Zoo training: M LSTMs 2 x 32 trained as one stacked computation vs one model at a time.

Each row times one full AdamW training step of every member and reports seconds per
model-step (the inverse of model-steps per second) for:

* ``stacked``: :func:`papers.weight_space.zoo.train_step` on all M members at once (the zoo's way);
* ``one at a time, nn.LSTM``: M separate ``ZooLSTM`` models (cuDNN / oneDNN fused ``nn.LSTM``),
  each with its own AdamW, stepped in a Python loop: the baseline;
* ``one at a time, functional``: the same stacked code called with M = 1, M times.

Sizes: the formal-language zoo (6 symbols, batch 16, strings of max_n = 4: 23 steps, or the
paper's max_n = 9: 43 steps) and the digit zoo (8 pixels per row, 9 steps, batch 32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import Context, Row
from benchmarks.timing import time_interleaved
from papers.weight_space.zoo import LSTMLayout, init_params, load_member, train_step
from papers.weight_space.zoo.train import make_optimizer


def _loss(logits, y):
    return F.cross_entropy(logits.flatten(1, 2).transpose(1, 2), y.flatten(1), reduction="none").mean(1)


def run(ctx: Context) -> list[Row]:
    rows = []
    cases = ctx.pick(
        [("languages, short strings", 6, 6, 8, 12, 8)],
        [
            ("languages, max_n 4", 6, 6, 16, 23, 64),
            ("languages, max_n 9 (paper)", 6, 6, 32, 43, 64),
            ("digits, rows", 8, 10, 32, 9, 64),
        ],
    )
    for label, d_in, d_out, batch, steps, members in cases:
        dev = ctx.device
        layout = LSTMLayout(d_in, d_out, 32, 2)
        gen = torch.Generator().manual_seed(0)
        init = init_params(members, layout, gen)
        x = torch.randn(members, batch, steps, d_in, generator=gen).to(dev)
        y = torch.randint(d_out, (members, batch, steps), generator=gen).to(dev)
        stacked = {k: v.clone().to(dev).requires_grad_() for k, v in init.items()}
        opt = make_optimizer(stacked, 1e-3)
        models = [load_member(init, m, layout).to(dev) for m in range(members)]
        opts = [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0) for m in models]
        singles = [
            {k: v[m : m + 1].clone().to(dev).requires_grad_() for k, v in init.items()}
            for m in range(members)
        ]
        single_opts = [make_optimizer(p, 1e-3) for p in singles]

        def stacked_step():
            train_step(stacked, opt, x, y, _loss, 1e-3)

        def loop_nn_lstm():
            for m, (model, o) in enumerate(zip(models, opts)):
                loss = F.cross_entropy(model(x[m]).flatten(0, 1), y[m].flatten())
                o.zero_grad(set_to_none=True)
                loss.backward()
                o.step()

        def loop_functional():
            for m, (p, o) in enumerate(zip(singles, single_opts)):
                train_step(p, o, x[m : m + 1], y[m : m + 1], _loss, 1e-3)

        t = time_interleaved(
            {"stacked": stacked_step, "nn.LSTM": loop_nn_lstm, "functional": loop_functional},
            device=dev,
            rounds=ctx.pick(2, 3),
            repeats=ctx.pick(3, 5),
            inner=1,
            warmup=1,
        )
        sizes = dict(members=members, batch=batch, steps=steps, d_in=d_in, hidden=32, layers=2)
        base = t["nn.LSTM"].median_s / members
        for key, name in (
            ("stacked", "stacked (all members, one computation)"),
            ("nn.LSTM", "one at a time, nn.LSTM + AdamW each"),
            ("functional", "one at a time, stacked code with M=1"),
        ):
            per = t[key].median_s / members
            rows.append(
                Row(
                    f"zoo training step, {label}",
                    name,
                    per,
                    "one at a time, nn.LSTM + AdamW each",
                    base,
                    sizes,
                    unit="s/model-step",
                    note=f"{1 / per:.0f} model-steps/s",
                )
            )
    return rows
