"""Text generation with hooks, on every backend of :func:`hooked.lm.load`, with a key-value cache.

``lm.generate(model, prompts, max_new_tokens, fwd_hooks=[(name, fn), ...])`` runs one forward for
the prompt, then one per new token, through the model's own forward (the ``bridge``'s or
``hooked.wrap``'s, so their hook points fire; ``hf`` takes no hooks) and returns each prompt's new
text. Greedy decoding (the default) gives the transformers model's own greedy ``generate``, token
for token, batched (left-padded) or not (tests).

Prompts: a string (a string comes back), a list of strings (run as one left-padded batch), a
tensor of ids ``[batch, pos]``, or a padded batch from :func:`hooked.lm.tokenize` (a right-padded
batch is re-padded on the left, where generation needs its padding: every row's last prompt token
is then at position -1).

**Which forward is running.** The hooks are attached once for the whole call and fire once per
forward. Pass 0 is the prompt: every hook point sees all prompt positions (``[batch, pos, ...]``).
Pass ``k >= 1`` feeds the ``k``-th new token alone, the earlier positions coming from the cache:
hook points see one position (``[batch, 1, ...]``). The last new token is never fed back, so
``max_new_tokens`` new tokens take ``max_new_tokens`` forwards. A hook function asks
:func:`generation_pass` (0, 1, ...; ``None`` outside ``generate``), or is wrapped:

* :func:`on_prompt` ``(fn)``: runs only in pass 0 (e.g. steering only the prompt);
* :func:`on_new_tokens` ``(fn)``: runs only in passes ``>= 1`` (steering only the generated
  tokens; the first new token is predicted from the prompt pass, so it is not steered).

The shape test ``act.shape[1] == 1`` is not a substitute: a one-token prompt has it too. Note that
``hook.step`` counts calls of a hook point *within one forward* (a recurrent layer's steps); it is
not the generation pass. With ``use_cache=False`` every pass runs the whole sequence again (hook
points then see all positions in every pass), which is slower and gives the same tokens; an
``on_prompt`` / ``on_new_tokens`` hook is refused there (it would edit other positions).

**Dtypes.** A hook's replacement must have the activation's dtype, on every backend (a
:class:`hooked.HookReturnError` names the hook otherwise): on a bfloat16 model cast a float32
steering vector in the hook, ``act + vector.to(act.dtype)``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hooked.checks import finite_number, flags, index_tensor, positive
from hooked.lm.backends.forward import LMForward
from hooked.lm.text.tokens import (
    batch_ids_and_mask,
    pad_id,
    tokenize,
    warn_if_padded_without_mask,
)
from hooked.protocol import mask_ends

_PASS: ContextVar[int | None] = ContextVar("hooked_lm_generation_pass", default=None)


@dataclass
class Generation:
    """What :func:`generate` made, with ``return_tokens=True``.

    Attributes:
        texts: each prompt's new text (up to, not including, its end-of-sequence token).
        tokens: ``[batch, new]`` the new token ids; after a row's end-of-sequence token, the pad id.
        lengths: ``[batch]`` new tokens per row, its end-of-sequence token included.
        prompt: the left-padded prompt batch that was run (``input_ids``, ``attention_mask``).
    """

    texts: list[str]
    tokens: Tensor
    lengths: Tensor
    prompt: dict[str, Tensor]

    @property
    def sequences(self) -> Tensor:
        """``[batch, prompt + new]``: the prompt's ids (left-padded) followed by the new ones."""
        return torch.cat([self.prompt["input_ids"], self.tokens], dim=1)


def generation_pass() -> int | None:
    """The forward :func:`generate` is running: 0 for the prompt, ``k`` for the ``k``-th new
    token; ``None`` outside ``generate``."""
    return _PASS.get()


def on_prompt(fn: Callable) -> Callable:
    """A hook function that runs ``fn`` only on the prompt (pass 0 of :func:`generate`, and in
    any forward outside ``generate``)."""
    return _only(fn, lambda p: p is None or p == 0, "on_prompt")


def on_new_tokens(fn: Callable) -> Callable:
    """A hook function that runs ``fn`` only on the generated tokens (passes ``>= 1`` of
    :func:`generate`; never outside it)."""
    return _only(fn, lambda p: p is not None and p >= 1, "on_new_tokens")


