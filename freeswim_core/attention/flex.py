"""Window attention with FlexAttention (compiled), block-sparse from geometry.

* Tokens are reordered frame-innermost inside the call, ``(t, h, w) -> (h, w, t)``,
  so a 128-token block is a few spatial positions across all frames and most
  visited key blocks are full (no mask evaluated there). The reordered copies are
  zero-padded to a multiple of the block size, so inductor takes its divisible
  fast path; the padded keys are masked out.
* The BlockMask is built from the window bounds (:mod:`.blocks`) and cached per
  geometry, never by evaluating the mask over Q x KV.
* One compiled graph per (device, grid, dtype, head group, head dim), whatever
  else changes in a run: the kernel is the pack's own compiled function (another
  pack compiling ``flex_attention`` does not share its recompile budget); it runs
  in inference mode, one batch row and an equal head group per call, with the
  softmax scale passed as a tensor (data, not a constant baked into the graph).
  At dynamo's recompile limit, flex would silently run uncompiled and
  materialise every score (out of memory at 4K); before that, the pack's graphs
  are dropped and compiled again (inductor caches them on disk).
* Head groups bound the transient copies the reordering makes (4 tensors of one
  group: q, k, v reordered and the kernel's output).
"""
from __future__ import annotations

import functools
import threading
from typing import Callable

import torch

from .. import probes
from ..geometry import TokenGrid, Window, axis_windows
from ..log import logger
from .blocks import window_block_lists

# Bytes one call's reordered q, k, v copies and its output may take together: the transient
# memory of the window backend beyond its inputs and result (4 tensors of one head group).
COPY_BUDGET = 1 << 30
BLOCK_SIZE = 128

_lock = threading.Lock()
_compiled: dict[tuple, object] = {}  # ("cuda",) or ("cpu", threads) -> the compiled kernel
_graph_keys: set[tuple] = set()      # shapes the compiled kernel holds a graph for


def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except Exception:
        return False
    return True


def _window_kernel(q, k, v, block_mask, scale):
    """The pack's own compiled entry point: ``flex_attention`` with the softmax scale as a 0-dim
    tensor applied to the scores (the kernel's constant scale is 1)."""
    from torch.nn.attention.flex_attention import flex_attention

    def scaled(score, b, h, q_idx, kv_idx):
        return score * scale

    return flex_attention(q, k, v, score_mod=scaled, block_mask=block_mask, scale=1.0)


def _kernel_variant(device: torch.device) -> tuple:
    """What a compiled kernel is specialised for besides its shapes. On the CPU: the thread count,
    which inductor bakes into the kernel (its per-thread scratch buffers) but leaves out of its
    on-disk cache key, so a kernel compiled by a process with another thread count would be loaded
    and write past its buffers. Named in the compile options, it enters that key."""
    return ("cpu", torch.get_num_threads()) if device.type == "cpu" else (device.type,)


def compiled_window_kernel(device: torch.device | str = "cuda"):
    """``torch.compile`` of :func:`_window_kernel` (static shapes, one graph, no graph breaks),
    created once per process and device type (on the CPU, once per thread count)."""
    variant = _kernel_variant(torch.device(device))
    with _lock:
        if variant not in _compiled:
            options = {"cpp.threads": variant[1]} if variant[0] == "cpu" else None
            _compiled[variant] = torch.compile(_window_kernel, dynamic=False, fullgraph=True, options=options)
        return _compiled[variant]


def _recompile_limit() -> int:
    config = torch._dynamo.config
    return int(getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 8)))


def _reserve_graph(key: tuple) -> None:
    """Note that the kernel is about to run with shapes ``key``; if that would be one graph past
    dynamo's per-function recompile limit, drop the kernel's graphs first."""
    with _lock:
        if key in _graph_keys:
            return
        if len(_graph_keys) >= _recompile_limit():
            from torch._dynamo.eval_frame import reset_code
            reset_code(_window_kernel.__code__)
            logger.info("FreeSwim: %d window kernel shapes compiled in this process (dynamo's limit); "
                        "dropping them, the next calls compile again.", len(_graph_keys))
            _graph_keys.clear()
        _graph_keys.add(key)


