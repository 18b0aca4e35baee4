"""How good a dictionary is on a language model, and what each feature does: :func:`evaluate`
(``hooked sae eval`` on the command line). The one module of :mod:`hooked.sae` that uses
:mod:`hooked.lm`.

On held-out texts, batch by batch (never more than one batch of activations in memory):

* **reconstruction**: explained variance ``1 - sum |y - y^|^2 / sum |y - mean y|^2`` over real
  tokens (``y`` the activation the dictionary writes back, ``y^`` its output without the error
  term), mean squared error, L0 (active features per token), dead features (never active on
  these tokens) and dense ones (active on more than 10% of them);
* **loss recovered** ``(CE_zero - CE_spliced) / (CE_zero - CE_clean)``: next-token cross-entropy
  of the clean model, of the model with the dictionary spliced in without the error term, and of
  the model with the activation set to zero at that hook;
* **per feature**: density, largest activation, a histogram of its non-zero activations, its
  top-activating contexts (tokens around the maximum, with the feature's activation at each),
  and for dictionaries that write the residual stream the tokens its decoder row promotes and
  suppresses (``W_dec[i] @ W_U``, no final norm).

:func:`write_features` writes the per-feature part as ``features.json`` in the format
``hooked.sae.features/1`` that the HTML feature pages read (non-finite numbers as ``null``).

Memory: one batch of activations at a time, the top contexts (``width x top_contexts`` windows)
and, for exact histograms, every non-zero activation seen (``tokens x L0`` pairs of a feature
index and a value: about 26 MB for 100k tokens at L0 = 32).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hooked import lm
from hooked.io import atomic_write_bytes
from hooked.sae.dictionary import SAE
from hooked.sae.splice import spliced

FEATURES_FORMAT = "hooked.sae.features/1"


class _TopContexts:
    """The ``n`` highest activations of each feature seen so far, with a window of tokens and of
    that feature's activations around each (kept as tensors; merged batch by batch)."""

    def __init__(self, width: int, n: int, before: int, after: int):
        self.n, self.before, self.after = n, before, after
        span = before + after + 1
        self.values = torch.full((width, n), -math.inf)
        self.tokens = torch.zeros(width, n, span, dtype=torch.long)
        self.acts = torch.zeros(width, n, span)
        self.valid = torch.zeros(width, n, span, dtype=torch.bool)

    def add(self, acts: Tensor, ids: Tensor, mask: Tensor) -> None:
        """``acts [B, T, W]`` (0 at padding), ``ids [B, T]``, ``mask [B, T]``."""
        B, T, W = acts.shape
        flat = acts.masked_fill(~mask[..., None], -math.inf).reshape(B * T, W)
        take = min(self.n, B * T)
        vals, where = flat.T.topk(take, dim=1)  # [W, take]
        rows, cols = where // T, where % T
        offs = torch.arange(-self.before, self.after + 1)
        pos = cols[..., None] + offs  # [W, take, span]
        inside = (pos >= 0) & (pos < T)
        pos_c = pos.clamp(0, T - 1)
        r = rows[..., None].expand_as(pos_c)
        ok = inside & mask[r, pos_c]
        feat = torch.arange(W)[:, None, None].expand_as(pos_c)
        win_acts = torch.where(ok, acts[r, pos_c, feat], 0.0)
        win_ids = torch.where(ok, ids[r, pos_c], 0)
        values = torch.cat([self.values, vals], dim=1)
        best = values.topk(self.n, dim=1).indices  # [W, n]
        gather = best[..., None].expand(-1, -1, offs.numel())
        self.values = values.gather(1, best)
        self.tokens = torch.cat([self.tokens, win_ids], 1).gather(1, gather)
        self.acts = torch.cat([self.acts, win_acts], 1).gather(1, gather)
        self.valid = torch.cat([self.valid, ok], 1).gather(1, gather)


