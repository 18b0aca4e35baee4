"""The residual-stream toolkit: logit lens, residual decompositions, direct logit attribution.

TransformerLens's ``ActivationCache`` helpers as functions of ``(model, cache)``, on both backends
of :func:`hooked.lm.load` with the same numbers (the bridge reads TransformerLens names, ``wrap``
module paths; :class:`hooked.lm.names.hook_names.LMNames` maps one to the other):

* :func:`unembed`: the logits a residual activation stands for (the model's own final norm, its
  unembedding, and Gemma-2's logit soft-capping), the logit lens of any residual stream.
* :func:`accumulated_resid` / :func:`logit_lens`: the residual stream entering every layer (and
  leaving the last), optionally through the final norm / into logits.
* :func:`decompose_resid`: the residual stream as a sum of embeddings and each layer's attention
  and MLP outputs.
* :func:`stack_head_results`: each head's output (the cached ``hook_result``, or ``z_h`` through
  its slice of the output projection), or with ``grad=True`` the gradient with respect to it.
* :func:`apply_ln_to_stack` / :func:`logit_attrs`: components through a norm with the scale the
  whole residual stream had there, then dotted with answer directions (direct logit attribution).

Run the model with :func:`hooked.lm.stream_hooks` cached (``names_filter=lm.stream_hooks(model)``) first.

Modules of the model (norms, output projections, the unembedding) are run through their own
``forward``, never ``__call__``: the hooks on them (a ``wrap`` model's hook points, a user's
ablation at ``hook_z``) belong to the model's forward, not to a computation on cached values.

**Norms are read from the model**: each norm module decides itself (RMSNorm for Llama, Qwen2,
Mistral; Gemma's ``1 + weight`` RMSNorm; LayerNorm for GPT-2 and GPT-NeoX). Where a norm is applied
to one component with the scale of the whole stream it is used as the linear map it is at that
scale: ``gain * centre(c) / scale`` (``centre`` only for LayerNorm; no bias), the gain and the
scale read from the module and checked against its own output.

Differences from TransformerLens (which assumes ``fold_ln``-processed weights): here
:func:`apply_ln_to_stack` multiplies by the norm's gain, so :func:`logit_attrs` of
:func:`decompose_resid` sums to the real logit (minus the norm bias and unembedding bias terms,
which belong to no component) on an unprocessed model; TransformerLens's sum matches only after
``enable_compatibility_mode()``. ``pos_slice`` follows TransformerLens's helpers: an int drops the
position axis, a slice or list keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hooked.lm.backends.backend import lm_names
from hooked.lm.names.hook_names import LMNames
from hooked.lm.names.layouts import original
from hooked.typecheck import Float, typechecked

PosSlice = int | slice | Sequence[int] | Tensor | None


# ---------------------------------------------------------------------- norms
class _Norm:
    """A norm module as ``module(x) = gain * centre(x) / scale(x) + bias`` (read from the module)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.centred = isinstance(module, nn.LayerNorm)
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", None))
        if not isinstance(eps, float):
            raise ValueError(
                f"cannot read the epsilon of the norm {type(module).__name__} (eps / variance_epsilon)"
            )
        self.eps = eps
        weight = next(module.parameters(), None)
        if isinstance(module, nn.LayerNorm):
            d = module.normalized_shape[-1]
        elif weight is not None:
            d = weight.shape[-1]
        else:
            raise ValueError(f"cannot read the width of the norm {type(module).__name__} (it has no gain)")
        ref = weight if weight is not None else torch.zeros(d)
        with torch.no_grad():
            if isinstance(module, nn.LayerNorm):
                self.gain = module.weight if module.weight is not None else torch.ones_like(ref)
                self.bias = module.bias
            else:  # RMS: module(ones) = gain / sqrt(1 + eps), whatever form the gain takes (w, 1 + w)
                ones = torch.ones(d, device=ref.device, dtype=torch.float32)
                self.gain = module.forward(ones).float() * (1 + eps) ** 0.5
                self.bias = None
            self._check(d, ref)

    def scale(self, x: Tensor) -> Tensor:
        """``[..., 1]``: the scale this norm divides ``x`` by."""
        x = x.float()
        var = x.var(-1, unbiased=False, keepdim=True) if self.centred else x.pow(2).mean(-1, keepdim=True)
        return (var + self.eps).sqrt()

    def linear(self, stack: Tensor, scale: Tensor) -> Tensor:
        """Each component of ``stack`` through this norm at the given ``scale`` (no bias)."""
        c = stack.float()
        if self.centred:
            c = c - c.mean(-1, keepdim=True)
        return (c / scale * self.gain.float()).to(stack.dtype)

    def _check(self, d: int, ref: Tensor) -> None:
        x = torch.randn(3, d, generator=torch.Generator().manual_seed(0)).to(ref.device, ref.dtype)
        want = self.module.forward(x).float()
        got = self.linear(x, self.scale(x)).float() + (self.bias.float() if self.bias is not None else 0)
        tol = 1e-4 if ref.dtype == torch.float32 else 5e-2
        if not torch.allclose(got, want, atol=tol * want.abs().max().item() + tol, rtol=tol):
            raise ValueError(
                f"the norm {type(self.module).__name__} is neither an RMSNorm nor a LayerNorm as far as "
                "hooked.lm.toolkit.resid can tell (its output is not gain * x / scale(x) [+ bias])"
            )


