"""Block-sparse structure of the window mask, computed from geometry alone.

FlexAttention skips key blocks a query block never sees, evaluates the mask
only on *partial* blocks, and runs *full* blocks unmasked. Building that
structure with ``create_block_mask`` evaluates the mask on every (query, key)
pair, which is impossible at 4K (680k tokens). Here it is derived from the
window bounds directly, in time and memory proportional to
``query_blocks x key_blocks`` small integers.

The tokens are expected in frame-innermost order, ``index = (h * W + w) * T + t``:
a 128-token block is then a few spatial positions in all frames, which makes
most touched blocks full (see NOTES section 4).

For a query block (a run of consecutive positions, at most a few row segments):
* keys visible to *some* query: per segment and key row, one contiguous column
  range (windows grow monotonically, so their union over a run is contiguous);
* keys visible to *every* query: the rectangle (intersection of row windows) x
  (intersection of column windows), because the mask is separable in h and w.
A key block is full when it lies inside the second set, partial when it meets
the first set but is not full.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..geometry import TokenGrid, Window, axis_windows


@dataclass
class BlockLists:
    """kv block lists per query block, in the layout ``BlockMask.from_kv_blocks`` takes."""

    kv_num_blocks: torch.Tensor       # [Q] int32: partial blocks per query block
    kv_indices: torch.Tensor          # [Q, max] int32
    full_kv_num_blocks: torch.Tensor  # [Q] int32
    full_kv_indices: torch.Tensor     # [Q, max] int32
    block_size: int
    seq_len: int

    @property
    def num_q_blocks(self) -> int:
        return self.kv_num_blocks.shape[0]

    def visited_blocks(self) -> int:
        return int(self.kv_num_blocks.sum() + self.full_kv_num_blocks.sum())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.kv_num_blocks, self.kv_indices, self.full_kv_num_blocks, self.full_kv_indices))


def _dense_from_intervals(n_rows: int, n_cols: int, rows: torch.Tensor, first: torch.Tensor,
                          last: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Boolean [n_rows, n_cols]: union of inclusive column intervals per row (difference array)."""
    diff = torch.zeros((n_rows, n_cols + 1), dtype=torch.int32, device=rows.device)
    rows, first, last = rows[valid], first[valid], last[valid]
    keep = last >= first
    rows, first, last = rows[keep], first[keep], last[keep]
    flat = diff.view(-1)
    stride = n_cols + 1
    ones = torch.ones_like(rows, dtype=torch.int32)
    flat.scatter_add_(0, rows * stride + first, ones)
    flat.scatter_add_(0, rows * stride + last + 1, -ones)
    return diff.cumsum_(dim=1)[:, :n_cols] > 0


