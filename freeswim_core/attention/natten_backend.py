"""The window through NATTEN: FreeSwim's inward window over all frames is 3-D neighborhood attention.

Neighborhood attention shifts a query's window inward at the borders by definition (its
centre is clamped), which is FreeSwim's inward window; over all frames it is a kernel of
``(frames, window rows, window columns)`` on the ``(T, H, W)`` token grid. One latent frame
is 2-D neighborhood attention (NATTEN refuses a kernel of size 1).

NATTEN takes heads-last tensors, ``[B, T, H, W, heads, D]``: the hosts' ``[B, L, heads * D]``
(ComfyUI's attention calls, diffusers' processors) viewed, with no copy; the window
backends' ``[B, heads, L, D]`` argument is usually that view transposed, so transposing back
costs nothing either. NATTEN picks its own kernel (Hopper, Blackwell, CUTLASS where its
compiled library has them, else its FlexAttention one, ``flex-fna``, which a build without
CUDA has and which runs on a CPU).

Memory: NATTEN's Hopper and Blackwell forwards copy q, k and v into tiles ("token permute",
padded to whole tiles) and copy the output back, so one call over every head would hold about
five copies of the whole row (35 GB for a 14B row at 4K). Calls go one batch row and an equal
head group at a time, the largest whose copies fit :data:`COPY_BUDGET` (as the flex backend's
reordered copies do; one head where a head's copies are larger, 1.2 GB at 14B 4K), each group
written into ``out`` (which may be q) as it finishes.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch

from .. import probes
from ..geometry import TokenGrid, Window
from .flex import COPY_BUDGET, largest_head_group

# What NATTEN's fused forward holds beside its inputs at its peak, per call, in its largest case (Hopper
# and Blackwell FNA, torch token permute): q, k and v token-permuted, the kernel's permuted output and
# its un-permuted copy, each padded to whole tiles; where padding is cut off a row or column axis (not
# only frames), the unpadded output too; and the log-sum-exp, float32, permuted and un-permuted.
# Its compiled token permute writes the unpadded output directly; CUTLASS FNA holds less (contiguous
# q, k, v and the output).
PADDED_COPIES = 5
LSE_COPIES = 2
# Largest tile extent per token axis over NATTEN's default fused forward tiles, q and kv (Hopper 3-D
# (4, 4, 8) and (4, 4, 4), Blackwell 3-D (8, 4, 8); Hopper 2-D (16, 8) and (8, 8), Blackwell 2-D
# (16, 16)): a token axis is padded to at most a multiple of it.
TILE_BOUND = {3: (8, 4, 8), 2: (16, 16)}


@functools.lru_cache(maxsize=1)
def natten_module():
    """NATTEN, or None where it is not installed (it is optional)."""
    try:
        import natten
    except Exception:
        return None
    return natten


def natten_compiled() -> bool:
    """Has this NATTEN its compiled library (the fused CUDA kernels)? A build without CUDA has not."""
    natten = natten_module()
    return bool(natten is not None and getattr(natten, "HAS_LIBNATTEN", False))


def kernel_of(grid: TokenGrid, window: Window) -> tuple[int, ...]:
    """NATTEN's kernel for the window on ``grid``: every frame, the window rows and columns (at most the
    grid's); 2-D for one frame."""
    spatial = (min(window.h, grid.h), min(window.w, grid.w))
    return spatial if grid.t == 1 else (grid.t,) + spatial


def cannot_run(q: torch.Tensor, grid: TokenGrid, window: Window, inward: bool) -> Optional[str]:
    """Why NATTEN cannot run this window (None: it can)."""
    if natten_module() is None:
        return "NATTEN is not installed (README, FreeSwim Window Attention Patch: how to install its wheels)"
    if not inward:
        return "inward=False truncates windows at borders; neighborhood attention always shifts them inward"
    if min(kernel_of(grid, window)) < 2:
        return "a window of one row or column (NATTEN refuses a kernel of size 1)"
    spatial = kernel_of(grid, window)[-2:]
    if any(k % 2 == 0 and k < size for k, size in zip(spatial, (grid.h, grid.w))):
        return (f"an even window ({window.h}x{window.w}): NATTEN places even windows one token off FreeSwim's "
                f"(the native sizes give odd windows)")
    return None