def _ce(logits: Tensor, ids: Tensor, mask: Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy over pairs of real tokens, and how many."""
    pair = (mask[:, :-1] & mask[:, 1:]).reshape(-1)
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).reshape(-1, logits.shape[-1])
    nll = -lp.gather(1, ids[:, 1:].reshape(-1, 1)).squeeze(1)
    return float(nll[pair].sum()), int(pair.sum())


def _batches(
    model: Any, texts: Sequence[str], batch_size: int, max_length: int
) -> Iterable[dict[str, Tensor]]:
    for i in range(0, len(texts), batch_size):
        yield lm.tokenize(model, list(texts[i : i + batch_size]), padding_side="right", max_length=max_length)


def evaluate(
    model: Any,
    sae: SAE,
    texts: Sequence[str],
    *,
    hook: str | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    top_contexts: int = 10,
    context: tuple[int, int] = (10, 3),
    promoted: int = 10,
    bins: int = 20,
    model_name: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``sae`` spliced into the language model ``model`` on ``texts``.

    Args:
        model: a language model from :func:`hooked.lm.load` (``bridge`` or ``wrap``).
        sae: the dictionary; it reads ``hook`` (default ``sae.hook``) and writes there (a
            transcoder: reads ``hook``, writes ``sae.hook_out``).
        texts: held-out texts (each cut to ``max_length`` tokens).
        top_contexts: contexts kept per feature; ``context``: tokens before and after the maximum.
        promoted: tokens listed as promoted and as suppressed per feature (0: none).
        bins: histogram bins of each feature's non-zero activations.
        model_name: the model's name in the result (default: its config's name or class).
    Returns:
        ``{"summary": {...}, "features": features.json's object}``.
    """
    if not isinstance(sae, SAE):
        raise TypeError(f"evaluate needs a hooked.sae.SAE or Transcoder, got {type(sae).__name__}")
    hook = hook or sae.hook
    if hook is None:
        raise ValueError("the dictionary does not say which hook it reads: pass hook=")
    write = sae.hook_out if sae.is_transcoder else hook
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("evaluate: no texts (every one is empty)")
    W = sae.width
    tops = _TopContexts(W, top_contexts, *context)
    fired = torch.zeros(W, dtype=torch.long)
    biggest = torch.zeros(W)
    nonzero_f: list[Tensor] = []
    nonzero_v: list[Tensor] = []
    sums = dict(sq_err=0.0, y_sq=0.0, tokens=0, active=0.0)
    y_sum = torch.zeros(sae.d_out, dtype=torch.float64)
    ce = {"clean": [0.0, 0], "spliced": [0.0, 0], "zero": [0.0, 0]}

    def zero(act: Tensor, hook: Any) -> Tensor:
        return torch.zeros_like(act)

    batches: Iterable[dict[str, Tensor]] = _batches(model, texts, batch_size, max_length)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(len(texts) / batch_size), desc="sae eval", leave=False)
    with torch.no_grad():
        for batch in batches:
            ids, mask = batch["input_ids"], batch["attention_mask"].bool()
            out, cache = model.run_with_cache(**batch, names_filter=list(dict.fromkeys([hook, write])))
            x, y = cache[hook].to(sae.dtype), cache[write].to(sae.dtype)
            acts = sae.encode(x)
            recon = sae.decode(acts, x) if sae.is_transcoder else sae(x)
            real = mask.reshape(-1)
            a = acts.reshape(-1, W)[real].float().cpu()
            yr = y.reshape(-1, sae.d_out)[real].double().cpu()
            err = (yr - recon.reshape(-1, sae.d_out)[real].double().cpu()).pow(2).sum()
            sums["sq_err"] += float(err)
            sums["y_sq"] += float(yr.pow(2).sum())
            sums["tokens"] += int(real.sum())
            y_sum += yr.sum(0)
            on = a > 0
            sums["active"] += float(on.sum())
            fired += on.sum(0)
            biggest = torch.maximum(biggest, a.max(0).values if len(a) else biggest)
            f_idx, t_idx = on.T.nonzero(as_tuple=True)
            nonzero_f.append(f_idx.int())
            nonzero_v.append(a[t_idx, f_idx])
            tops.add(acts.float().cpu().masked_fill(~mask[..., None], 0.0), ids.cpu(), mask.cpu())
            _add_ce(ce["clean"], lm.logits_of(out), ids, mask)
            with spliced(model, {hook: sae}, error_term=False):
                _add_ce(ce["spliced"], lm.logits_of(model(**batch)), ids, mask)
            _add_ce(
                ce["zero"], lm.logits_of(model.run_with_hooks(**batch, fwd_hooks=[(write, zero)])), ids, mask
            )
    n = sums["tokens"]
    variance = sums["y_sq"] - float(y_sum.pow(2).sum()) / n
    density = fired.double() / n
    mean_ce = {k: v[0] / v[1] if v[1] else math.nan for k, v in ce.items()}
    gap = mean_ce["zero"] - mean_ce["clean"]
    summary = {
        "hook": hook,
        "hook_out": write if sae.is_transcoder else None,
        "kind": sae.kind,
        "width": W,
        "tokens": n,
        "texts": len(texts),
        "explained_variance": 1 - sums["sq_err"] / variance if variance > 0 else math.nan,
        "mse": sums["sq_err"] / (n * sae.d_out),
        "l0": sums["active"] / n,
        "dead_fraction": float((fired == 0).double().mean()),
        "dense_fraction": float((density > 0.1).double().mean()),
        "ce_clean": mean_ce["clean"],
        "ce_spliced": mean_ce["spliced"],
        "ce_zero_ablation": mean_ce["zero"],
        "loss_recovered": (mean_ce["zero"] - mean_ce["spliced"]) / gap if gap else math.nan,
    }
    feats = _features(
        model, sae, tops, density, biggest, torch.cat(nonzero_f), torch.cat(nonzero_v), bins, promoted
    )
    features = {
        "format": FEATURES_FORMAT,
        "hook": hook,
        "model": model_name or _model_name(model),
        "n_tokens": n,
        "features": feats,
    }
    return {"summary": summary, "features": features}