def _only(fn: Callable, when: Callable[[int | None], bool], label: str) -> Callable:
    if not callable(fn):
        raise TypeError(f"{label} needs a hook function fn(activation, hook), got {type(fn).__name__}")

    def hook(act: Any, hook: Any) -> Any:
        return fn(act, hook) if when(_PASS.get()) else None

    hook.__qualname__ = f"{label}({getattr(fn, '__qualname__', type(fn).__name__)})"
    hook._generation_passes = label  # type: ignore[attr-defined]
    return hook


def generate(
    model: Any,
    prompts: str | Sequence[str] | Tensor | dict[str, Tensor],
    max_new_tokens: int = 32,
    *,
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
    do_sample: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    bos: bool = False,
    use_cache: bool = True,
    return_tokens: bool = False,
    progress: bool = False,
) -> str | list[str] | Generation:
    """Generate up to ``max_new_tokens`` tokens after each prompt, with ``fwd_hooks`` attached.

    Args:
        model: a model from :func:`hooked.lm.load` (``bridge``, ``wrap`` or ``hf``), or any
            ``hooked.wrap`` / ``TransformerBridge`` of a transformers causal LM with a tokenizer.
        prompts: a string, a list of strings, ids ``[batch, pos]``, or a batch from
            :func:`hooked.lm.tokenize`.
        max_new_tokens: new tokens per prompt (fewer where every row ended).
        fwd_hooks: ``(name or filter, fn)`` pairs, attached for the whole call; see the module's
            docstring for how a hook tells the prompt from the new tokens.
        do_sample: sample instead of taking the most likely token.
        temperature, top_k, top_p: sampling settings (``temperature`` 1 by default; ``top_p``: the
            smallest set of tokens whose probability reaches it). Given without ``do_sample=True``
            they are an error, not ignored (greedy decoding would silently not use them).
        seed: seed of the sampling generator (reproducible samples); only with ``do_sample=True``.
        stop_at_eos: a row ends at its end-of-sequence token (then gets pad ids); the call ends
            when every row has.
        eos_token_id: the end-of-sequence id(s) (default: the model's generation config, else its
            tokenizer's).
        bos: prepend the BOS token to string prompts.
        use_cache: keep keys and values between forwards (else rerun the whole sequence each time).
        return_tokens: return a :class:`Generation` (texts, token ids, lengths, the prompt batch).
        progress: a progress bar over the forwards.
    Returns:
        the new text (for a string prompt), a list of them, or a :class:`Generation`.

    Everything is checked before the first forward: the settings (types and ranges), the prompts
    (no empty prompt or row without a real token, ids inside the vocabulary, an attention mask of
    0s and 1s), the end-of-sequence ids, and, for a model with learned absolute positions (GPT-2),
    that the prompt and the new tokens fit its position embedding. Calls on one model from several
    threads run one after the other (the hooks of one would otherwise fire in the others); a
    forward of the same model that another thread runs meanwhile sees this call's hooks, as with
    ``run_with_hooks``.
    """
    positive(max_new_tokens=max_new_tokens)
    flags(
        do_sample=do_sample,
        stop_at_eos=stop_at_eos,
        bos=bos,
        use_cache=use_cache,
        return_tokens=return_tokens,
        progress=progress,
    )
    temperature = _check_sampling(do_sample, temperature, top_k, top_p, seed)
    _check_pass_hooks(fwd_hooks, use_cache)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            f"lm.generate needs a model with a tokenizer (from lm.load); {type(model).__name__} has none"
        )
    ids, mask, single = _prompt_batch(model, prompts, bos)
    forward = LMForward(model, fwd_hooks)
    vocab = _vocab_size(forward.hf)
    if vocab is not None:
        index_tensor("prompt ids", ids, vocab, axis="the vocabulary")
    eos = _eos_ids(forward.hf, tokenizer, eos_token_id, vocab)
    _check_positions(forward, mask, max_new_tokens)
    pad = getattr(getattr(forward.hf, "generation_config", None), "pad_token_id", None)
    pad = pad_id(tokenizer) if pad is None else int(pad)
    generator = None
    if do_sample and seed is not None:
        generator = torch.Generator(device=ids.device).manual_seed(seed)

    batch = ids.shape[0]
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=ids.device)
    eos_t = torch.tensor(eos, dtype=torch.long, device=ids.device)
    new: list[Tensor] = []
    seq, seq_mask = ids, mask
    positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
    cache = forward.new_cache() if use_cache else None
    bar = _bar(max_new_tokens, progress)
    with contextlib.closing(bar), _one_at_a_time(forward.model), torch.no_grad(), forward.hooks():
        for k in range(max_new_tokens):
            token = _PASS.set(k)
            try:
                if k == 0 or cache is None:
                    logits = forward(seq, seq_mask, positions, cache)
                else:
                    logits = forward(new[-1][:, None], seq_mask, positions[:, -1:], cache)
            finally:
                _PASS.reset(token)
            bar.update(1)
            nxt = _choose(logits[:, -1], do_sample, temperature, top_k, top_p, generator)
            if stop_at_eos and eos:
                nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
                ended = ~finished & torch.isin(nxt, eos_t)
                lengths = torch.where(ended, k + 1, lengths)
                finished |= ended
            new.append(nxt)
            if k == max_new_tokens - 1 or (stop_at_eos and bool(finished.all())):
                break
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            seq_mask = torch.cat([seq_mask, seq_mask.new_ones(batch, 1)], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
    tokens = torch.stack(new, dim=1)
    lengths = lengths.clamp_max(tokens.shape[1])
    texts = _decode(tokenizer, tokens, lengths, finished)
    if return_tokens:
        return Generation(texts, tokens, lengths, {"input_ids": ids, "attention_mask": mask})
    return texts[0] if single else texts


# ---------------------------------------------------------------------- checks
def _check_sampling(do_sample: bool, temperature: Any, top_k: Any, top_p: Any, seed: Any) -> float:
    """Refuse sampling settings without ``do_sample`` and out-of-range ones; returns the temperature."""
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    given = {k: v for k, v in given.items() if v is not None}
    if not do_sample:
        if given:
            listed = ", ".join(f"{k}={v!r}" for k, v in given.items())
            one = len(given) == 1
            it = "it" if one else "them"
            raise ValueError(
                f"lm.generate: {listed} {'is a sampling setting' if one else 'are sampling settings'}, but "
                f"do_sample=False decodes greedily (the most likely token) and would ignore {it}; pass "
                f"do_sample=True to sample, or leave {it} out"
            )
        return 1.0
    if temperature is not None:
        temperature = finite_number("temperature", temperature, above=0)
    if top_p is not None:
        finite_number("top_p", top_p, above=0, at_most=1)
    if top_k is not None:
        positive(top_k=top_k)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    return 1.0 if temperature is None else temperature


def _check_pass_hooks(fwd_hooks: Any, use_cache: bool) -> None:
    """``on_prompt`` / ``on_new_tokens`` hooks need the cache: without it every pass runs the
    prompt again, where an ``on_prompt`` hook no longer fires and an ``on_new_tokens`` one fires
    on the prompt too, so the tokens would differ from those of the cached call."""
    if use_cache:
        return
    for spec in fwd_hooks or ():
        fn = spec[1] if isinstance(spec, (tuple, list)) and len(spec) == 2 else None
        label = getattr(fn, "_generation_passes", None)
        if label is not None:
            raise ValueError(
                f"lm.generate(use_cache=False): the {label} hook at {spec[0]!r} tells generate's passes "
                "apart, but without the key-value cache every pass runs the whole sequence again (the "
                "prompt included), so it would edit other positions than with the cache and give other "
                "tokens; use use_cache=True (the default)"
            )


def _vocab_size(hf: Any) -> int | None:
    """Rows of the model's input embedding (the ids it can take), else its config's vocab_size."""
    get = getattr(hf, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    rows = getattr(embedding, "num_embeddings", None)
    if isinstance(rows, int):
        return rows
    size = getattr(getattr(hf, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def _check_positions(forward: LMForward, mask: Tensor, max_new_tokens: int) -> None:
    """A model with learned absolute positions (GPT-2's ``wpe``) has none past its table: refuse a
    call that would need them (the model would fail with an index error part-way)."""
    dec = forward.backend.decoder
    path = dec.layout.pos_embed if dec is not None else None
    if dec is None or path is None:
        return
    table = getattr(dec.module(path), "num_embeddings", None)
    longest = int(mask.sum(dim=1).max())
    needed = longest + max_new_tokens - 1  # the last new token is never fed back
    if isinstance(table, int) and needed > table:
        raise ValueError(
            f"lm.generate: a prompt of {longest} tokens and max_new_tokens={max_new_tokens} need "
            f"{needed} positions, but this model's position embedding ({path}) has {table}; use a "
            f"shorter prompt or at most max_new_tokens={max(table - longest + 1, 0)}"
        )


_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


@contextlib.contextmanager
def _one_at_a_time(model: Any) -> Iterator[None]:
    """Hold ``model``'s generation lock: generate calls on one model from several threads take
    turns (each attaches its hooks to the shared model for its whole run)."""
    with _LOCKS_LOCK:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
    with lock:
        yield


# ---------------------------------------------------------------------- prompts
def _prompt_batch(model: Any, prompts: Any, bos: bool) -> tuple[Tensor, Tensor, bool]:
    """``(ids, mask, single)``: the prompts as a left-padded batch."""
    if isinstance(prompts, str):
        batch = tokenize(model, [prompts], padding_side="left", bos=bos)
        return batch["input_ids"], batch["attention_mask"], True
    if isinstance(prompts, (list, tuple)) and not prompts:
        raise ValueError("lm.generate: prompts is an empty list; give at least one prompt")
    if isinstance(prompts, (list, tuple)) and all(isinstance(p, str) for p in prompts):
        batch = tokenize(model, list(prompts), padding_side="left", bos=bos)
        return batch["input_ids"], batch["attention_mask"], False
    if isinstance(prompts, (Tensor, dict)):
        ids, mask = batch_ids_and_mask(prompts)
        if ids.dim() == 1:
            ids = ids[None]
            mask = None if mask is None else mask[None]
        if ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
            raise ValueError(f"prompt ids must be integer [batch, pos], got {ids.dtype} {tuple(ids.shape)}")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(
                f"lm.generate: the prompt ids {tuple(ids.shape)} hold no prompt, or an empty one"
            )
        if mask is None:
            warn_if_padded_without_mask(model, ids, None, stacklevel=4)
            mask = torch.ones_like(ids)
        mask = mask.to(ids.device).long()
        mask_ends(mask)  # every row needs a real token: an all-padding row would generate from nothing
        ids, mask = _left_aligned(ids, mask)
        return ids, mask, False
    raise TypeError(
        "prompts must be a string, a list of strings, token ids [batch, pos] or a batch from "
        f"lm.tokenize; got {type(prompts).__name__}"
    )


def _left_aligned(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The batch with every row's padding moved to its left (real tokens kept in order)."""
    if not bool((mask == 0).any()) or not bool((mask[:, -1] == 0).any()):
        return ids, mask
    order = torch.argsort(mask, dim=1, stable=True)  # pads (0) first, real tokens in their order
    return ids.gather(1, order), mask.gather(1, order)


# ---------------------------------------------------------------------- choosing tokens
def _choose(
    logits: Tensor,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Tensor:
    """The next token of each row from its logits ``[batch, vocab]``."""
    logits = logits.float()
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above
        drop = before >= top_p  # keep the smallest set that reaches top_p (at least one token)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _eos_ids(hf: Any, tokenizer: Any, given: Any, vocab: int | None) -> list[int]:
    """The end-of-sequence ids: ``given`` (checked: ids of the vocabulary), else the model's."""
    if given is not None:
        values = [given] if not isinstance(given, (list, tuple)) else list(given)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"eos_token_id must be a token id or a list of them, got {given!r}")
        if vocab is not None:
            index_tensor("eos_token_id", torch.tensor(values, dtype=torch.long), vocab, axis="the vocabulary")
        return values
    value = getattr(getattr(hf, "generation_config", None), "eos_token_id", None)
    if value is None:
        value = getattr(tokenizer, "eos_token_id", None)
    if value is None:
        return []
    return [int(v) for v in ([value] if isinstance(value, int) else value)]


def _decode(tokenizer: Any, tokens: Tensor, lengths: Tensor, finished: Tensor) -> list[str]:
    """Each row's new text, without its end-of-sequence token."""
    keep = torch.where(finished, lengths - 1, lengths).tolist()
    return [tokenizer.decode(row[:n]) for row, n in zip(tokens.tolist(), keep)]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, progress: bool) -> Any:
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generate", leave=False)
