"""Exact window attention on any device: SDPA over tiles of queries.

The query grid is cut into spatial tiles (all frames of a th x tw patch of
positions). The keys any query of a tile may see lie inside one rectangle (the
union of their windows, which is contiguous because window starts and ends grow
monotonically with the query position), so each tile is one SDPA call over that
rectangle with a boolean mask for the exact per-query windows. Memory is bounded
by ``max_score_bytes``: tiles shrink and heads are processed in groups so that
no call holds a larger score matrix.

The function is excluded from ``torch.compile`` tracing: it is a loop of SDPA
calls that compilation cannot improve, and unrolling it makes compile times of a
compiled model (ComfyUI's TorchCompileModel) grow with the number of tiles.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..geometry import TokenGrid, Window, axis_bounds

DEFAULT_MAX_SCORE_BYTES = 256 * 1024 * 1024


def _tile_sizes(grid: TokenGrid, win: Window, budget_elems: int) -> tuple[int, int]:
    """Tile (rows, cols) of queries: about a quarter window, shrunk to fit the budget."""
    th = max(1, math.ceil(win.h / 4)) if win.h < grid.h else grid.h
    tw = max(1, math.ceil(win.w / 4)) if win.w < grid.w else grid.w

    def scores(th, tw):
        rows = min(grid.h, th + win.h - 1)
        cols = min(grid.w, tw + win.w - 1)
        return (grid.t * th * tw) * (grid.t * rows * cols)

    while scores(th, tw) > budget_elems and (th > 1 or tw > 1):
        if th >= tw and th > 1:
            th = (th + 1) // 2
        else:
            tw = (tw + 1) // 2
    return th, tw


@functools.lru_cache(maxsize=16)
def device_bounds(H: int, W: int, win: Window, inward: bool, device: torch.device):
    """Window starts and ends per row and column on ``device``: copied from the host once per
    geometry (a copy from pageable memory waits for the device), not once per call."""
    sh, eh = axis_bounds(H, win.h, inward)
    sw, ew = axis_bounds(W, win.w, inward)
    return tuple(torch.tensor(b, device=device) for b in (sh, eh, sw, ew))


@torch.compiler.disable
def chunked_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             grid: TokenGrid, window: Window, *, inward: bool = True,
                             scale: float | None = None,
                             max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES,
                             out: torch.Tensor | None = None) -> torch.Tensor:
    """Window attention written into ``out`` (any strides; it may be ``q``: each tile's queries are
    read before its output is written, and tiles do not overlap) or a new tensor laid out
    ``[B, L, heads, D]``."""
    B, NH, L, D = q.shape
    T, H, W = grid.as_tuple()
    win = window.clipped(grid)
    dev = q.device
    sh, eh = axis_bounds(H, win.h, inward)
    sw, ew = axis_bounds(W, win.w, inward)

    elem_bytes = 4  # scores are accumulated in float32 at worst
    budget = max(1, max_score_bytes // elem_bytes)
    th, tw = _tile_sizes(grid, win, budget)

    q5 = q.reshape(B, NH, T, H, W, D)
    k5 = k.reshape(B, NH, T, H, W, D)
    v5 = v.reshape(B, NH, T, H, W, D)
    if out is None:   # stored as [B, L, heads, D] so the caller's merge of heads is free
        out = torch.empty((B, L, NH, D), dtype=q.dtype, device=dev).transpose(1, 2)
    out6 = out.unflatten(2, (T, H, W))    # [B, NH, T, H, W, D], a view

    bounds = {id(b): t for b, t in zip((sh, eh, sw, ew), device_bounds(H, W, win, inward, dev))}

    def band(starts, ends, q0, q1):
        """Key range of queries q0..q1-1, their mask over it, and whether it is all True."""
        k0, k1 = starts[q0], ends[q1 - 1] + 1
        full = starts[q1 - 1] == k0 and ends[q0] == k1 - 1
        if full:
            return k0, k1, None, True
        keys = torch.arange(k0, k1, device=dev)
        lo = bounds[id(starts)][q0:q1, None]
        hi = bounds[id(ends)][q0:q1, None]
        return k0, k1, (keys[None] >= lo) & (keys[None] <= hi), False

    for h0 in range(0, H, th):
        h1 = min(H, h0 + th)
        r0, r1, mh, h_full = band(sh, eh, h0, h1)
        for w0 in range(0, W, tw):
            w1 = min(W, w0 + tw)
            c0, c1, mw, w_full = band(sw, ew, w0, w1)
            nq = T * (h1 - h0) * (w1 - w0)
            nk = T * (r1 - r0) * (c1 - c0)
            if h_full and w_full:
                mask = None
            else:
                if mh is None:
                    mh = torch.ones(h1 - h0, r1 - r0, dtype=torch.bool, device=dev)
                if mw is None:
                    mw = torch.ones(w1 - w0, c1 - c0, dtype=torch.bool, device=dev)
                tile = mh[:, None, :, None] & mw[None, :, None, :]  # [th, tw, rows, cols]
                mask = (tile[None, :, :, None, :, :]
                        .expand(T, h1 - h0, w1 - w0, T, r1 - r0, c1 - c0)
                        .reshape(nq, nk))
            heads_per_call = max(1, min(NH, budget // max(1, B * nq * nk)))
            for n0 in range(0, NH, heads_per_call):
                n1 = min(NH, n0 + heads_per_call)
                qt = q5[:, n0:n1, :, h0:h1, w0:w1].reshape(B, n1 - n0, nq, D)
                kt = k5[:, n0:n1, :, r0:r1, c0:c1].reshape(B, n1 - n0, nk, D)
                vt = v5[:, n0:n1, :, r0:r1, c0:c1].reshape(B, n1 - n0, nk, D)
                o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)
                out6[:, n0:n1, :, h0:h1, w0:w1] = o.reshape(B, n1 - n0, T, h1 - h0, w1 - w0, D)
    return out
