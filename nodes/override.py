"""FreeSwim's attention override: one attention call at a time.

Installed in ComfyUI's single ``optimized_attention_override`` slot. It reads the
model call's frozen :class:`CallPlan` and the block being run (:class:`BlockScope`,
set by the block replacement in ``hooks.py``) from ``transformer_options``:

* inside a block, calls are placed by their order: the first is the block's
  self-attention, then its cross-attention call(s) (I2V: image, then text); no
  shapes are compared, so any grid size works;
* outside any block replacement (VACE blocks, which the host runs without one)
  self-attention is recognised by shape and the cross calls that follow belong to
  it (a grid with a conditioning's token count is refused at planning there).

Self-attention: window attention for window rows, full attention (through the
host's own attention and any override installed before FreeSwim's) for the
full-attention twins. Text cross-attention: each window row takes its twin's
output, handed over within the block (batched: from the same call; sequential:
from the twins' own run of the block), or read from the cache on reuse calls.
"""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..freeswim_core.dual.calls import (WindowPlan, cross_rows, cross_rows_with_given, self_attention_rows,
                                        take_rows, window_rows)
from ..freeswim_core.log import log_once
from ..freeswim_core.planner import CallPlan, Mode
from .families.base import GRID_SIZES
from .options import CURSOR_KEY, LATER_KEY, PLAN_KEY, RUN_KEY, SCOPE_KEY, WINDOW_NODE, options_of

# Set while a call FreeSwim passed on to an override set after it runs: that override may keep and
# call the previous one (FreeSwim's), which then passes the call through instead of handling it twice.
_handing_on = threading.local()


def writable_in_place(t) -> bool:
    """May a tensor the host dropped be overwritten now: not part of an autograd graph, and not an
    inference tensor outside inference mode (which torch refuses to write)."""
    return (isinstance(t, torch.Tensor) and not t.requires_grad
            and (torch.is_inference_mode_enabled() or not t.is_inference()))

@dataclass
class BlockScope:
    """One run of one block: its index, which rows it holds, the calls seen so far."""

    index: int
    role: str = "all"          # all: every row; twins: only the full-attention twins; window: only the caller's
    calls: int = 0
    handoff: dict = field(default_factory=dict)   # sequential: (source row, call kind) -> its twin's output

    def handoff_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.handoff.values())


@dataclass
class CallCursor:
    """Mutable state of one model call (the plan itself is frozen)."""

    free_blocks: int = 0         # self-attention calls seen outside any block replacement
    free_calls: int = 0          # calls since the last of those
    grid_checked: bool = False
    disabled: bool = False       # the call does not match the plan: everything passes through
    reached: set = field(default_factory=set)    # blocks whose self-attention FreeSwim ran
    ran: set = field(default_factory=set)        # blocks FreeSwim's block replacement ran


def _place(plan: CallPlan, cursor: CallCursor, scope: Optional[BlockScope], q, k, v):
    """(kind, block key, role) of an attention call: kind is self, image, text or None (not ours)."""
    cpb = plan.cross_per_block
    grid = plan.grid
    if scope is not None:
        position, scope.calls = scope.calls, scope.calls + 1
        if position == 0 and k.shape[1] != q.shape[1]:
            # the block's self-attention never reached the override (a patch returned early, as STG's
            # does): this is its first cross call
            position, scope.calls = 1, 2
        block, role = ("block", scope.index), scope.role
    else:
        if grid is not None and q.shape == k.shape == v.shape and q.shape[1] == grid.tokens:
            cursor.free_blocks, cursor.free_calls = cursor.free_blocks + 1, 0
        elif cursor.free_blocks == 0:
            return None, None, None
        position, cursor.free_calls = cursor.free_calls, cursor.free_calls + 1
        block, role = ("free", cursor.free_blocks - 1), "all"
    if position == 0:
        return "self", block, role
    if position > cpb:
        return None, block, role            # extra calls of other block types (audio, face): not ours
    return ("image" if cpb == 2 and position == 1 else "text"), block, role