def _model_name(model: Any) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(getattr(model, "cfg", None), "model_name", None)
    return str(name) if name else type(model).__name__


def _add_ce(acc: list, logits: Tensor, ids: Tensor, mask: Tensor) -> None:
    total, count = _ce(logits, ids, mask)
    acc[0] += total
    acc[1] += count


def _features(
    model: Any,
    sae: SAE,
    tops: _TopContexts,
    density: Tensor,
    biggest: Tensor,
    f_idx: Tensor,
    values: Tensor,
    bins: int,
    promoted: int,
) -> list[dict[str, Any]]:
    """One entry per feature that was active (in index order)."""
    W = sae.width
    alive = (density > 0).nonzero().reshape(-1).tolist()
    # histograms of non-zero activations on [0, max] per feature, all at once
    top = biggest[f_idx.long()].clamp_min(1e-30)
    which = (values / top * bins).long().clamp(0, bins - 1)
    counts = torch.bincount(f_idx.long() * bins + which, minlength=W * bins).reshape(W, bins)
    up, down = _token_effects(model, sae, promoted)
    decode = _token_text(model)
    out = []
    for i in alive:
        contexts = []
        for j in range(tops.n):
            v = float(tops.values[i, j])
            if not math.isfinite(v):
                break
            keep = tops.valid[i, j]
            toks = tops.tokens[i, j][keep].tolist()
            acts = tops.acts[i, j][keep].tolist()
            contexts.append(
                {
                    "tokens": [decode(t) for t in toks],
                    "activations": acts,
                    "max_position": int(tops.before - int((~keep[: tops.before]).sum())),
                }
            )
        edges = torch.linspace(0, float(biggest[i]), bins + 1).tolist()
        entry = {
            "index": i,
            "density": float(density[i]),
            "max_activation": float(biggest[i]),
            "histogram": {"edges": edges, "counts": counts[i].tolist()},
            "top_contexts": contexts,
        }
        if up is not None:
            entry["promoted"] = [{"token": decode(t), "logit": v} for t, v in up[i]]
            entry["suppressed"] = [{"token": decode(t), "logit": v} for t, v in down[i]]
        out.append(entry)
    return out


def _token_effects(model: Any, sae: SAE, k: int) -> tuple[Any, Any]:
    """Per feature, the ``k`` tokens ``W_dec[i] @ W_U`` raises most and lowers most (``None`` when
    the dictionary does not write the residual stream, or ``k`` is 0)."""
    if k <= 0:
        return None, None
    up, down = [], []
    with torch.no_grad():
        for chunk in sae.W_dec.detach().split(256):
            try:
                logits = lm.unembed(model, chunk.to(_param_dtype(model)), apply_ln=False).float()
            except (ValueError, TypeError, RuntimeError):
                return None, None  # not the residual stream's width
            hi = logits.topk(k, dim=1)
            lo = logits.topk(k, dim=1, largest=False)
            up += [list(zip(i.tolist(), v.tolist())) for i, v in zip(hi.indices, hi.values)]
            down += [list(zip(i.tolist(), v.tolist())) for i, v in zip(lo.indices, lo.values)]
    return up, down


def _param_dtype(model: Any) -> torch.dtype:
    try:
        return next(p.dtype for p in model.parameters() if p.is_floating_point())
    except (StopIteration, AttributeError):
        return torch.float32


def _token_text(model: Any) -> Any:
    tokenizer = model.tokenizer
    seen: dict[int, str] = {}

    def text(i: int) -> str:
        if i not in seen:
            seen[i] = tokenizer.decode([i])
        return seen[i]

    return text


def _finite(obj: Any) -> Any:
    """JSON has no NaN: non-finite floats become ``None`` (readers show them as missing)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_features(features: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a ``features.json`` (``hooked.sae.features/1``) atomically, non-finite numbers as null."""
    import json

    text = json.dumps(_finite(features), allow_nan=False, ensure_ascii=False)
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_summary(summary: Mapping[str, Any], path: str | os.PathLike) -> Path:
    import json

    return atomic_write_bytes(path, (json.dumps(_finite(summary), indent=2, allow_nan=False) + "\n").encode())
