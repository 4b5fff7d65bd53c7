"""Independent references for the tests.

Written from the method's description (NOTES.md section 1 and the parity README,
"centred bounds plus inward shifts"), deliberately not from freeswim_core, so
that the library is checked against something it does not share code with.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def axis_allowed(n: int, size: int, inward: bool) -> torch.Tensor:
    """[n, n] bool: may a query at position c (row) see a key at position k (column)."""
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for c in range(n):
        if size >= n:
            lo, hi = 0, n - 1
        else:
            lo, hi = c - (size - 1) // 2, c + size // 2
            if inward:
                if lo < 0:          # near the top/left border: grow the far side
                    hi += -lo
                    lo = 0
                if hi > n - 1:      # near the bottom/right border: grow the near side
                    lo -= hi - (n - 1)
                    hi = n - 1
            else:
                lo, hi = max(lo, 0), min(hi, n - 1)
        allowed[c, lo:hi + 1] = True
    return allowed


def dense_window_mask(grid, window, inward: bool = True) -> torch.Tensor:
    """[L, L] bool over frame-major tokens (index = (t*H + h)*W + w)."""
    T, H, W = grid
    ah = axis_allowed(H, window[0], inward)
    aw = axis_allowed(W, window[1], inward)
    spatial = (ah[:, None, :, None] & aw[None, :, None, :]).reshape(H * W, H * W)
    return spatial.repeat(T, T)


def masked_attention(q, k, v, mask, scale=None):
    """Plain softmax attention in float64 with a boolean mask [L, L]."""
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    return (s.softmax(-1) @ v.double())


def full_attention(q, k, v, scale=None):
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scale)


def window_override(grid, window, scale, inward=True, every_other_call=False):
    """A test-owned ComfyUI attention override: dense masked attention for the
    video self-attention calls of a model whose token grid is ``grid``.

    Self-attention is recognised the simple way a test can afford: q and k both
    have the grid's token count (the tests pick grids whose token count differs
    from every conditioning length), or, with ``every_other_call``, by position:
    a T2V block makes two attention calls, self-attention first.
    """
    T, H, W = grid
    L = T * H * W
    mask = dense_window_mask(grid, window, inward)
    calls = {"self": 0, "other": 0}

    def override(func, *args, **kwargs):
        q, k, v = args[:3]
        heads = kwargs["heads"] if "heads" in kwargs else args[3]
        if every_other_call:
            is_self = (calls["self"] + calls["other"]) % 2 == 0
        else:
            is_self = q.shape[1] == L and k.shape[1] == L and kwargs.get("mask") is None
        if is_self:
            calls["self"] += 1
            B, _, C = q.shape
            d = C // heads
            qh, kh, vh = (t.reshape(B, L, heads, d).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
            return out.transpose(1, 2).reshape(B, L, C)
        calls["other"] += 1
        return func(*args, **kwargs)

    override.calls = calls
    return override


def reference_scale(head_dim: int, native_tokens: int = 30 * 52) -> float:
    """sqrt(log_N(2N) / head_dim), the official self-attention scale (N = 1560 in the reference)."""
    return math.sqrt((math.log(2 * native_tokens) / math.log(native_tokens)) / head_dim)


def dual_path_reference(model, grid, window, scale, inward=True, image_tokens=None, override_image=False):
    """A test-owned dual path, written from the parity README's description (items 3, 5, 10):
    every model call's rows are duplicated as [window rows, full rows] from the same latent;
    self-attention is masked on the window half and full on the other, both with ``scale``;
    the text cross-attention of each window row is the one computed from its full twin's
    query; only the window half is returned. Applied to every row (the no-cache variant).

    For I2V models (``image_tokens`` CLIP tokens), the image cross-attention keeps each
    row's own query unless ``override_image``.

    Returns a clone of ``model`` carrying this as a DIFFUSION_MODEL wrapper plus an
    attention override (ComfyUI's own extension points), independent of the pack.
    """
    import comfy.patcher_extension
    T, H, W = grid
    L = T * H * W
    mask = dense_window_mask(grid, window, inward)

    def override(func, *args, **kwargs):
        q, k, v = args[:3]
        heads = kwargs["heads"] if "heads" in kwargs else args[3]
        B2, Lq, C = q.shape
        half = B2 // 2
        d = C // heads
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2)  # noqa: E731
        merge = lambda t: t.transpose(1, 2).reshape(t.shape[0], -1, C)  # noqa: E731
        if Lq == L and k.shape[1] == L:
            win = F.scaled_dot_product_attention(split(q[:half]), split(k[:half]), split(v[:half]),
                                                 attn_mask=mask, scale=scale)
            full = F.scaled_dot_product_attention(split(q[half:]), split(k[half:]), split(v[half:]),
                                                  scale=scale)
            return torch.cat([merge(win), merge(full)])
        if k.shape[1] == image_tokens and not override_image:
            return merge(F.scaled_dot_product_attention(split(q), split(k), split(v)))
        cross = F.scaled_dot_product_attention(split(q[half:]), split(k[half:]), split(v[half:]))
        return torch.cat([merge(cross), merge(cross)])

    def wrapper(executor, x, timestep, context, clip_fea=None, time_dim_concat=None,
                transformer_options={}, **kwargs):
        to = {**transformer_options, "optimized_attention_override": override}
        twice = lambda t: None if t is None else torch.cat([t, t])  # noqa: E731
        out = executor(twice(x), twice(timestep), twice(context), twice(clip_fea), time_dim_concat, to, **kwargs)
        return out[: x.shape[0]]

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test-reference", wrapper)
    return m