def _check_self(plan: CallPlan, cursor: CallCursor, q, to: dict, run) -> bool:
    """Does this self-attention call fit the plan? Otherwise disable FreeSwim for the call, loudly."""
    grid = plan.grid
    problem = None
    if q.shape[1] != grid.tokens:
        problem = (f"self-attention has {q.shape[1]} tokens, not the {grid.tokens} of the "
                   f"{grid.t}x{grid.h}x{grid.w} grid (tokens that are not on the video grid)")
    elif plan.model.check_grid and not cursor.grid_checked and to.get(GRID_SIZES) is not None:
        cursor.grid_checked = True
        host_grid = tuple(int(n) for n in to[GRID_SIZES])
        if host_grid != (grid.t - plan.ref_frames, grid.h, grid.w):
            problem = f"the host's token grid {host_grid} differs from FreeSwim's {grid.as_tuple()}"
        elif run is not None:
            run.report.host_grid_confirmed = True
    if problem is None:
        return True
    _unplaceable(cursor, problem)
    return False


def _unplaceable(cursor: CallCursor, problem: str) -> None:
    """The call does not fit the plan: FreeSwim steps aside for the rest of the model call, loudly."""
    cursor.disabled = True
    log_once(f"mismatch:{problem}", logging.WARNING, "%s: %s; FreeSwim steps aside from there to the end of "
             "this model call. This model variant is not supported by the window patch yet.", WINDOW_NODE, problem)
    return None


def _window(run, w: WindowPlan, q, k, v, heads, in_place: bool):
    """The core's window rows, through the run (which notes the backend and the time spent)."""
    if run is None:
        return window_rows(w, q, k, v, heads, in_place)
    return run.window_rows(w, q, k, v, heads, in_place)


def queries_reusable(plan: CallPlan, to: dict, q) -> bool:
    """May FreeSwim overwrite the self-attention queries? Only where the host's own blocks run
    (they drop q after attention: ``plan.model.frees_queries``), no ``attn1_patch`` reads q after
    the call, and q is a plain dense tensor that may be written in this mode."""
    return (plan.model.frees_queries and not (to.get("patches") or {}).get("attn1_patch")
            and q.is_contiguous() and writable_in_place(q))


def _self_attention(plan: CallPlan, role: str, call, q, k, v, heads, kwargs, run, in_place: bool):
    if role == "twins":
        count = 0
    else:
        count = plan.layout.rows if (role == "all" and plan.twins) else q.shape[0]
    return self_attention_rows(plan.window, count, functools.partial(call, **kwargs), q, k, v, heads, in_place,
                               window=functools.partial(_window, run))


def _rows_of_kwargs(kwargs: dict, total: int, rows) -> dict:
    """The call's keyword arguments for some of its rows: a per-row attention mask (LTX's text mask,
    ``[rows, 1, 1, keys]``) is cut to those rows; a shared one is kept."""
    mask = kwargs.get("mask")
    if isinstance(mask, torch.Tensor) and mask.dim() >= 3 and mask.shape[0] == total and total > 1:
        return {**kwargs, "mask": take_rows(mask, rows)}
    return kwargs


def _compute_rows(call, q, k, v, kwargs):
    total = q.shape[0]
    return lambda rows: call(take_rows(q, rows), take_rows(k, rows), take_rows(v, rows),
                             **_rows_of_kwargs(kwargs, total, rows))


def _cross_attention(plan: CallPlan, kind: str, role: str, scope, call, q, k, v, kwargs, key, run,
                     reuse_q: bool):
    """Cross-attention with each window row taking its full-attention twin's output.

    ``reuse_q``: the host drops q after this call (its last one in the block), so the rows are
    assembled in q's memory instead of a new tensor."""
    total = q.shape[0]
    compute = _compute_rows(call, q, k, v, kwargs)
    if plan.mode is Mode.REUSE:  # None for a block without features (should not happen): computed normally
        return cross_rows(total, compute, q, reuse_rows=plan.reuse_rows,
                          read=lambda r: plan.store.get(plan.keys[r], key), out=q if reuse_q else None)
    if role == "twins":          # sequential, first half of the block: compute, hand over (and store)
        res = call(q, k, v, **kwargs)
        for j, src in enumerate(plan.layout.twin_sources):
            scope.handoff[(src, kind)] = res[j]
            if plan.mode is Mode.GUIDE:
                plan.store.put(plan.keys[src], key, res[j])
        _note_handoff(run, scope.handoff_bytes())
        return res
    if role == "window":         # sequential, second half: the twins' outputs from this block, used once
        given = {src: scope.handoff.pop((src, kind)) for src in plan.layout.twin_sources}
        return cross_rows_with_given(given, total, compute, q, out=q if reuse_q else None)
    # batched: twins are rows of this call
    twin_of = plan.layout.twin_of()
    store = (lambda src, features: plan.store.put(plan.keys[src], key, features)) if plan.mode is Mode.GUIDE else None
    out = cross_rows(total, compute, q, twin_of=twin_of, write=store, out=q if reuse_q else None)
    _note_handoff(run, sum(out[t].numel() * out[t].element_size() for t in twin_of.values()))
    return out


