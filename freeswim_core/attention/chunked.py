"""Exact window attention on any device: SDPA over tiles of queries.

The query grid is cut into spatial tiles (all frames of a th x tw patch of
positions). The keys any query of a tile may see lie inside one rectangle (the
union of their windows, which is contiguous because window starts and ends grow
monotonically with the query position), so each tile is one attention over that
rectangle with a mask for the exact per-query windows.

Tiles are batched: the mask of a tile depends only on its rows' and columns'
windows relative to its rectangle, which is the same for every tile away from
the borders. Tiles are grouped by that pattern; each group's mask is built once
per call (on CUDA already additive, in the compute dtype, with rows padded for
the memory-efficient kernel, so SDPA converts and copies nothing). On CUDA, where
a tile's SDPA call is too small to fill the device, as many tiles of a group as
the budget allows go through one call; on the CPU one tile per call is faster
(the stacked copies cost more than the calls they save). Nothing in the
loop reads a device value (no synchronisation).

Memory: tiles shrink until one tile's mask (one head's scores) fits
``max_score_bytes``. Where SDPA's memory-efficient kernel takes the call (CUDA,
checked explicitly, then required), scores are never materialised, and heads and
tiles per call are bounded by the call's copies (:data:`COPY_BUDGET`); elsewhere
(the math and CPU kernels) by the scores every head and tile of the call holds.

The function is excluded from ``torch.compile`` tracing: it is a loop of SDPA
calls that compilation cannot improve, and unrolling it makes compile times of a
compiled model (ComfyUI's TorchCompileModel) grow with the number of tiles.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..geometry import TokenGrid, Window, axis_bounds

DEFAULT_MAX_SCORE_BYTES = 256 * 1024 * 1024
# The SDPA kernels a fused call is restricted to (asked of torch first, see :func:`_fused`).
FUSED_BACKENDS = (SDPBackend.EFFICIENT_ATTENTION,)
# Bytes of one fused call's gathered q, k, v and its output: the transient memory of the chunked
# backend on CUDA beyond its inputs, result and mask.
COPY_BUDGET = 1 << 30


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


@dataclass(frozen=True)
class _Band:
    """A run of query positions on one axis and the key range their windows span."""

    q0: int
    q1: int
    k0: int
    k1: int
    pattern: tuple       # (queries, keys, starts and ends relative to k0): equal patterns, equal masks
    full: bool           # every query sees every key of the range


def _bands(starts: list[int], ends: list[int], step: int) -> list[_Band]:
    bands = []
    for q0 in range(0, len(starts), step):
        q1 = min(len(starts), q0 + step)
        k0, k1 = starts[q0], ends[q1 - 1] + 1
        rel = tuple((starts[i] - k0, ends[i] - k0) for i in range(q0, q1))
        full = all(a == 0 and b == k1 - k0 - 1 for a, b in rel)
        bands.append(_Band(q0, q1, k0, k1, (q1 - q0, k1 - k0, rel), full))
    return bands


def _axis_mask(band: _Band, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """``[queries, keys]`` boolean: key ``k0 + j`` is in query ``q0 + i``'s window (on the device)."""
    keys = torch.arange(band.k0, band.k1, device=starts.device)
    return (keys[None] >= starts[band.q0:band.q1, None]) & (keys[None] <= ends[band.q0:band.q1, None])


