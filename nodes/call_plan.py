"""Planning one model call: what FreeSwim does in it, decided once, before it runs.

The DIFFUSION_MODEL wrapper reads the executor's arguments once (:class:`CallArgs`),
and :func:`plan_call` returns a frozen :class:`CallPlan`: the window geometry, the
rows that get a full-attention twin, and whether the cache guides or reuses. The
blocks and the attention override only read it.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace
from typing import Optional

import torch
from comfy.ldm.wan.model import WanI2VCrossAttention

from ..freeswim_core import (TokenGrid, attention_cost,
                             token_grid_from_latent)
from ..freeswim_core.window_plan import WindowPlan, plan_window as core_window_plan
from ..freeswim_core.dual import (CacheAction, DualLayout, FeatureStore, cache_action_for_call, cached_rows, dual_active,
                                  plan_store, row_keys, row_kinds, step_index, twin_rows)
from .errors import InvalidInput
from ..freeswim_core.host_reads import HostReads, first_value
from .host_blocks import host_frees_block_inputs, host_frees_queries, sets_grid_sizes
from .memory_plan import activation_bytes, plan_for_call
from .options import (CACHE_NODE, WINDOW_NODE, CacheSettings, FreeSwimOptions, WindowSettings)
from .run_state import RunState, say

# Positions of WanModel.forward's arguments as ComfyUI's executor passes them.
ARG_X, ARG_CONTEXT, ARG_CLIP_FEA, ARG_TIME_DIM_CONCAT, ARG_TRANSFORMER_OPTIONS = 0, 2, 3, 4, 5


class Mode(enum.Enum):
    OFF = "off"          # window attention only (or nothing)
    DUAL = "dual"        # twins every call (no cache)
    GUIDE = "guide"      # twins; their features are handed over and stored
    REUSE = "reuse"      # no twins; stored features are handed over


@dataclass(frozen=True)
class CallPlan:
    window: Optional[WindowPlan]
    mode: Mode = Mode.OFF
    layout: Optional[DualLayout] = None      # DUAL/GUIDE: twin rows appended to the caller's
    keys: tuple = ()                         # cache key per caller row
    reuse_rows: tuple = ()                   # REUSE: rows that read stored features
    store: Optional[FeatureStore] = None     # GUIDE/REUSE
    execution: str = "batched"
    cross_per_block: int = 1                 # 2 for I2V blocks (image call, then text call)
    override_image: bool = False
    check_grid: bool = False                 # the host sets grid_sizes: confirm the grid
    ref_frames: int = 0                      # reference-latent frames before the host's grid
    host_frees_queries: bool = False         # the host drops q after self-attention (host_blocks)
    host_frees_block_inputs: bool = False    # the host drops a block's input once the block returns

    @property
    def grid(self) -> Optional[TokenGrid]:
        return self.window.grid if self.window is not None else None

    @property
    def twins(self) -> bool:
        return self.layout is not None and bool(self.layout.twin_sources)


@dataclass(frozen=True)
class CallArgs:
    """The executor's arguments that planning needs, read once."""

    x: torch.Tensor
    context: Optional[torch.Tensor]
    clip_fea: Optional[torch.Tensor]
    time_dim_concat: Optional[torch.Tensor]
    has_reference_latent: bool

    @classmethod
    def read(cls, args, kwargs) -> "CallArgs":
        def arg(i, name):
            return kwargs[name] if name in kwargs else (args[i] if len(args) > i else None)
        return cls(arg(ARG_X, "x"), arg(ARG_CONTEXT, "context"), arg(ARG_CLIP_FEA, "clip_fea"),
                   arg(ARG_TIME_DIM_CONCAT, "time_dim_concat"), "reference_latent" in kwargs)


