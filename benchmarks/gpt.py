"""A GPT-2-style transformer written twice: raw, and with TransformerLens-style hook points.

Both share one set of parameters (``HookedGPT.from_raw``), so their outputs are bit-identical
and any difference in time is the cost of instrumentation. The hooked one has TransformerLens's
hook names (``blocks.{i}.hook_resid_pre``, ``blocks.{i}.attn.hook_pattern``, ...). Not a
benchmark suite itself (no ``run``): the suites import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import hooked


@dataclass(frozen=True)
class GPTConfig:
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_mlp: int = 3072
    d_vocab: int = 50257
    n_ctx: int = 1024

    @classmethod
    def small(cls) -> GPTConfig:  # GPT-2 small
        return cls()

    @classmethod
    def tiny(cls) -> GPTConfig:
        return cls(n_layers=2, d_model=64, n_heads=4, d_mlp=256, d_vocab=512, n_ctx=128)


class RawGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(RawBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.pos_embed(pos)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


class RawBlock(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = RawAttention(cfg)
        self.mlp_in, self.mlp_out = nn.Linear(cfg.d_model, cfg.d_mlp), nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp_out(torch.nn.functional.gelu(self.mlp_in(self.ln2(x))))


class RawAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = split_heads(self.qkv(x), self.n_heads)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        pattern = causal_softmax(scores)
        z = pattern @ v
        return self.out(z.transpose(1, 2).flatten(2))


def split_heads(qkv: Tensor, n_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    b, p, _ = qkv.shape
    q, k, v = qkv.view(b, p, 3, n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # [batch, head, pos, d_head]
    return q, k, v


def causal_softmax(scores: Tensor) -> Tensor:
    p = scores.shape[-1]
    mask = torch.ones(p, p, dtype=torch.bool, device=scores.device).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(dim=-1)


class HookedGPT(hooked.HookedModule, RawGPT):
    """RawGPT with hook points: 2 at the embeddings and 13 per block."""

    def __init__(self, cfg: GPTConfig):
        RawGPT.__init__(self, cfg)
        self.blocks = nn.ModuleList(HookedBlock(cfg) for _ in range(cfg.n_layers))
        self.hook_embed, self.hook_pos_embed = hooked.HookPoint(), hooked.HookPoint()

    @classmethod
    def from_raw(cls, raw: RawGPT) -> HookedGPT:
        model = cls(raw.cfg).to(next(raw.parameters()).device)
        model.load_state_dict(raw.state_dict())
        for p_hooked, p_raw in zip(model.parameters(), raw.parameters()):
            p_hooked.data = p_raw.data  # share storage: no second copy of the weights
        return model

    def forward(self, tokens: Tensor) -> Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(pos))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


class HookedBlock(RawBlock):
    def __init__(self, cfg: GPTConfig):
        super().__init__(cfg)
        self.attn = HookedAttention(cfg)
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_mid = (hooked.HookPoint() for _ in range(3))
        self.hook_mlp_pre, self.hook_mlp_post, self.hook_mlp_out, self.hook_resid_post = (
            hooked.HookPoint() for _ in range(4)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        pre = self.hook_mlp_pre(self.mlp_in(self.ln2(x)))
        post = self.hook_mlp_post(torch.nn.functional.gelu(pre))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp_out(post)))


class HookedAttention(RawAttention):
    def __init__(self, cfg: GPTConfig):
        super().__init__(cfg)
        self.hook_q, self.hook_k, self.hook_v = (hooked.HookPoint() for _ in range(3))
        self.hook_attn_scores, self.hook_pattern, self.hook_z = (hooked.HookPoint() for _ in range(3))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = split_heads(self.qkv(x), self.n_heads)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        scores = self.hook_attn_scores(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]))
        pattern = self.hook_pattern(causal_softmax(scores))
        z = self.hook_z(pattern @ v)
        return self.out(z.transpose(1, 2).flatten(2))


def pair(cfg: GPTConfig, device: str = "cpu", seed: int = 0) -> tuple[RawGPT, HookedGPT]:
    """A raw model and its hooked twin sharing parameters, in eval mode."""
    torch.manual_seed(seed)
    raw = RawGPT(cfg).to(device).eval()
    return raw, HookedGPT.from_raw(raw).eval()