def _ordered(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise ascending column indices of True entries, left-packed.

    The index table keeps one column per key block: inductor's CPU lowering
    requires it to span the whole key sequence.
    """
    nz = dense.nonzero()
    counts = torch.bincount(nz[:, 0], minlength=dense.shape[0])
    width = dense.shape[1]
    idx = torch.zeros((dense.shape[0], width), dtype=torch.int32, device=dense.device)
    if nz.numel():
        starts = counts.cumsum(0) - counts
        pos = torch.arange(nz.shape[0], device=dense.device) - starts[nz[:, 0]]
        idx[nz[:, 0], pos] = nz[:, 1].to(torch.int32)
    return counts.to(torch.int32), idx


def window_block_lists(grid: TokenGrid, window: Window, *, inward: bool = True,
                       block_size: int = 128, device=None, padded: bool = False) -> BlockLists:
    """Partial and full key blocks of every query block.

    ``padded``: the kernel's keys are zero-padded past ``L`` to whole blocks, so a last block
    that holds padding is never full (the mask removes the padding); without padding the
    kernel masks the sequence end itself and such a block is full when its real keys are.
    """
    T, H, W = grid.as_tuple()
    win = window.clipped(grid)
    L = grid.tokens
    BS = block_size
    nq = -(-L // BS)
    nkv = nq
    sh, eh = axis_windows(H, win.h, inward, device=device)
    sw, ew = axis_windows(W, win.w, inward, device=device)

    b = torch.arange(nq, device=device)
    p_first = (b * BS) // T
    p_last = (torch.clamp((b + 1) * BS, max=L) - 1) // T
    r_first, r_last = p_first // W, p_last // W
    col_first, col_last = p_first % W, p_last % W

    def tok_to_block_first(tok):  # first block touching token `tok`
        return tok // BS

    def full_block_range(start_tok, end_excl_tok):
        first = -(-start_tok // BS)
        if padded:
            return first, end_excl_tok // BS - 1
        last = torch.where(end_excl_tok >= L, torch.full_like(end_excl_tok, nkv - 1),
                           end_excl_tok // BS - 1)
        return first, last

    # ---- keys visible to some query of the block -------------------------------
    n_seg = int((r_last - r_first).max()) + 1
    seg = torch.arange(n_seg, device=device)
    qr = r_first[:, None] + seg[None, :]                      # [Q, S]
    seg_valid = qr <= r_last[:, None]
    qr_c = torch.minimum(qr, r_last[:, None])
    qa = torch.where(seg[None, :] == 0, col_first[:, None], torch.zeros_like(qr))
    qb = torch.where(qr == r_last[:, None], col_last[:, None], torch.full_like(qr, W - 1))
    j = torch.arange(win.h, device=device)
    kr = sh[qr_c][:, :, None] + j[None, None, :]               # [Q, S, wh]
    row_valid = seg_valid[:, :, None] & (kr <= eh[qr_c][:, :, None])
    kr = torch.minimum(kr, torch.tensor(H - 1, device=device))
    c_lo = sw[qa][:, :, None]
    c_hi = ew[qb][:, :, None]
    start_tok = (kr * W + c_lo) * T
    end_tok = (kr * W + c_hi + 1) * T - 1
    rows = b[:, None, None].expand_as(kr)
    any_dense = _dense_from_intervals(nq, nkv, rows.reshape(-1),
                                      tok_to_block_first(start_tok).reshape(-1),
                                      tok_to_block_first(end_tok).reshape(-1),
                                      row_valid.reshape(-1))

    # ---- keys visible to every query of the block ------------------------------
    rh0, rh1 = sh[r_last], eh[r_first]
    one_row = r_first == r_last
    qmin = torch.where(one_row, col_first, torch.zeros_like(col_first))
    qmax = torch.where(one_row, col_last, torch.full_like(col_last, W - 1))
    c0, c1 = sw[qmax], ew[qmin]
    has_full = (rh0 <= rh1) & (c0 <= c1)
    full_width = (c0 == 0) & (c1 == W - 1)
    r = rh0[:, None] + j[None, :]                               # [Q, wh]
    r_valid = has_full[:, None] & (r <= rh1[:, None])
    # A full-width rectangle is one contiguous token run: keep it as one interval
    # so blocks straddling two of its rows count as full.
    r_valid &= ~full_width[:, None] | (j[None, :] == 0)
    row_end = torch.where(full_width[:, None], rh1[:, None].expand_as(r), r)
    f_start = (r * W + c0[:, None]) * T
    f_end_excl = (row_end * W + c1[:, None] + 1) * T
    f_first, f_last = full_block_range(f_start, f_end_excl)
    full_dense = _dense_from_intervals(nq, nkv, b[:, None].expand_as(r).reshape(-1),
                                       f_first.reshape(-1), f_last.reshape(-1),
                                       r_valid.reshape(-1))
    any_dense &= ~full_dense  # now: partial blocks only
    kv_num, kv_idx = _ordered(any_dense)
    del any_dense
    full_num, full_idx = _ordered(full_dense)
    return BlockLists(kv_num, kv_idx, full_num, full_idx, BS, L)