def model_token_grid(dm, a: CallArgs) -> TokenGrid:
    """Token grid of a Wan forward, mirroring ``WanModel._forward``: latent frames,
    plus frames concatenated in time, plus one frame of reference tokens."""
    grid = token_grid_from_latent(a.x.shape, dm.patch_size)
    t = grid.t
    if a.time_dim_concat is not None:
        t += token_grid_from_latent(a.time_dim_concat.shape, dm.patch_size).t
    if a.has_reference_latent and getattr(dm, "ref_conv", None) is not None:
        t += 1
    return TokenGrid(t, grid.h, grid.w)


def cross_attention_lengths(a: CallArgs) -> set[int]:
    lengths = set()
    for t, axis in ((a.context, 1), (a.clip_fea, -2)):
        if isinstance(t, torch.Tensor) and t.dim() >= 2:
            lengths.add(int(t.shape[axis]))
    return lengths


def plan_window(settings: WindowSettings, grid: TokenGrid, head_dim: int, ambiguous: bool,
                run: Optional[RunState]) -> Optional[WindowPlan]:
    """The window plan, or None when window attention does nothing for this call.

    ``ambiguous``: some attention calls can only be placed by shape (VACE blocks run
    outside the block replacement) and the grid has a conditioning's token count."""
    info = settings.info
    try:
        plan = core_window_plan(settings, grid, head_dim, info.native_px, info.px_per_token)
    except ValueError as exc:
        raise InvalidInput(f"{WINDOW_NODE}: {exc}") from None
    window, native_px = plan.window, plan.native_px
    geometry = f"{grid.t}x{grid.h}x{grid.w}"
    if plan.is_full:
        say(run, f"noop:{geometry}:{window}", logging.INFO,
            "%s: the %s token grid fits inside the %dx%d native window (%dx%d px); window attention "
            "is a no-op for this run.", WINDOW_NODE, geometry, window.h, window.w, *native_px)
        return None
    if ambiguous:
        say(run, f"ambiguous:{geometry}", logging.WARNING,
            "%s: the %s grid has %d tokens, the same count as the conditioning, and this model's VACE "
            "blocks can only be told apart by shape; window attention is skipped for this size. "
            "Change the width, height or frame count slightly.", WINDOW_NODE, geometry, grid.tokens)
        return None
    cost = attention_cost(grid, window, info.heads, head_dim, settings.inward)
    say(run, f"plan:{geometry}:{window}", logging.INFO,
        "FreeSwim window attention: grid %s tokens, window %dx%d (native %dx%d px, %s), %s, scale %.6f "
        "(%s), backend %s; self-attention work %.1f%% of full attention.", geometry, window.h, window.w,
        native_px[0], native_px[1], info.native_label if settings.native_size == "auto" else settings.native_size,
        "inward" if settings.inward else "truncated", plan.scale, settings.scale_mode, settings.backend,
        100.0 * cost["fraction_of_full"])
    return plan