def _tile_mask(T: int, hb: _Band, wb: _Band, bounds, dtype: torch.dtype, additive: bool):
    """The mask of every tile with ``hb``'s row pattern and ``wb``'s column pattern, or None when
    all its keys are visible. ``additive`` (on CUDA): 0 / -inf in the compute dtype, its rows padded
    to 16 elements, the form SDPA's memory-efficient kernel takes without a copy."""
    if hb.full and wb.full:
        return None
    sh, eh, sw, ew = bounds
    dev = sh.device
    th, rows = hb.pattern[:2]
    tw, cols = wb.pattern[:2]
    mh = _axis_mask(hb, sh, eh) if not hb.full else torch.ones(th, rows, dtype=torch.bool, device=dev)
    mw = _axis_mask(wb, sw, ew) if not wb.full else torch.ones(tw, cols, dtype=torch.bool, device=dev)
    tile = mh[:, None, :, None] & mw[None, :, None, :]                     # [th, tw, rows, cols]
    nq, nk = T * th * tw, T * rows * cols
    allowed = tile[None, :, :, None].expand(T, th, tw, T, rows, cols).reshape(nq, nk)
    if not additive:
        return allowed
    padded = -(-nk // 16) * 16
    bias = torch.zeros((nq, padded), dtype=dtype, device=dev)[:, :nk]
    return bias.masked_fill_(~allowed, float("-inf"))


def _fused(q: torch.Tensor, nq: int, nk: int, mask) -> bool:
    """Will SDPA's memory-efficient kernel (scores never materialised) take a call of this shape?
    Asked of torch itself, on CUDA only."""
    if not (q.is_cuda and torch.cuda.is_available() and torch.backends.cuda.mem_efficient_sdp_enabled()):
        return False
    D = q.shape[-1]
    qt = q.new_empty((1, 1, nq, D))
    kt = q.new_empty((1, 1, nk, D))
    attn = None if mask is None else mask[None, None]
    params = torch.backends.cuda.SDPAParams(qt, kt, kt, attn, 0.0, False, False)
    return bool(torch.backends.cuda.can_use_efficient_attention(params, False))


def _kernel_choice(fused: bool):
    """A new context for one SDPA call: restricted to :data:`FUSED_BACKENDS` where fused. Made per
    call because ``sdpa_kernel`` is a generator-based context manager, which can be entered once."""
    return sdpa_kernel(list(FUSED_BACKENDS)) if fused else contextlib.nullcontext()


def call_sizes(fused: bool, batch_tiles: bool, B: int, NH: int, nq: int, nk: int, D: int,
               element_bytes: int, budget_elems: int, copy_budget: int = COPY_BUDGET) -> tuple[int, int]:
    """(heads, tiles) per SDPA call. Fused: one head of one tile holds its gathered q, k, v and
    output, nothing per score; otherwise every head and tile holds ``B x nq x nk`` scores."""
    if fused:
        per = B * (2 * nq + 2 * nk) * D * element_bytes
        heads = max(1, min(NH, copy_budget // per))
        tiles = max(1, copy_budget // (NH * per))
    else:
        per = B * nq * nk
        heads = max(1, min(NH, budget_elems // per))
        tiles = max(1, budget_elems // (NH * per))
    return heads, (tiles if batch_tiles and heads == NH else 1)


@torch.compiler.disable
def chunked_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             grid: TokenGrid, window: Window, *, inward: bool = True,
                             scale: float | None = None,
                             max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES,
                             out: torch.Tensor | None = None,
                             batch_tiles: bool | None = None,
                             additive_masks: bool | None = None) -> torch.Tensor:
    """Window attention written into ``out`` (any strides; it may be ``q``: the queries of every
    SDPA call are copied out before its outputs are written, and tiles do not overlap) or a new
    tensor laid out ``[B, L, heads, D]``. ``batch_tiles``: several tiles per SDPA call (default:
    where the memory-efficient kernel takes the calls, on CUDA); ``additive_masks``: masks as
    additive biases with aligned rows (default: on CUDA)."""
    B, NH, L, D = q.shape
    T, H, W = grid.as_tuple()
    win = window.clipped(grid)
    sh, eh = axis_bounds(H, win.h, inward)
    sw, ew = axis_bounds(W, win.w, inward)

    elem_bytes = 4  # scores are accumulated in float32 at worst
    budget = max(1, max_score_bytes // elem_bytes)
    th, tw = _tile_sizes(grid, win, budget)

    q5 = q.unflatten(2, (T, H, W))
    k5 = k.unflatten(2, (T, H, W))
    v5 = v.unflatten(2, (T, H, W))
    if out is None:   # stored as [B, L, heads, D] so the caller's merge of heads is free
        out = torch.empty((B, L, NH, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    out6 = out.unflatten(2, (T, H, W))    # [B, NH, T, H, W, D], a view
    bounds = device_bounds(H, W, win, inward, q.device)

    groups: dict[tuple, list] = {}
    for hb in _bands(sh, eh, th):
        for wb in _bands(sw, ew, tw):
            groups.setdefault((hb.pattern, wb.pattern), []).append((hb, wb))

    for tiles in groups.values():
        hb0, wb0 = tiles[0]
        (qh, rows), (qw, cols) = hb0.pattern[:2], wb0.pattern[:2]
        nq, nk = T * qh * qw, T * rows * cols
        mask = _tile_mask(T, hb0, wb0, bounds, q.dtype, q.is_cuda if additive_masks is None else additive_masks)
        fused = _fused(q, nq, nk, mask)
        heads, per_call = call_sizes(fused, fused if batch_tiles is None else batch_tiles, B, NH, nq, nk, D,
                                     q.element_size(), budget)
        for n0 in range(0, NH, heads):
            n1 = min(NH, n0 + heads)
            for i in range(0, len(tiles), per_call):
                batch = tiles[i:i + per_call]

                def gather(x5, keys: bool):
                    parts = [x5[:, n0:n1, :, hb.k0:hb.k1, wb.k0:wb.k1] if keys else
                             x5[:, n0:n1, :, hb.q0:hb.q1, wb.q0:wb.q1] for hb, wb in batch]
                    n = nk if keys else nq
                    if len(parts) == 1:
                        return parts[0].reshape(B, n1 - n0, n, D)
                    return torch.stack(parts).view(len(parts) * B, n1 - n0, n, D)

                with _kernel_choice(fused):
                    o = F.scaled_dot_product_attention(gather(q5, False), gather(k5, True), gather(v5, True),
                                                       attn_mask=mask, scale=scale)
                o = o.view(len(batch), B, n1 - n0, T, qh, qw, D)
                for j, (hb, wb) in enumerate(batch):
                    out6[:, n0:n1, :, hb.q0:hb.q1, wb.q0:wb.q1] = o[j]
    return out