def padded_length(tokens: int, block_size: int = BLOCK_SIZE) -> int:
    """Tokens rounded up to whole blocks: the length of the kernel's reordered copies."""
    return -(-tokens // block_size) * block_size


def window_mask_mod(grid: TokenGrid, window: Window, inward: bool, device):
    """mask_mod over frame-innermost token indices (evaluated on partial blocks only); keys past
    the grid (the zero padding) are masked, queries past it are computed and dropped."""
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
        return (kv_idx < L) & (kh >= sh[qh]) & (kh <= eh[qh]) & (kw >= sw[qw]) & (kw <= ew[qw])

    return mask_mod


@torch.compiler.disable
def window_block_mask(grid: TokenGrid, window: Window, inward: bool, device: torch.device,
                      block_size: int = BLOCK_SIZE):
    """BlockMask for the window over the padded frame-innermost tokens (cached per geometry and
    device).

    Built outside any ``torch.compile`` trace (it is host-side integer work) and in inference
    mode, where the kernel runs: dynamo's guards include a tensor's dispatch keys, so a mask made
    under ``no_grad`` and one made in inference mode would each compile a graph of their own.
    """
    with torch.inference_mode():
        return _cached_block_mask(grid, window, inward, torch.device(device), block_size)


@functools.lru_cache(maxsize=8)
def _cached_block_mask(grid: TokenGrid, window: Window, inward: bool, device: torch.device,
                      block_size: int = BLOCK_SIZE):
    from torch.nn.attention.flex_attention import BlockMask
    lists = window_block_lists(grid, window, inward=inward, block_size=block_size, device=device,
                               padded=True)
    padded = padded_length(lists.seq_len, block_size)
    return BlockMask.from_kv_blocks(
        lists.kv_num_blocks[None, None], lists.kv_indices[None, None],
        lists.full_kv_num_blocks[None, None], lists.full_kv_indices[None, None],
        BLOCK_SIZE=block_size, mask_mod=window_mask_mod(grid, window, inward, device),
        seq_lengths=(padded, padded), compute_q_blocks=False)


def largest_head_group(NH: int, call_bytes: Callable[[int], int], budget: int) -> int:
    """The largest divisor of ``NH`` (equal groups: one shape per call) whose call's transient bytes,
    ``call_bytes(heads)``, fit ``budget``; one head where none does."""
    for heads in sorted((h for h in range(1, NH + 1) if NH % h == 0), reverse=True):
        if call_bytes(heads) <= budget:
            return heads
    return 1


def head_group(NH: int, L: int, D: int, element_bytes: int, budget: int | None = None) -> int:
    """Heads per call: the largest divisor of ``NH`` whose four copies (q, k, v reordered and the
    kernel's output, ``L`` tokens each) fit ``budget``."""
    return largest_head_group(NH, lambda heads: 4 * heads * L * D * element_bytes,
                              COPY_BUDGET if budget is None else budget)


def _call_groups(B: int, NH: int, L: int, D: int, element_bytes: int = 2):
    """(batch row, head slice) pairs: one batch row and an equal head group per call, so every
    call has the same shape (one compiled graph) whatever the batch size of the model call."""
    heads = head_group(NH, padded_length(L), D, element_bytes)
    for b in range(B):
        for h0 in range(0, NH, heads):
            yield slice(b, b + 1), slice(h0, h0 + heads)


# Set on an exception raised after some head groups were written into an ``out`` that aliases
# ``q``: those queries are gone, so no other backend may redo the call. The exception itself
# (an out-of-memory error, say) is re-raised unchanged for the host to handle.
PARTIAL_OUTPUT = "freeswim_partial_output"


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Would autograd record a call on these tensors? The flex backend is inference-only."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


@torch.compiler.disable
def flex_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          grid: TokenGrid, window: Window, *, inward: bool = True,
                          scale: float | None = None, block_size: int = BLOCK_SIZE,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """Window attention of ``q``, ``k``, ``v`` (``[B, heads, L, D]``, frame-major tokens) written into
    ``out`` (any strides; it may be ``q``) or a new tensor laid out ``[B, L, heads, D]``.

    Not traced by an enclosing ``torch.compile`` (a compiled model or block): its bookkeeping
    (inference mode, the graph budget) stays in Python and the kernel compiles on its own."""
    if needs_grad(q, k, v):
        raise ValueError("the flex window attention backend is inference-only (its kernel runs in "
                         "inference mode); use backend='chunked' where gradients are needed")
    B, NH, L, D = q.shape
    T, H, W = grid.as_tuple()
    Lp = padded_length(L, block_size)
    tables, stand_in = probes.block_tables_stand_in(), probes.window_kernel_stand_in()
    block_mask = (tables(grid, window, inward, q.device, block_size) if tables is not None
                  else window_block_mask(grid, window, inward, q.device, block_size))
    kernel = stand_in(q.device) if stand_in is not None else compiled_window_kernel(q.device)
    if out is None:
        out = torch.empty((B, L, NH, D), dtype=q.dtype, device=q.device).transpose(1, 2)

    def to_inner(x):  # [1, n, (t h w), d] -> [1, n, (h w t) + zero padding, d]
        n = x.shape[1]
        buf = torch.empty((1, n, Lp, D), dtype=x.dtype, device=x.device)
        buf[:, :, :L].unflatten(2, (H, W, T)).copy_(x.unflatten(2, (T, H, W)).permute(0, 1, 3, 4, 2, 5))
        buf[:, :, L:].zero_()
        return buf

    written = False
    try:
        with torch.inference_mode():
            scale_t = torch.full((), D ** -0.5 if scale is None else scale, dtype=torch.float32, device=q.device)
            for bs, hs in _call_groups(B, NH, L, D, q.element_size()):
                n = hs.stop - hs.start
                _reserve_graph((str(q.device), _kernel_variant(q.device), grid, q.dtype, n, D, block_size))
                o = kernel(to_inner(q[bs, hs]), to_inner(k[bs, hs]), to_inner(v[bs, hs]), block_mask, scale_t)
                dest = out[bs, hs].unflatten(2, (T, H, W))            # [1, n, T, H, W, D], a view
                dest.copy_(o[:, :, :L].unflatten(2, (H, W, T)).permute(0, 1, 4, 2, 3, 5))
                written = True
                del o
    except Exception as exc:
        if written and torch._C._is_alias_of(out, q):
            setattr(exc, PARTIAL_OUTPUT, True)
            exc.add_note("FreeSwim: the window attention failed part-way with its output written over "
                         "its queries; the call cannot be retried with another backend.")
        raise
    return out