def plan_call(opts: FreeSwimOptions, dm, a: CallArgs, to: dict, run: Optional[RunState]) -> CallPlan:
    grid = model_token_grid(dm, a)
    has_vace = bool(getattr(dm, "vace_blocks", None))
    ambiguous = has_vace and grid.tokens in cross_attention_lengths(a)
    window = (plan_window(opts.window, grid, dm.dim // dm.num_heads, ambiguous, run)
              if opts.window is not None else None)
    base = CallPlan(window=window, check_grid=sets_grid_sizes(dm),
                    ref_frames=1 if a.has_reference_latent and getattr(dm, "ref_conv", None) is not None else 0,
                    cross_per_block=2 if isinstance(dm.blocks[0].cross_attn, WanI2VCrossAttention) else 1,
                    host_frees_queries=host_frees_queries(dm), host_frees_block_inputs=host_frees_block_inputs(dm))
    if opts.dual is None or window is None:
        if window is not None and run is not None:
            plan_for_call(opts, dm, a.x, (grid.h, grid.w), 0, run)      # for the run report
        return base
    reads = run.host_reads if run is not None else HostReads()
    sigma = first_value(to.get("sigmas"), reads)
    if run is not None and not dual_active(sigma, run.sigma_start, run.sigma_end):
        return base
    rows = a.x.shape[0]
    chunks = to.get("cond_or_uncond") or [0]
    kinds = row_kinds(chunks, rows)
    eligible = twin_rows(kinds, opts.dual.passes)
    if not eligible:
        return base
    keys = tuple(row_keys(to.get("uuids") or [None] * len(chunks), rows))
    signature = (grid.as_tuple(), tuple(a.x.shape[1:2]), str(a.x.dtype))
    execution, memory = plan_for_call(opts, dm, a.x, (grid.h, grid.w), len(eligible), run)
    dual = dict(keys=keys, execution=execution, override_image=opts.dual.override_image_cross)
    twins = DualLayout(rows, eligible)
    if opts.cache is None or run is None or run.cache_off:
        return replace(base, mode=Mode.DUAL, layout=twins, **dual)
    image_too = opts.dual.override_image_cross and base.cross_per_block == 2
    passes = opts.dual.passes if run.uncond_runs else "cond"      # cfg 1: no unconditional calls to come
    stored = cached_rows(len(eligible), len(set(kinds)), passes, 2 if image_too else 1)
    store = run.store or open_store(opts.cache, grid, dm, a.x, stored, run,
                                    reserve=activation_bytes(memory) if memory is not None else 0)
    if store is None:
        return replace(base, mode=Mode.DUAL, layout=twins, **dual)
    schedule = to.get("sample_sigmas")
    step = step_index(sigma, reads.floats(schedule) if schedule is not None else None) if sigma is not None else None
    if cache_action_for_call(store, keys, eligible, signature, sigma, step, opts.cache.interval) is CacheAction.GUIDE:
        return replace(base, mode=Mode.GUIDE, layout=twins, store=store, **dual)
    return replace(base, mode=Mode.REUSE, reuse_rows=tuple(eligible), store=store, **dual)


def open_store(cache: CacheSettings, grid: TokenGrid, dm, x, rows: int, run: RunState, reserve: int = 0):
    """The run's feature store where the cache fits, or None (then the cache is off for the run).
    ``reserve``: device bytes the model calls themselves need (the memory plan's activations),
    which a cache on the device must leave free."""
    import psutil
    import comfy.model_management as mm
    blocks = len(dm.blocks) + len(getattr(dm, "vace_blocks", None) or [])
    free_accel = max(0, mm.get_free_memory(x.device) - reserve) if x.device.type != "cpu" else None
    sp = plan_store(cache.storage, cache.precision, blocks, grid.tokens, dm.dim, rows, x.dtype, x.device,
                    free_accel, psutil.virtual_memory().available)
    needed, on_host, where = sp.needed, sp.on_host, sp.where
    report = run.report
    report.cache_bytes, report.cache_precision = (on_host if where == "cpu" else needed), cache.precision
    if where is None:
        run.cache_off = True
        report.cache_off_reason = (f"{needed} bytes ({on_host} in host RAM) do not fit in "
                                   f"{cache.storage} memory")
        run.say("cache:nofit", logging.WARNING,
                "%s: %.2f GB of features (%d blocks x %d tokens x %d x %d rows; %.2f GB as pinned host "
                "memory) do not fit in %s memory; running without the cache (full branch on every step). "
                "Try storage cpu or precision fp8.", CACHE_NODE, needed / 2**30, blocks, grid.tokens, dm.dim,
                rows, on_host / 2**30, cache.storage)
        return None
    run.store = FeatureStore(where, cache.precision, x.device, prefetch=sp.prefetch)
    report.cache_storage, report.cache_prefetch = where, sp.prefetch
    run.say("cache:open", logging.INFO, "%s: %.2f GB of features on %s (%s, storage %s), guide every %d steps.",
            CACHE_NODE, needed / 2**30, where, cache.precision, cache.storage, cache.interval)
    return run.store
