"""Token-grid geometry of FreeSwim's inward sliding window.

Everything here is plain integer arithmetic on the video token grid, shared by
every attention backend so that they cannot disagree about which keys a query
may see.

Conventions
-----------
* Tokens are laid out frame-major: ``index = (t * H + h) * W + w``.
* A query at (t, h, w) sees keys in every frame, restricted to a spatial window
  of ``wh`` rows x ``ww`` columns.
* On one axis of ``n`` positions, a window of ``size`` tokens for the query at
  ``c`` starts ``(size - 1) // 2`` positions before it and ends ``size // 2``
  after it; for an even size the extra token lies after the query (below /
  right of it).
* ``inward=True`` (the paper's rule): near a border the window is shifted
  inward so it keeps its full size, i.e. ``start = clamp(c - before, 0, n - size)``.
  For odd sizes this equals the reference's centre clamp ``[d, n - 1 - d]``.
* ``inward=False`` (the no-inward ablation): the window is truncated at the
  border instead.
* When ``size >= n`` the whole axis is visible in both variants: the grid fits
  in the native receptive field, so attention along that axis is the model's
  ordinary full attention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class TokenGrid:
    """The (frames, rows, columns) token grid a video self-attention runs over."""

    t: int
    h: int
    w: int

    def __post_init__(self):
        for name, v in (("t", self.t), ("h", self.h), ("w", self.w)):
            if int(v) != v or v < 1:
                raise ValueError(f"token grid {name} must be a positive integer, got {v!r}")

    @property
    def tokens(self) -> int:
        return self.t * self.h * self.w

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.t, self.h, self.w)


@dataclass(frozen=True)
class Window:
    """Spatial window in tokens: ``h`` rows x ``w`` columns per query."""

    h: int
    w: int

    def __post_init__(self):
        for name, v in (("h", self.h), ("w", self.w)):
            if int(v) != v or v < 1:
                raise ValueError(f"window {name} must be a positive integer, got {v!r}")

    def covers(self, grid: TokenGrid) -> bool:
        """True when every query sees the whole grid (window attention == full attention)."""
        return self.h >= grid.h and self.w >= grid.w

    def clipped(self, grid: TokenGrid) -> "Window":
        return Window(min(self.h, grid.h), min(self.w, grid.w))


def as_grid(grid: TokenGrid | Sequence[int]) -> TokenGrid:
    return grid if isinstance(grid, TokenGrid) else TokenGrid(*(int(g) for g in grid))


def as_window(window: Window | Sequence[int]) -> Window:
    return window if isinstance(window, Window) else Window(*(int(s) for s in window))


def token_grid_from_latent(latent_shape: Sequence[int], patch_size: Sequence[int]) -> TokenGrid:
    """Token grid of a ``[B, C, T, H, W]`` latent under a ``(pt, ph, pw)`` patch embedding.

    Sizes that are not multiples of the patch are padded up by the model (as
    ComfyUI's ``pad_to_patch_size`` does), so the grid rounds up.
    """
    if len(latent_shape) != 5:
        raise ValueError(f"expected a 5-d video latent [B, C, T, H, W], got shape {tuple(latent_shape)}")
    if len(patch_size) != 3:
        raise ValueError(f"expected a 3-d patch size (t, h, w), got {tuple(patch_size)}")
    t, h, w = latent_shape[2:]
    pt, ph, pw = patch_size
    return TokenGrid(math.ceil(t / pt), math.ceil(h / ph), math.ceil(w / pw))


def native_window_tokens(native_px: int, px_per_token: int) -> int:
    """Window side in tokens for a native size in pixels (the reference rule).

    The reference uses half size ``d = px // 16 // 2`` and a side of ``2d + 1``
    for Wan2.1 (8x VAE, 2x2 patches = 16 px per token): 480 -> 31, 832 -> 53.
    ``px_per_token`` generalises the 16 (Wan2.2 TI2V-5B: 16x VAE x 2 = 32).
    """
    if native_px < px_per_token:
        raise ValueError(f"native size {native_px}px is smaller than one token ({px_per_token}px)")
    return 2 * (native_px // px_per_token // 2) + 1


def native_window(native_width_px: int, native_height_px: int, px_per_token: int) -> Window:
    return Window(native_window_tokens(native_height_px, px_per_token),
                  native_window_tokens(native_width_px, px_per_token))


def axis_bounds(n: int, size: int, inward: bool = True) -> tuple[list[int], list[int]]:
    """Inclusive ``(start, end)`` key positions for every query position on one axis.

    Plain Python integers, so that code traced by ``torch.compile`` (ComfyUI's
    TorchCompileModel) sees constants instead of data-dependent tensor reads.
    Both lists are non-decreasing in the query position.
    """
    if n < 1 or size < 1:
        raise ValueError(f"axis length and window size must be positive, got n={n}, size={size}")
    if size >= n:
        return [0] * n, [n - 1] * n
    before, after = (size - 1) // 2, size // 2
    if inward:
        starts = [min(max(c - before, 0), n - size) for c in range(n)]
        return starts, [s + size - 1 for s in starts]
    return [max(c - before, 0) for c in range(n)], [min(c + after, n - 1) for c in range(n)]


def axis_windows(n: int, size: int, inward: bool = True, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`axis_bounds` as int64 tensors of length ``n``."""
    starts, ends = axis_bounds(n, size, inward)
    return (torch.tensor(starts, dtype=torch.int64, device=device),
            torch.tensor(ends, dtype=torch.int64, device=device))


def keys_per_query(grid: TokenGrid, window: Window, inward: bool = True) -> torch.Tensor:
    """Number of keys each query sees, per query token (frame-major order)."""
    sh, eh = axis_windows(grid.h, window.h, inward)
    sw, ew = axis_windows(grid.w, window.w, inward)
    per_pos = (eh - sh + 1)[:, None] * (ew - sw + 1)[None, :]
    return per_pos.flatten().repeat(grid.t) * grid.t


def attention_cost(grid: TokenGrid, window: Window, heads: int, head_dim: int,
                   inward: bool = True) -> dict:
    """Forward FLOPs of window vs full self-attention (4 * N * keys * D * heads)."""
    n = grid.tokens
    sh, eh = axis_bounds(grid.h, window.h, inward)
    sw, ew = axis_bounds(grid.w, window.w, inward)
    rows = sum(e - s + 1 for s, e in zip(sh, eh))
    cols = sum(e - s + 1 for s, e in zip(sw, ew))
    window_keys = grid.t * grid.t * rows * cols
    full = 4.0 * n * n * head_dim * heads
    windowed = 4.0 * window_keys * head_dim * heads
    return {
        "tokens": n,
        "keys_per_query_mean": window_keys / n,
        "full_flops": full,
        "window_flops": windowed,
        "fraction_of_full": windowed / full,
    }
