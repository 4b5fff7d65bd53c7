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
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..geometry import TokenGrid, Window


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
    frame), written into ``out`` where given; ``fused``: NATTEN picks its fastest kernel, else its
    FlexAttention one (``flex-fna``, any device)."""
    natten = natten_module()
    kernel = kernel_of(grid, window)
    qh, kh, vh = (_heads_last(t, grid) for t in (q, k, v))
    fn = natten.na2d if len(kernel) == 2 else natten.na3d
    res = fn(qh, kh, vh, kernel_size=kernel, scale=scale, backend=None if fused else "flex-fna")
    res = res.reshape(q.shape[0], grid.tokens, q.shape[1], q.shape[3]).transpose(1, 2)
    return res if out is None else out.copy_(res)