def fused_cannot_run(q: torch.Tensor, grid: TokenGrid, window: Window, inward: bool, *others) -> Optional[str]:
    """Why NATTEN's compiled fused kernels cannot run this call (None: they can): what ``auto`` asks."""
    reason = cannot_run(q, grid, window, inward)
    if reason is not None:
        return reason
    if not q.is_cuda:
        return f"its fused kernels run on CUDA (this call is on {q.device.type})"
    if not natten_compiled():
        return ("this NATTEN has no compiled library (built without CUDA): install NATTEN's wheel for your torch "
                "and CUDA (README)")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"dtype {q.dtype}"
    natten = natten_module()
    heads_last = _heads_last(q, grid)
    try:
        backends = natten.backends.get_compatible_backends(heads_last, heads_last, heads_last,
                                                          torch_compile=False)
    except Exception as exc:                 # NATTEN's own check: an answer, not a failure to hide
        return f"NATTEN's check: {exc}"
    fused = [b for b in backends if b != "flex-fna"]
    return None if fused else f"NATTEN has no fused kernel for head dim {q.shape[-1]}, {q.dtype} on this GPU"


def _axes(grid: TokenGrid) -> tuple[int, ...]:
    return (grid.h, grid.w) if grid.t == 1 else (grid.t, grid.h, grid.w)


def padded_tokens(grid: TokenGrid) -> int:
    """Tokens of one row after NATTEN's token permute pads each axis to whole tiles (a bound over
    its default tiles, :data:`TILE_BOUND`)."""
    axes = _axes(grid)
    return math.prod(-(-n // t) * t for n, t in zip(axes, TILE_BOUND[len(axes)]))


def call_bytes(heads: int, grid: TokenGrid, head_dim: int, element_bytes: int = 2) -> int:
    """Transient bytes of one NATTEN call of ``heads`` heads of one row (:data:`PADDED_COPIES`)."""
    axes = _axes(grid)
    inner = axes[-2:]                       # cutting padding off these copies; off frames it is a view
    cut_copy = any(n % t for n, t in zip(inner, TILE_BOUND[len(axes)][-2:]))
    per_padded = PADDED_COPIES * head_dim * element_bytes + LSE_COPIES * 4
    return heads * (padded_tokens(grid) * per_padded + (grid.tokens * head_dim * element_bytes if cut_copy else 0))


def head_group(NH: int, grid: TokenGrid, head_dim: int, element_bytes: int = 2, budget: int | None = None) -> int:
    """Heads per call: the largest divisor of ``NH`` whose call fits ``budget`` (:data:`COPY_BUDGET`,
    :func:`call_bytes`); one head where none does."""
    return largest_head_group(NH, lambda heads: call_bytes(heads, grid, head_dim, element_bytes),
                              COPY_BUDGET if budget is None else budget)


def _heads_last(x: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """``[B, heads, L, D]`` -> ``[B, T, H, W, heads, D]`` (``[B, H, W, heads, D]`` for one frame): a view
    where ``x`` is a transposed ``[B, L, heads, D]``, as the hosts' calls give it."""
    b, heads, _, d = x.shape
    t = x.transpose(1, 2)
    shape = (b, grid.h, grid.w, heads, d) if grid.t == 1 else (b, grid.t, grid.h, grid.w, heads, d)
    return t.reshape(shape)


@torch.compiler.disable
def natten_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: TokenGrid, window: Window,
                            *, scale: float | None = None, out: torch.Tensor | None = None,
                            fused: bool = False) -> torch.Tensor:
    """Window attention (inward) of ``[B, heads, L, D]`` q, k, v through NATTEN's ``na3d`` (``na2d`` for one
    frame), one batch row and head group (:func:`head_group`) a call, written into ``out`` (any strides; it
    may be q) or a new tensor laid out ``[B, L, heads, D]``. ``fused``: NATTEN picks its fastest kernel,
    else its FlexAttention one (``flex-fna``, any device)."""
    B, NH, L, D = q.shape
    kernel = kernel_of(grid, window)
    run = probes.natten_kernel_stand_in()
    if run is None:
        fn = natten_module().na2d if len(kernel) == 2 else natten_module().na3d
        run = functools.partial(fn, backend=None if fused else "flex-fna")
    if out is None:
        out = torch.empty((B, L, NH, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    heads = head_group(NH, grid, D, q.element_size())
    for b in range(B):
        for h0 in range(0, NH, heads):
            at = (slice(b, b + 1), slice(h0, h0 + heads))
            res = run(*(_heads_last(t[at], grid) for t in (q, k, v)), kernel_size=kernel, scale=scale)
            out[at].copy_(res.reshape(1, L, heads, D).transpose(1, 2))
            del res
    return out