class _Parts:
    """What the toolkit needs of one model: names, norms, output projections, unembedding."""

    def __init__(self, model: Any, what: str):
        self.names: LMNames = lm_names(model, what)
        assert self.names.dec is not None  # lm_names gives names with a layout
        self.dec = self.names.dec
        self.n_layers = self.dec.n_layers
        self._norms: dict[str, _Norm] = {}

    def norm(self, path: str) -> _Norm:
        if path not in self._norms:
            self._norms[path] = _Norm(self.dec.module(path))
        return self._norms[path]

    def final_norm(self) -> _Norm:
        return self.norm(self.dec.layout.final_norm)

    def unembedding(self) -> nn.Module:
        return original(self.dec.root.get_output_embeddings())


def _act(cache: Any, name: str | None, what: str) -> Tensor:
    if name is None or name not in cache:
        raise KeyError(
            f"{what} needs {name!r} in the cache: run the model with "
            "run_with_cache(tokens, names_filter=hooked.lm.stream_hooks(model)) first"
        )
    return cache[name]


def _pos(t: Tensor, pos_slice: PosSlice, dim: int) -> Tensor:
    """TransformerLens's ``Slice(pos_slice).apply(t, dim)``: an int drops the axis."""
    if pos_slice is None:
        return t
    index = torch.as_tensor(pos_slice, device=t.device) if isinstance(pos_slice, (list, tuple)) else pos_slice
    return t[(slice(None),) * (dim % t.dim()) + (index,)]


def _layer(parts: _Parts, layer: int | None) -> int:
    n = parts.n_layers
    if layer is None or layer == -1:
        return n
    if not 0 <= layer <= n:
        raise IndexError(f"layer must be in [0, {n}] (or -1 / None for the unembedding), got {layer}")
    return layer


