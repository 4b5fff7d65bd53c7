"""Window attention: one public entry point over interchangeable backends, chosen in one place.

Each backend says what it cannot run, and why (NATTEN's way: explicit checks, not caught
exceptions): :func:`choose_backend` takes the one asked for, or for ``auto`` the fastest that
can run the call (NATTEN's compiled fused kernels, then FlexAttention on CUDA, then the exact
chunked backend), and says why each faster one was passed over. The run report shows both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import probes
from ..geometry import TokenGrid, as_grid, as_window
from ..log import logger
from .chunked import chunked_window_attention, device_bounds
from .flex import PARTIAL_OUTPUT, _cached_block_mask, flex_available, flex_window_attention, needs_grad
from .natten_backend import cannot_run as natten_cannot_run
from .natten_backend import fused_cannot_run as natten_fused_cannot_run
from .natten_backend import natten_compiled, natten_window_attention

BACKENDS = ("auto", "natten", "flex", "chunked")

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


@dataclass(frozen=True)
class Choice:
    """The backend a call runs, and the faster ones ``auto`` passed over, with why."""

    backend: str                                   # sdpa (the window covers the grid), natten, flex, chunked
    passed_over: tuple[tuple[str, str], ...] = ()  # (backend, why not)


def _flex_cannot_run(q, grid, window, inward, *others) -> str | None:
    if not flex_available():
        return "this torch has no FlexAttention"
    return None


def _flex_auto_cannot_run(q, grid, window, inward, *others) -> str | None:
    """``auto`` takes FlexAttention on CUDA (on a CPU the chunked backend is faster) for inference (the
    flex kernel runs without autograd), where its kernel compiled for this grid and dtype."""
    reason = _flex_cannot_run(q, grid, window, inward)
    if reason is not None:
        return reason
    if not q.is_cuda:
        return f"its compiled kernel is the CUDA path (this call is on {q.device.type}: chunked is faster there)"
    if needs_grad(q, *others):
        return "gradients are recorded (the flex kernel is inference-only)"
    if (q.device.type, grid, q.dtype) in _flex_broken:
        return "its kernel did not compile for this grid and dtype"
    return None


def _natten_cannot_run(q, grid, window, inward, *others) -> str | None:
    reason = natten_cannot_run(q, grid, window, inward)
    if reason is None and q.is_cuda and not natten_compiled() and probes.natten_kernel_stand_in() is None:
        reason = ("this NATTEN has no compiled library, and its FlexAttention kernel uncompiled would hold "
                  "every score: install NATTEN's wheel for your torch and CUDA (README), or use backend flex")
    return reason


def _check_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown window attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")


# what each backend cannot run when asked for by name, and when auto considers it (fastest first)
_CANNOT = {"natten": _natten_cannot_run, "flex": _flex_cannot_run, "chunked": lambda *a: None}
_AUTO_CANNOT = {"natten": natten_fused_cannot_run, "flex": _flex_auto_cannot_run}


def choose_backend(q: torch.Tensor, grid, window, backend: str = "auto", inward: bool = True,
                   *others: torch.Tensor) -> Choice:
    """The backend :func:`window_attention` runs for these arguments (``q``: ``[B, heads, L, D]``; ``others``:
    k and v, for the gradient check). A backend asked for by name that cannot run the call is an error
    naming why and the fix."""
    grid, window = as_grid(grid), as_window(window)
    _check_name(backend)
    if window.covers(grid):
        return Choice("sdpa")
    if backend != "auto":
        reason = _CANNOT[backend](q, grid, window, inward, *others)
        if reason is not None:
            raise ValueError(f"window attention backend {backend!r} cannot run this call: {reason}. Choose "
                             f"another backend (auto picks one that can).")
        return Choice(backend)
    passed = []
    for name, cannot in _AUTO_CANNOT.items():
        reason = cannot(q, grid, window, inward, *others)
        if reason is None:
            return Choice(name, tuple(passed))
        passed.append((name, reason))
    return Choice("chunked", tuple(passed))


def planned_backend(backend: str, grid, window, inward: bool = True) -> str:
    """The window backend the memory planner counts for a run asked for ``backend`` on a CUDA GPU (it has
    no tensors to ask :func:`choose_backend`): ``natten`` where asked, or for ``auto`` where NATTEN's
    compiled library is installed and NATTEN can run this window (inward, odd, no kernel of 1); else
    ``flex`` (``chunked`` is counted as flex, :mod:`..memory.phases`). Not known without tensors: whether
    NATTEN has a fused kernel for the head dim and GPU (the native models' 64 and 128 it has on Hopper and
    Blackwell)."""
    _check_name(backend)
    if backend == "natten":
        return "natten"
    if backend == "auto" and natten_compiled() and natten_cannot_run(None, as_grid(grid), as_window(window),
                                                                      inward) is None:
        return "natten"
    return "flex"


def backend_for(q: torch.Tensor, grid, window, backend: str = "auto", inward: bool = True) -> str:
    """The backend :func:`window_attention` uses for these arguments now: ``"sdpa"`` (the window
    covers the grid: full attention), ``"natten"``, ``"flex"`` or ``"chunked"``."""
    return choose_backend(q, grid, window, backend, inward).backend


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
        backend: ``"natten"`` (NATTEN's neighborhood attention: its fused kernels where
            its compiled library has them, its FlexAttention one on a CPU; inward windows
            only), ``"flex"`` (FlexAttention, compiled, inference only), ``"chunked"``
            (exact SDPA over tiles, any device, differentiable) or ``"auto"`` (the fastest
            that can run the call, :func:`choose_backend`; a flex kernel that does not
            compile falls back to chunked, with one log line, for that grid and dtype;
            errors at run time, out of memory included, propagate).
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
    chosen = choose_backend(q, grid, window, backend, inward, k, v).backend
    if chosen == "sdpa":
        res = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return res if out is None else out.copy_(res)
    if chosen == "chunked":
        return chunked_window_attention(q, k, v, grid, window, inward=inward, scale=scale, out=out)
    if chosen == "natten":
        return natten_window_attention(q, k, v, grid, window, scale=scale, out=out,
                                       fused=q.is_cuda and natten_compiled())
    if backend == "flex":
        return flex_window_attention(q, k, v, grid, window, inward=inward, scale=scale, out=out)
    try:                      # auto chose flex: a kernel that does not compile falls back, once per key
        return flex_window_attention(q, k, v, grid, window, inward=inward, scale=scale, out=out)
    except Exception as exc:
        if getattr(exc, PARTIAL_OUTPUT, False) or not _is_compile_failure(exc):
            raise             # out of memory, a launch failure: the host's own handling sees it
        _flex_broken.add((q.device.type, grid, q.dtype))
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


__all__ = ["BACKENDS", "Choice", "backend_for", "choose_backend", "planned_backend", "chunked_window_attention", "flex_available",
           "flex_window_attention", "natten_window_attention", "release_run_caches", "window_attention"]
