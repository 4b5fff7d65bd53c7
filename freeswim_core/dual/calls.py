"""One attention call of a dual-path model call, row by row, for any host.

A host hands over q, k, v as ``[rows, tokens, heads * head_dim]`` (ComfyUI's
layout; diffusers' ``[rows, tokens, heads, head_dim]`` flattens to it for free)
and a ``call(q, k, v)`` that runs its own attention at the default softmax scale.
These functions decide what each row gets:

* self-attention: window attention for the caller's rows, full attention for
  the twins appended after them, both at FreeSwim's softmax scale;
* cross-attention: each window row takes its twin's output (computed in the
  same call) or features given to it (the cache's, or a twin's handed over from
  another run of the block); every other row is computed, in one call.

With ``in_place`` the result is written over q, which the host must no longer
need: it saves one activation per call.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..attention import window_attention
from ..window_plan import WindowPlan


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, L, heads * D]`` -> ``[B, heads, L, D]`` (a view)."""
    B, L, C = t.shape
    return t.view(B, L, heads, C // heads).transpose(1, 2)


def take_rows(t: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Rows of a batch by slicing (no index tensor on the device, no sync)."""
    if rows == list(range(rows[0], rows[-1] + 1)):
        return t[rows[0]:rows[-1] + 1]
    return torch.cat([t[r:r + 1] for r in rows])


def window_rows(w: WindowPlan, q, k, v, heads: int, in_place: bool) -> torch.Tensor:
    """Window attention of every row of ``[B, L, heads * D]`` q, k, v."""
    qh, kh, vh = (split_heads(t, heads) for t in (q, k, v))
    out = window_attention(qh, kh, vh, w.grid, w.window, inward=w.inward, scale=w.scale, backend=w.backend,
                           out=qh if in_place else None)
    B, NH, L, D = out.shape
    return q if in_place else out.transpose(1, 2).reshape(B, L, NH * D)


def full_rows(call: Callable, scale: float, q, k, v, heads: int, in_place: bool) -> torch.Tensor:
    """Full attention through the host's ``call`` (which applies 1/sqrt(D) itself), with the rest
    of FreeSwim's scale folded into q."""
    factor = scale * (q.shape[-1] // heads) ** 0.5
    if factor != 1.0:
        q = q.mul_(factor) if in_place else q * factor
    return call(q, k, v)


def self_attention_rows(w: WindowPlan, window_count: int, call: Callable, q, k, v, heads: int,
                        in_place: bool, window: Callable = window_rows) -> torch.Tensor:
    """Rows ``:window_count`` through ``window`` (:func:`window_rows` or a host's wrapper of it),
    the rest (the twins) through :func:`full_rows`."""
    if window_count == 0:
        return full_rows(call, w.scale, q, k, v, heads, in_place)
    out = window(w, q[:window_count], k[:window_count], v[:window_count], heads, in_place)
    if window_count == q.shape[0]:
        return out
    rest = slice(window_count, None)
    full = full_rows(call, w.scale, q[rest], k[rest], v[rest], heads, in_place)
    if in_place:
        q[rest] = full
        return q
    return torch.cat([out, full], dim=0)


def cross_rows_from_twins(twin_of: dict[int, int], total: int, compute: Callable[[list[int]], torch.Tensor],
                          out: Optional[torch.Tensor] = None,
                          on_twin: Optional[Callable[[int, torch.Tensor], None]] = None) -> torch.Tensor:
    """Cross-attention of a call holding window rows and their twins (``twin_of``: window row ->
    twin row): every row that is not a twin's source is computed, in one ``compute(rows)`` call;
    each source row then takes its twin's output (``on_twin(source, output)`` sees it, e.g. to
    store it). ``out`` (e.g. q itself, when the host drops it) receives the rows."""
    need = [r for r in range(total) if r not in twin_of]
    res = compute(need)
    if out is None:
        out = res.new_empty((total,) + tuple(res.shape[1:]))
    for j, r in enumerate(need):
        out[r] = res[j]
    del res
    for src, twin in twin_of.items():
        out[src] = out[twin]
        if on_twin is not None:
            on_twin(src, out[twin])
    return out


def cross_rows_with_given(given: dict[int, torch.Tensor], total: int,
                          compute: Callable[[list[int]], torch.Tensor], like: torch.Tensor,
                          out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-attention where rows in ``given`` take the features given to them (the cache's on a
    reuse call, or their twins' handed over) and the other rows are computed in one call.
    ``given`` is emptied as its features are placed, so each is held no longer than needed."""
    others = [r for r in range(total) if r not in given]
    res = compute(others) if others else None
    first = next(iter(given.values()))
    if out is None:
        out = torch.empty((total,) + tuple(first.shape), dtype=like.dtype, device=like.device)
    for j, r in enumerate(others):
        out[r] = res[j]
    del res, first
    for r in list(given):
        out[r] = given.pop(r)
    return out


def cross_rows(total: int, compute: Callable[[list[int]], torch.Tensor], like: torch.Tensor, *,
               reuse_rows: tuple = (), read: Optional[Callable[[int], Optional[torch.Tensor]]] = None,
               twin_of: Optional[dict[int, int]] = None,
               write: Optional[Callable[[int, torch.Tensor], None]] = None,
               out: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Cross-attention of a call with the dual path: on a reuse call (``reuse_rows``), those rows
    take ``read(row)`` (the cache's features; None when a row has none: then this returns None and
    the host computes the call as usual); otherwise each window row takes its twin's output
    (``twin_of``), which ``write(row, features)`` stores on a guide call."""
    if reuse_rows:
        given = {r: read(r) for r in reuse_rows}
        if any(f is None for f in given.values()):
            return None
        return cross_rows_with_given(given, total, compute, like, out=out)
    return cross_rows_from_twins(twin_of, total, compute, out=out, on_twin=write)
