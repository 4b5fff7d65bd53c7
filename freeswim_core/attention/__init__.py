"""Window attention: one public entry point over interchangeable backends."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import TokenGrid, as_grid, as_window
from ..log import logger
from .chunked import chunked_window_attention, device_bounds
from .flex import PARTIAL_OUTPUT, _cached_block_mask, flex_available, flex_window_attention, needs_grad

BACKENDS = ("auto", "flex", "chunked")

_flex_broken: set[tuple] = set()     # (device type, grid, dtype) whose flex kernel did not compile


def _check_inputs(q, k, v, grid: TokenGrid, out):
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError("window_attention expects q, k, v of one shape [B, heads, L, D]; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if out is not None:
        if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
            raise ValueError(f"window_attention: out must match q ({tuple(q.shape)}, {q.dtype}, {q.device}); "
                             f"got {tuple(out.shape)}, {out.dtype}, {out.device}")
        if any(_shares_memory(out, t) for t in (k, v)):
            raise ValueError("window_attention: out may be q's memory, never k's or v's (keys are read "
                             "after earlier queries' outputs are written)")
    if q.shape[2] != grid.tokens:
        raise ValueError(f"window_attention: sequence length {q.shape[2]} does not match the token grid "
                         f"{grid.as_tuple()} ({grid.tokens} tokens)")


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch._C._is_alias_of(a, b)


def backend_for(q: torch.Tensor, grid, window, backend: str = "auto") -> str:
    """The backend :func:`window_attention` uses for these arguments now: ``"sdpa"`` (the window
    covers the grid: full attention), ``"flex"`` or ``"chunked"``."""
    if as_window(window).covers(as_grid(grid)):
        return "sdpa"
    if backend != "auto":
        return backend
    key = (q.device.type, as_grid(grid), q.dtype)
    return "flex" if _flex_first(q) and key not in _flex_broken else "chunked"


def _flex_first(q: torch.Tensor, *others: torch.Tensor) -> bool:
    """``auto`` tries FlexAttention first on CUDA (on the CPU the chunked backend is faster), for
    inference (the flex kernel runs in inference mode; gradients take the chunked backend)."""
    return q.is_cuda and flex_available() and not needs_grad(q, *others)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid, window, *,
                     inward: bool = True, scale: float | None = None,
                     backend: str = "auto", out: torch.Tensor | None = None) -> torch.Tensor:
    """FreeSwim sliding-window self-attention.

    Args:
        q, k, v: ``[B, heads, L, D]``, tokens in frame-major order
            (``index = (t * H + h) * W + w``).
        grid: ``(T, H, W)`` token grid with ``T * H * W == L``.
        window: ``(wh, ww)`` tokens per query in height and width.
        inward: shift windows inward at borders (paper) instead of truncating.
        scale: softmax scale; ``None`` means ``1 / sqrt(D)``.
        backend: ``"flex"`` (FlexAttention, compiled, inference only), ``"chunked"``
            (exact SDPA over tiles, any device, differentiable) or ``"auto"`` (flex on
            CUDA when no gradient is recorded, falling back to
            chunked, with one log line, for a grid and dtype whose flex kernel does
            not compile; errors at run time, out of memory included, propagate).
        out: where to write the result (any strides, shape of ``q``); it may be
            ``q`` itself, which saves a whole activation when the caller no
            longer needs the queries: every backend reads a group of queries
            before it writes that group's output. Never ``k`` or ``v``.

    Returns:
        ``[B, heads, L, D]`` (``out`` when given). Every query attends to all
        frames and to the keys of its spatial window; a window at least as large
        as the grid is plain full attention.
    """
    grid, window = as_grid(grid), as_window(window)
    _check_inputs(q, k, v, grid, out)
    if backend not in BACKENDS:
        raise ValueError(f"unknown window attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if window.covers(grid):
        res = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return res if out is None else out.copy_(res)
    if backend == "chunked":
        return chunked_window_attention(q, k, v, grid, window, inward=inward, scale=scale, out=out)
    if backend == "flex":
        return flex_window_attention(q, k, v, grid, window, inward=inward, scale=scale, out=out)
    # auto
    key = (q.device.type, grid, q.dtype)
    if _flex_first(q, k, v) and key not in _flex_broken:
        try:
            return flex_window_attention(q, k, v, grid, window, inward=inward, scale=scale, out=out)
        except Exception as exc:
            if getattr(exc, PARTIAL_OUTPUT, False) or not _is_compile_failure(exc):
                raise         # out of memory, a launch failure: the host's own handling sees it
            _flex_broken.add(key)
            logger.warning("FlexAttention could not compile the window kernel for grid %s (%s, %s: %s); using "
                           "the exact chunked backend for this grid and dtype. Set backend='chunked' to silence "
                           "this.", grid.as_tuple(), q.dtype, type(exc).__name__, exc)
    return chunked_window_attention(q, k, v, grid, window, inward=inward, scale=scale, out=out)


def _compile_failure_types() -> tuple:
    """Exception types of a compile or lowering failure in this torch (and triton, if present)."""
    found = []
    for module, names in (("torch._dynamo.exc", ("BackendCompilerFailed", "Unsupported", "TorchRuntimeError")),
                          ("torch._inductor.exc", ("InductorError", "LoweringException")),
                          ("triton.compiler.errors", ("CompilationError",))):
        try:
            mod = __import__(module, fromlist=list(names))
        except Exception:
            continue
        found += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(found)


def _is_compile_failure(exc: BaseException) -> bool:
    """Is ``exc`` the kernel failing to compile (fall back) rather than failing to run (raise)?"""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    types = _compile_failure_types()
    return bool(types) and isinstance(exc, types)


def release_run_caches() -> None:
    """Drop the window backend's device-side caches (the BlockMask tables: up to 1.8 GB at 4K on a
    GPU; the chunked backend's window bounds) at the end of a sampling run; the next run rebuilds
    them in well under a second."""
    _cached_block_mask.cache_clear()
    device_bounds.cache_clear()


__all__ = ["BACKENDS", "backend_for", "chunked_window_attention", "flex_available", "flex_window_attention",
           "release_run_caches", "window_attention"]
