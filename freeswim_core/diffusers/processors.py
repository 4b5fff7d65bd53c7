"""Attention processors for diffusers' ``WanTransformer3DModel``, FreeSwim's calls through the core.

They compute q, k and v exactly as diffusers' own ``WanAttnProcessor`` does
(projections, RMS q/k norms, rotary embedding, the I2V image context), then hand
the rows to :mod:`freeswim_core.dual.calls`: window attention for the caller's
rows and full attention for the twins in self-attention; in cross-attention each
window row takes its twin's output, or its cached features on a reuse call.
Without a FreeSwim plan for the call (FreeSwim off for it) they run diffusers'
own processor.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ..dual.calls import cross_rows, self_attention_rows, take_rows
from ..planner import Mode

if TYPE_CHECKING:
    from .install import FreeSwim

TEXT_TOKENS = 512       # diffusers' Wan: the image context precedes the 512 text tokens (I2V)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """diffusers' Wan rotary embedding of ``[B, L, heads, D]`` (interleaved pairs)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class _Processor:
    def __init__(self, fs: "FreeSwim", block: int, original):
        self.fs = fs
        self.block = block
        self.original = original

    # diffusers sets these on every processor (set_attention_backend, enable_parallelism), in either
    # order with FreeSwim's install: they belong to the processor FreeSwim hands its other calls to
    @property
    def _attention_backend(self):
        return getattr(self.original, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value):
        self.original._attention_backend = value

    @property
    def _parallel_config(self):
        return getattr(self.original, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, value):
        self.original._parallel_config = value

    def _attend(self, attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                heads: Optional[int] = None) -> torch.Tensor:
        """diffusers' attention (its dispatcher, default scale) over ``[B, L, heads * D]`` rows, on this
        rank's tokens and heads only (no context-parallel exchange: FreeSwim's processors make it)."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        heads = heads or attn.heads
        if k.shape[0] != q.shape[0]:              # one context for every row (as the official pipelines pass)
            k, v = k.expand(q.shape[0], -1, -1), v.expand(q.shape[0], -1, -1)
        out = dispatch_attention_fn(q.unflatten(2, (heads, -1)), k.unflatten(2, (heads, -1)),
                                    v.unflatten(2, (heads, -1)), attn_mask=None, dropout_p=0.0, is_causal=False,
                                    backend=self._attention_backend)
        return out.flatten(2, 3).type_as(q)

    def _rows(self, attn, q, k, v):
        if k.shape[0] != q.shape[0]:
            k, v = k.expand(q.shape[0], -1, -1), v.expand(q.shape[0], -1, -1)
        return lambda rows: self._attend(attn, take_rows(q, rows), take_rows(k, rows), take_rows(v, rows))


class FreeSwimSelfAttention(_Processor):
    """``attn1``: window rows and full-attention twins at FreeSwim's softmax scale. Not traced by
    ``torch.compile`` (``compile_repeated_blocks`` compiles the blocks around it): it dispatches on
    the call's plan; the window kernel compiles on its own."""

    @torch.compiler.disable
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        call = self.fs.current_call
        if call is None or call.window is None or encoder_hidden_states is not None or attention_mask is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections
        q, k, v = _get_qkv_projections(attn, hidden_states, None)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (t.unflatten(2, (attn.heads, -1)) for t in (q, k, v))
        if rotary_emb is not None:
            q, k = _rotary(q, *rotary_emb), _rotary(k, *rotary_emb)
        q, k, v = (t.flatten(2, 3) for t in (q, k, v))
        heads, ulysses = attn.heads, self.fs.ulysses
        if ulysses is not None:                   # every token of the grid, for this rank's heads
            tokens = call.window.grid.tokens
            q, k, v = (ulysses.gather_tokens(t, heads, tokens) for t in (q, k, v))
            heads //= ulysses.degree
        self.fs.reached.add(self.block)
        count = call.layout.rows if call.layout is not None else q.shape[0]
        out = self_attention_rows(call.window, count, lambda a, b, c: self._attend(attn, a, b, c, heads), q, k, v,
                                  heads, in_place=q.is_contiguous(), window=self.fs.run.window_rows)
        if ulysses is not None:
            out = ulysses.scatter_tokens(out, heads)
        out = attn.to_out[0](out.type_as(hidden_states))
        return attn.to_out[1](out)


class FreeSwimCrossAttention(_Processor):
    """``attn2``: each window row takes its twin's cross-attention output, or its cached features
    (not traced by ``torch.compile``, as the self-attention processor)."""

    @torch.compiler.disable
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        call = self.fs.current_call
        self.fs.ran.add(self.block)              # the block ran (its self-attention came first)
        if call is None or call.mode is Mode.OFF or encoder_hidden_states is None or attention_mask is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        from diffusers.models.transformers.transformer_wan import (_get_added_kv_projections,
                                                                   _get_qkv_projections)
        image = None
        if attn.add_k_proj is not None:
            split = encoder_hidden_states.shape[1] - TEXT_TOKENS
            image, encoder_hidden_states = encoder_hidden_states[:, :split], encoder_hidden_states[:, split:]
        q, k, v = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        q, k = attn.norm_q(q), attn.norm_k(k)
        out = self._rows_of(call, "text", q, k, v, attn)
        if image is not None:
            k_img, v_img = _get_added_kv_projections(attn, image)
            k_img = attn.norm_added_k(k_img)
            if call.override_image:
                out = out + self._rows_of(call, "image", q, k_img, v_img, attn)
            else:
                out = out + self._attend(attn, q, k_img, v_img)
        out = attn.to_out[0](out.type_as(hidden_states))
        return attn.to_out[1](out)

    def _rows_of(self, call, kind: str, q, k, v, attn) -> torch.Tensor:
        key = ("block", self.block, kind)
        compute = self._rows(attn, q, k, v)
        total = q.shape[0]
        if call.mode is Mode.REUSE:
            out = cross_rows(total, compute, q, reuse_rows=call.reuse_rows,
                             read=lambda r: call.store.get(call.keys[r], key))
            return out if out is not None else compute(list(range(total)))   # a block without features
        store = (lambda src, features: call.store.put(call.keys[src], key, features)) if call.mode is Mode.GUIDE else None
        return cross_rows(total, compute, q, twin_of=call.layout.twin_of(), write=store)
