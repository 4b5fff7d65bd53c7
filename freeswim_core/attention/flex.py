"""Window attention with FlexAttention (compiled), block-sparse from geometry.

* Tokens are reordered frame-innermost inside the call, ``(t, h, w) -> (h, w, t)``,
  so a 128-token block is a few spatial positions across all frames and most
  visited key blocks are full (no mask evaluated there).
* The BlockMask is built from the window bounds (:mod:`.blocks`) and cached per
  geometry, never by evaluating the mask over Q x KV.
* FlexAttention kernels have overflowed 32-bit index arithmetic past 2**31
  elements (14B at 4K: 40 heads x 680k tokens x 128); calls are split over
  batch rows and head groups so no single call reaches that size. The split also
  bounds the transient copies the reordering makes.
"""
from __future__ import annotations

import functools
import threading

import torch

from ..geometry import TokenGrid, Window, axis_windows
from .blocks import window_block_lists

INDEX_LIMIT = 2**31 - 1
# Bytes one call's reordered q, k, v copies and its output may take together: the transient
# memory of the window backend beyond its inputs and result (4 tensors of one head group).
COPY_BUDGET = 1 << 30

_lock = threading.Lock()
_compiled = None


def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except Exception:
        return False
    return True


def compiled_flex_attention():
    """``torch.compile(flex_attention)``, created once per process."""
    global _compiled
    with _lock:
        if _compiled is None:
            from torch.nn.attention.flex_attention import flex_attention
            _compiled = torch.compile(flex_attention, dynamic=False)
        return _compiled


def window_mask_mod(grid: TokenGrid, window: Window, inward: bool, device):
    """mask_mod over frame-innermost token indices (used on partial blocks only)."""
    T, H, W = grid.as_tuple()
    L = grid.tokens
    win = window.clipped(grid)
    sh, eh = axis_windows(H, win.h, inward, device=device)
    sw, ew = axis_windows(W, win.w, inward, device=device)

    def mask_mod(b, h, q_idx, kv_idx):
        qp = torch.clamp(q_idx, max=L - 1) // T
        kp = torch.clamp(kv_idx, max=L - 1) // T
        qh, qw = qp // W, qp % W
        kh, kw = kp // W, kp % W
        return (kh >= sh[qh]) & (kh <= eh[qh]) & (kw >= sw[qw]) & (kw <= ew[qw])

    return mask_mod


@torch.compiler.disable
def window_block_mask(grid: TokenGrid, window: Window, inward: bool, device: torch.device,
                      block_size: int = 128):
    """BlockMask for the window in frame-innermost order (cached per geometry and device).

    Built outside any ``torch.compile`` trace: it is host-side integer work.
    """
    return _cached_block_mask(grid, window, inward, torch.device(device), block_size)


@functools.lru_cache(maxsize=8)
def _cached_block_mask(grid: TokenGrid, window: Window, inward: bool, device: torch.device,
                      block_size: int = 128):
    from torch.nn.attention.flex_attention import BlockMask
    lists = window_block_lists(grid, window, inward=inward, block_size=block_size, device=device)
    return BlockMask.from_kv_blocks(
        lists.kv_num_blocks[None, None], lists.kv_indices[None, None],
        lists.full_kv_num_blocks[None, None], lists.full_kv_indices[None, None],
        BLOCK_SIZE=block_size, mask_mod=window_mask_mod(grid, window, inward, device),
        seq_lengths=(lists.seq_len, lists.seq_len), compute_q_blocks=False)


def head_group(NH: int, L: int, D: int, element_bytes: int, budget: int | None = None) -> int:
    """Heads per call: the largest divisor of ``NH`` (equal groups: one compiled shape) whose
    four copies (q, k, v reordered and the kernel's output) fit ``budget`` and whose tensors stay
    under the index limit."""
    budget = COPY_BUDGET if budget is None else budget
    for heads in sorted((h for h in range(1, NH + 1) if NH % h == 0), reverse=True):
        if heads * L * D <= INDEX_LIMIT and 4 * heads * L * D * element_bytes <= budget:
            return heads
    return 1


def _call_groups(B: int, NH: int, L: int, D: int, element_bytes: int = 2):
    """(batch slice, head slice) pairs, one batch row and an equal head group at a time."""
    heads = head_group(NH, L, D, element_bytes)
    if heads == NH and 4 * B * NH * L * D * element_bytes <= COPY_BUDGET and B * NH * L * D <= INDEX_LIMIT:
        yield slice(0, B), slice(0, NH)
        return
    for b in range(B):
        for h0 in range(0, NH, heads):
            yield slice(b, b + 1), slice(h0, h0 + heads)


# Set on an exception raised after some head groups were written into an ``out`` that aliases
# ``q``: those queries are gone, so no other backend may redo the call. The exception itself
# (an out-of-memory error, say) is re-raised unchanged for the host to handle.
PARTIAL_OUTPUT = "freeswim_partial_output"


def flex_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          grid: TokenGrid, window: Window, *, inward: bool = True,
                          scale: float | None = None, block_size: int = 128,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """Window attention of ``q``, ``k``, ``v`` (``[B, heads, L, D]``, frame-major tokens) written into
    ``out`` (any strides; it may be ``q``) or a new tensor laid out ``[B, L, heads, D]``."""
    B, NH, L, D = q.shape
    T, H, W = grid.as_tuple()
    block_mask = window_block_mask(grid, window, inward, q.device, block_size)
    flex = compiled_flex_attention()
    if out is None:
        out = torch.empty((B, L, NH, D), dtype=q.dtype, device=q.device).transpose(1, 2)

    def to_inner(x):  # [b, n, (t h w), d] -> [b, n, (h w t), d]
        b, n = x.shape[:2]
        return x.reshape(b, n, T, H, W, D).permute(0, 1, 3, 4, 2, 5).reshape(b, n, L, D)

    written = False
    try:
        for bs, hs in _call_groups(B, NH, L, D, q.element_size()):
            o = flex(to_inner(q[bs, hs]), to_inner(k[bs, hs]), to_inner(v[bs, hs]),
                     block_mask=block_mask, scale=scale)
            b, n = o.shape[:2]
            dest = out[bs, hs].unflatten(2, (T, H, W))            # [b, n, T, H, W, D], a view
            dest.copy_(o.reshape(b, n, H, W, T, D).permute(0, 1, 4, 2, 3, 5))
            written = True
            del o
    except Exception as exc:
        if written and torch._C._is_alias_of(out, q):
            setattr(exc, PARTIAL_OUTPUT, True)
            exc.add_note("FreeSwim: the window attention failed part-way with its output written over "
                         "its queries; the call cannot be retried with another backend.")
        raise
    return out