def queries_dropped_after(plan: CallPlan, kind: str, to: dict, q) -> bool:
    """Is this cross-attention call the last reader of q? The text call is the last of a block's
    cross-attention calls (I2V: the image call reads the same q first)."""
    return kind == "text" and queries_reusable(plan, to, q)


def _note_handoff(run, nbytes: int) -> None:
    if run is not None:
        run.note_handoff(nbytes)


def _handle(plan: CallPlan, to: dict, call, args, kwargs):
    """FreeSwim's result for one attention call, or None to leave the call alone."""
    cursor: Optional[CallCursor] = to.get(CURSOR_KEY)
    if len(args) < 3 or cursor is None or cursor.disabled or plan.window is None:
        return None
    q, k, v = args[:3]
    heads = kwargs.get("heads", args[3] if len(args) > 3 else None)
    mask = kwargs.get("mask", args[4] if len(args) > 4 else None)
    if (heads is None or len(args) > 5 or q.dim() != 3 or k.dim() != 3
            or kwargs.get("skip_reshape") or kwargs.get("skip_output_reshape")):
        return None
    rest = {**kwargs, "heads": heads}      # heads (and ComfyUI 0.3's masked attention's mask) may come positionally
    if mask is not None:
        rest["mask"] = mask
    scope = to.get(SCOPE_KEY)
    kind, block, role = _place(plan, cursor, scope, q, k, v)
    run = to.get(RUN_KEY)
    if kind == "self":
        if mask is not None:
            return _unplaceable(cursor, "self-attention carries a mask")
        if not _check_self(plan, cursor, q, to, run):
            return None
        if block[0] == "block":
            cursor.reached.add(block[1])
        return _self_attention(plan, role, call, q, k, v, heads, rest, run, queries_reusable(plan, to, q))
    if kind is None or plan.mode is Mode.OFF or k.shape[0] != q.shape[0]:
        return None
    if kind == "image" and not plan.override_image:
        return None
    return _cross_attention(plan, kind, role, scope, call, q, k, v, rest, block + (kind,), run,
                            queries_dropped_after(plan, kind, to, q))


@torch.compiler.disable
def freeswim_attention_override(func, *args, **kwargs):
    """ComfyUI ``optimized_attention_override`` for FreeSwim-patched models.

    Not traced by torch.compile (ComfyUI's TorchCompileModel compiles the blocks around it):
    it is bookkeeping and dispatch; the window kernel compiles on its own."""
    to = kwargs.get("transformer_options") or {}
    opts = options_of(to)
    inner = opts.inner_override if opts is not None else None
    later = to.get(LATER_KEY)

    def underneath(*a, **kw):                 # what was in the slot before FreeSwim, or the host's attention
        return inner(func, *a, **kw) if inner is not None else func(*a, **kw)

    if getattr(_handing_on, "active", False):
        return underneath(*args, **kwargs)    # called back by the later override: already handled

    def call(*a, **kw):
        if later is None:
            return underneath(*a, **kw)
        _handing_on.active = True
        try:
            return later(func, *a, **kw)
        finally:
            _handing_on.active = False

    plan: Optional[CallPlan] = to.get(PLAN_KEY)
    if plan is not None:
        out = _handle(plan, to, call, args, kwargs)
        if out is not None:
            return out
    return call(*args, **kwargs)