# ---------------------------------------------------------------------- unembedding and the lens
@typechecked
def unembed(
    model: Any, resid: Float[Tensor, "*batch d_model"], *, apply_ln: bool = True
) -> Float[Tensor, "*batch vocab"]:
    """The logits that a residual-stream activation stands for: the model's final norm (unless
    ``apply_ln=False``: ``resid`` is normalised already), its unembedding, and Gemma-2's logit
    soft-capping where the config asks for it. ``unembed(model, last residual)`` is the model's
    logits."""
    parts = _Parts(model, "unembed")
    x = parts.final_norm().module.forward(resid) if apply_ln else resid
    logits = parts.unembedding().forward(x)
    cap = getattr(parts.dec.root.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def accumulated_resid(
    model: Any,
    cache: Any,
    layer: int | None = None,
    *,
    incl_mid: bool = False,
    apply_ln: bool = False,
    pos_slice: PosSlice = None,
    mlp_input: bool = False,
    return_labels: bool = False,
) -> Tensor | tuple[Tensor, list[str]]:
    """The residual stream entering layers ``0 .. layer`` (and leaving the last layer when ``layer``
    is ``None``, ``-1`` or ``n_layers``): ``[components, batch, pos, d_model]``.

    Labels ``"{l}_pre"``, ``"{l}_mid"`` (``incl_mid``: the stream between attention and MLP, for
    ``l < layer``; ``mlp_input``: of ``layer`` itself) and ``"final_post"``. ``apply_ln`` at the
    unembedding runs the final norm module on each component (the logit lens; then
    :func:`unembed` with ``apply_ln=False`` gives logits); at another layer it applies that
    layer's norm at the stream's own scale (:func:`apply_ln_to_stack`).
    """
    parts = _Parts(model, "accumulated_resid")
    names, n = parts.names, parts.n_layers
    layer = _layer(parts, layer)
    comps, labels = [], []
    for i in range(layer + 1):
        if i == n:
            comps.append(_act(cache, names.final_in, "accumulated_resid"))
            labels.append("final_post")
            continue
        comps.append(_act(cache, names.resid_pre(i), "accumulated_resid"))
        labels.append(f"{i}_pre")
        if (incl_mid and i < layer) or (mlp_input and i == layer):
            comps.append(_act(cache, _mid(parts, i), "accumulated_resid"))
            labels.append(f"{i}_mid")
    stack = torch.stack([_pos(c, pos_slice, -2) for c in comps])
    if apply_ln:
        stack = apply_ln_to_stack(
            model, cache, stack, layer, mlp_input=mlp_input, pos_slice=pos_slice, recompute_ln=layer == n
        )
    return (stack, labels) if return_labels else stack


def logit_lens(
    model: Any, cache: Any, *, incl_mid: bool = False, pos_slice: PosSlice = None, return_labels: bool = False
) -> Tensor | tuple[Tensor, list[str]]:
    """Logits of the residual stream entering every layer and leaving the last:
    ``[n_layers + 1, batch, pos, vocab]``; the last entry is the model's own logits."""
    stack_and_labels = accumulated_resid(
        model, cache, incl_mid=incl_mid, apply_ln=True, pos_slice=pos_slice, return_labels=True
    )
    assert isinstance(stack_and_labels, tuple)  # return_labels=True
    stack, labels = stack_and_labels
    logits = unembed(model, stack, apply_ln=False)
    return (logits, labels) if return_labels else logits


def _mid(parts: _Parts, layer: int) -> str:
    name = parts.names.resid_mid(layer)
    if name is None:
        raise ValueError(
            f"{type(parts.dec.root).__name__} runs attention and MLP in parallel: there is no residual "
            "stream between them (resid_mid); the MLP reads resid_pre"
        )
    return name


# ---------------------------------------------------------------------- decompositions
def decompose_resid(
    model: Any,
    cache: Any,
    layer: int | None = None,
    *,
    mlp_input: bool = False,
    mode: Literal["all", "mlp", "attn"] = "all",
    apply_ln: bool = False,
    pos_slice: PosSlice = None,
    incl_embeds: bool = True,
    return_labels: bool = False,
) -> Tensor | tuple[Tensor, list[str]]:
    """The residual stream entering ``layer`` (default: leaving the last) as a stack of what wrote
    it: ``"embed"`` (and ``"pos_embed"`` for learned positions), then ``"{l}_attn_out"``,
    ``"{l}_mlp_out"`` for ``l < layer`` (``mlp_input``: also ``layer``'s attention). With every
    component (``mode="all"``, ``incl_embeds``) the stack sums to that residual stream.
    """
    if mode not in ("all", "mlp", "attn"):
        raise ValueError(f"mode must be 'all', 'mlp' or 'attn', got {mode!r}")
    parts = _Parts(model, "decompose_resid")
    names = parts.names
    layer = _layer(parts, layer)
    if mlp_input and layer == parts.n_layers:
        raise ValueError(
            "decompose_resid: mlp_input needs a layer below n_layers (the unembedding has no MLP)"
        )
    comps, labels = [], []
    if incl_embeds:
        embed = _act(cache, names.embed, "decompose_resid")
        if names.pos_embed:
            pos_embed = _act(cache, names.pos_embed, "decompose_resid")
            comps += [embed, pos_embed.expand_as(embed)]
            labels += ["embed", "pos_embed"]
        else:
            comps.append(embed)
            labels.append("embed")
    for i in range(layer):
        if mode != "mlp":
            comps.append(_act(cache, names.attn_out(i), "decompose_resid"))
            labels.append(f"{i}_attn_out")
        if mode != "attn":
            comps.append(_act(cache, names.mlp_out(i), "decompose_resid"))
            labels.append(f"{i}_mlp_out")
    if mlp_input and mode != "mlp":
        comps.append(_act(cache, names.attn_out(layer), "decompose_resid"))
        labels.append(f"{layer}_attn_out")
    if not comps:
        raise ValueError("decompose_resid: no components selected (layer 0 without embeddings)")
    stack = torch.stack([_pos(c, pos_slice, -2) for c in comps])
    if apply_ln:
        stack = apply_ln_to_stack(model, cache, stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
    return (stack, labels) if return_labels else stack


def head_results(
    model: Any, cache: Any, layer: int, *, pos_slice: PosSlice = None, grad: bool = False
) -> Tensor:
    """``[batch, pos, head, d_model]``: what each head of ``layer`` adds to the residual stream:
    the cached per-head ``hook_result`` where the cache has it, else ``z_h`` through its slice of
    the output projection (the projection's bias, and any norm after attention, applied at the
    whole output's scale). Sums over heads to the attention output minus its bias.

    ``grad=True`` reads a cache of gradients (the ``<name>_grad`` entries of
    ``run_with_cache(incl_bwd=True)``) and gives the gradient with respect to each head's result,
    as TransformerLens reads it at ``hook_result``: the cached ``hook_result_grad``, else the
    gradient at the attention's output, the same for every head (the output is the heads' sum plus
    a bias). Mapping ``hook_z``'s gradient through the output projection would be a forward map
    applied to a gradient, so it is never done: without either gradient (or with a norm after
    attention, whose input's gradient is not cached) this raises."""
    parts = _Parts(model, "head_results")
    layer = parts.names.layer(layer)
    z_name = parts.names.z(layer)
    result_name = z_name.removesuffix("hook_z") + "hook_result"
    n_heads = parts.dec.n_heads
    if grad:
        return _head_result_grads(parts, cache, layer, (result_name, z_name), n_heads, pos_slice)
    cached = cache[result_name] if result_name in cache else None
    if cached is not None and _per_head(cached, n_heads, cache, z_name):
        return _pos(cached, pos_slice, -3)
    if z_name not in cache and z_name + "_grad" in cache:
        raise KeyError(
            f"head_results needs {z_name!r} (a forward activation) but this cache holds its gradient "
            f"{z_name + '_grad'!r}: for gradients of head results use grad=True "
            "(cache.gradients().stack_head_results())"
        )
    z = _pos(_act(cache, z_name, "head_results"), pos_slice, -3)
    o_proj = parts.dec.part(layer, "o_proj")
    n_heads, d_head = z.shape[-2], z.shape[-1]
    eye = torch.eye(n_heads, device=z.device, dtype=z.dtype)
    spread = (z.unsqueeze(-3) * eye[:, :, None]).flatten(-2)  # [..., head, head*d_head]: one head each
    # the projection's own forward, not its __call__: hooks on it (hook_z on wrap is its input, a
    # user's ablation there among them) belong to the model's forward, not to this computation
    with torch.no_grad():
        bias = o_proj.forward(torch.zeros(n_heads * d_head, device=z.device, dtype=z.dtype))
    results = o_proj.forward(spread) - bias
    lay = parts.dec.layout
    if lay.attn_out != lay.attn:  # a norm after attention (Gemma-2): linear at the output's scale
        post = parts.norm(parts.dec.path(layer, "attn_out"))
        results = post.linear(results, post.scale(results.sum(-2) + bias).unsqueeze(-2))
    return results


def _per_head(t: Tensor, n_heads: int, cache: Any, z_name: str) -> bool:
    """Whether a cached ``hook_result`` (or its gradient) is per head (``[batch, pos, head,
    d_model]``, as ``hook_z``) rather than summed over heads (``[batch, pos, d_model]``)."""
    if t.dim() < 3 or t.shape[-2] != n_heads:
        return False
    for z in (z_name, z_name + "_grad"):
        if z in cache:
            return t.dim() == cache[z].dim()
    return t.dim() == 4


def _head_result_grads(
    parts: _Parts, cache: Any, layer: int, names: tuple[str, str], n_heads: int, pos_slice: PosSlice
) -> Tensor:
    """The gradient with respect to each head's result (see :func:`head_results`)."""
    result_name, z_name = names
    name = result_name + "_grad"
    if name in cache:
        g = cache[name]
        if _per_head(g, n_heads, cache, z_name):
            return _pos(g, pos_slice, -3)
        g = _pos(g, pos_slice, -2)  # a summed [batch, pos, d_model] hook_result: the same for every head
        return g.unsqueeze(-2).expand(*g.shape[:-1], n_heads, g.shape[-1])
    lay = parts.dec.layout
    out = parts.names.attn_out(layer) + "_grad"
    if lay.attn_out == lay.attn and out in cache:
        g = _pos(cache[out], pos_slice, -2)
        return g.unsqueeze(-2).expand(*g.shape[:-1], n_heads, g.shape[-1])
    why = (
        "a norm follows attention in this model, so the attention output's gradient is not the heads'"
        if lay.attn_out != lay.attn
        else f"nor {out!r}"
    )
    raise KeyError(
        f"the gradient of layer {layer}'s head results needs {name!r} in the cache ({why}); run "
        "run_with_cache(..., incl_bwd=True) with those names (hook_z's gradient cannot give it: the "
        "output projection maps activations forward, not gradients back)"
    )


def stack_head_results(
    model: Any,
    cache: Any,
    layer: int | None = -1,
    *,
    return_labels: bool = False,
    incl_remainder: bool = False,
    pos_slice: PosSlice = None,
    apply_ln: bool = False,
    grad: bool = False,
) -> Tensor | tuple[Tensor, list[str]]:
    """Every head's output (:func:`head_results`) of the layers below ``layer`` (default: all):
    ``[layer * n_heads, batch, pos, d_model]``, labels ``"L{l}H{h}"``; ``incl_remainder`` adds the
    rest of the residual stream leaving ``layer - 1`` (embeddings, MLPs, biases), so the stack sums
    to it. ``grad=True``: the gradients with respect to the heads' outputs, from the cache's
    ``<name>_grad`` entries (:func:`head_results`); no remainder or norm there."""
    parts = _Parts(model, "stack_head_results")
    layer = _layer(parts, layer)
    if grad and (incl_remainder or apply_ln):
        raise ValueError(
            "stack_head_results(grad=True): incl_remainder and apply_ln belong to activations, not "
            "to gradients (a gradient is not a sum of components, and a norm's scale is the forward's)"
        )
    comps, labels = [], []
    for i in range(layer):
        r = head_results(model, cache, i, pos_slice=pos_slice, grad=grad)
        comps.append(r.movedim(-2, 0))
        labels += [f"L{i}H{h}" for h in range(r.shape[-2])]
    if comps:
        stack = torch.cat(comps)
    else:
        first = parts.names.resid_pre(0) + ("_grad" if grad else "")
        like = _pos(_act(cache, first, "stack_head_results"), pos_slice, -2)
        stack = like.new_zeros(0, *like.shape)
    if incl_remainder:
        if layer == 0:
            rest = _pos(_act(cache, parts.names.resid_pre(0), "stack_head_results"), pos_slice, -2)
        else:
            rest = _pos(_act(cache, parts.names.resid_post(layer - 1), "stack_head_results"), pos_slice, -2)
        stack = torch.cat([stack, (rest - stack.sum(0))[None]])
        labels.append("remainder")
    if apply_ln:
        stack = apply_ln_to_stack(model, cache, stack, layer, pos_slice=pos_slice)
    return (stack, labels) if return_labels else stack


# ---------------------------------------------------------------------- norms on stacks, attribution
def apply_ln_to_stack(
    model: Any,
    cache: Any,
    stack: Tensor,
    layer: int | None = None,
    *,
    mlp_input: bool = False,
    pos_slice: PosSlice = None,
    recompute_ln: bool = False,
) -> Tensor:
    """Each component of ``stack`` (``[components, ..., d_model]``, positions already sliced with
    ``pos_slice``) through the norm read by ``layer``: the final norm for ``None`` / ``-1`` /
    ``n_layers``, else that layer's norm before attention (before the MLP with ``mlp_input``),
    as the linear map it is at the scale the whole residual stream had there (from the cache);
    gain included, bias not. ``recompute_ln`` at the final norm runs the norm module on each
    component instead (its own scale, gain and bias: the logit lens)."""
    parts = _Parts(model, "apply_ln_to_stack")
    names = parts.names
    layer = _layer(parts, layer)
    if layer == parts.n_layers:
        norm, resid = parts.final_norm(), names.final_in
        if mlp_input:
            raise ValueError("apply_ln_to_stack: mlp_input needs a layer below n_layers")
        if recompute_ln:
            return norm.module.forward(stack)
    else:
        dec = parts.dec
        norm = parts.norm(dec.path(layer, "ln2" if mlp_input else "ln1"))
        resid = _mid(parts, layer) if mlp_input and not dec.parallel else names.resid_pre(layer)
    scale = _pos(norm.scale(_act(cache, resid, "apply_ln_to_stack")), pos_slice, -2)
    _same_positions(stack, scale, pos_slice, "apply_ln_to_stack")
    return norm.linear(stack, scale)


def _same_positions(stack: Tensor, scale: Tensor, pos_slice: PosSlice, caller: str) -> None:
    """``stack``'s axes before ``d_model`` end with the cached stream's (``scale``: ``[..., 1]``),
    else one would broadcast over the other (a stack sliced to one position against every
    position's scale)."""
    lead = scale.shape[:-1]
    if stack.dim() < scale.dim() or tuple(stack.shape[-scale.dim() : -1]) != tuple(lead):
        raise ValueError(
            f"{caller}: the stack is {tuple(stack.shape)} ([components, ..., d_model]) but the cached "
            f"residual stream is {tuple(lead)} (batch, pos) with pos_slice={pos_slice!r}; slice the "
            "stack and pass the same pos_slice (e.g. cache.decompose_resid(pos_slice=-1) with pos_slice=-1)"
        )


def logit_attrs(
    model: Any,
    cache: Any,
    stack: Tensor,
    tokens: int | str | Tensor,
    incorrect_tokens: int | str | Tensor | None = None,
    *,
    pos_slice: PosSlice = None,
) -> Tensor:
    """Direct logit attribution: each component's contribution to the logit of ``tokens`` (minus
    that of ``incorrect_tokens``), through the final norm at the whole stream's scale.

    ``stack`` is ``[components, batch, pos, d_model]`` (or with positions sliced by ``pos_slice``);
    ``tokens`` an id, a one-token string, ``[batch]`` (one answer per row, every position) or
    ``[batch, pos]``. Returns ``[components, batch, pos]``. For the full decomposition
    (:func:`decompose_resid`) the sum over components plus the final norm's bias term and the
    unembedding bias is the logit itself (before Gemma-2's soft-capping).
    """
    parts = _Parts(model, "logit_attrs")
    directions = _directions(model, parts, tokens)
    if incorrect_tokens is not None:
        wrong = _directions(model, parts, incorrect_tokens)
        if wrong.shape != directions.shape:
            raise ValueError(
                f"logit_attrs: tokens and incorrect_tokens must have the same shape, "
                f"got {tuple(directions.shape[:-1])} and {tuple(wrong.shape[:-1])}"
            )
        directions = directions - wrong
    normed = apply_ln_to_stack(model, cache, stack, None, pos_slice=pos_slice)
    if directions.dim() == 2 and normed.dim() == 4 and directions.shape[0] == normed.shape[1]:
        directions = directions[:, None]  # one answer per row, at every position
    try:
        fits = torch.broadcast_shapes(normed.shape, directions.shape) == normed.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"logit_attrs: tokens of shape {tuple(directions.shape[:-1])} do not fit the stack "
            f"{tuple(normed.shape)} ([components, batch, pos, d_model] after pos_slice={pos_slice!r}); give "
            "one token, one per row ([batch]) or one per row and position ([batch, pos], sliced as the stack)"
        )
    return (normed * directions.to(normed.dtype)).sum(-1)


def _directions(model: Any, parts: _Parts, tokens: int | str | Tensor) -> Tensor:
    """Rows of the unembedding for ``tokens``: ``[*tokens.shape, d_model]``."""
    if isinstance(tokens, str):
        from hooked.lm.text.tokens import token_id

        tokens = token_id(model, tokens)
    unembedding = parts.unembedding()
    weight = getattr(unembedding, "weight", None)
    if not isinstance(unembedding, nn.Linear) or weight is None:
        raise ValueError(f"logit_attrs needs a linear unembedding, got {type(unembedding).__name__}")
    return weight[torch.as_tensor(tokens, device=weight.device)]


__all__ = [
    "accumulated_resid",
    "apply_ln_to_stack",
    "decompose_resid",
    "head_results",
    "logit_attrs",
    "logit_lens",
    "stack_head_results",
    "unembed",
]
