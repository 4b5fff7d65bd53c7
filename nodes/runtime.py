"""Glue between the FreeSwim nodes and ComfyUI's sampling machinery.

How a patched Wan model runs:

* The nodes store their settings in ``transformer_options["freeswim"]`` (one
  :class:`FreeSwimOptions`, so the patches apply in any order) and install one
  attention override, :func:`freeswim_attention_override`, in ComfyUI's single
  ``optimized_attention_override`` slot. An override another pack installed
  earlier is kept and called for every call FreeSwim does not handle, and for
  the full-attention branch.
* A DIFFUSION_MODEL wrapper sees every model call with the real latent. It derives
  the token grid from the latent shape and the patch size (ComfyUI 0.3.75 tells
  the blocks neither ``grid_sizes`` nor ``block_index``), decides what the call
  does (window only; dual path, appending a full-attention twin per eligible row;
  cache guide or reuse) and hands that :class:`ForwardState` to the override.
  Twin rows are cut off the output, so the caller always gets its own batch.
* An OUTER_SAMPLE wrapper gives every sampling run its own :class:`RunState`
  (what was logged, the cached features, the dual path's sigma range) and drops
  it in ``finally``, so nothing carries over between runs, prompts or models.

Where the host sets ``block_index`` (current ComfyUI; see ``host_blocks.py``) the
first attention call of each block is its self-attention, and the host's
``grid_sizes`` confirms the grid. Elsewhere (0.3.x) the override recognises video
self-attention by shape (q, k and v with the grid's token count, no mask). Either
way it counts self-attention calls to number the blocks (VACE blocks included);
the cross-attention calls that follow belong to that block, the text call being
the block's last. Without the host's block index, a grid whose token count equals
a conditioning length cannot be told from cross-attention by shape, and the call
is passed through, with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import comfy.model_patcher
import comfy.patcher_extension
import torch
from comfy.ldm.wan.model import WanI2VCrossAttention
from comfy.patcher_extension import WrappersMP

from ..freeswim_core import (TokenGrid, Window, attention_cost, attention_scale,
                             token_grid_from_latent, window_attention)
from ..freeswim_core.dualpath import (DualLayout, FeatureStore, cache_bytes, choose_storage,
                                      element_bytes, is_guide_step, row_keys, row_kinds, step_index,
                                      twin_rows)
from ..freeswim_core.log import log_once, logger
from .host_blocks import BLOCK_INDEX, GRID_SIZES, sets_block_index, sets_grid_sizes
from .wan import WanInfo, native_tokens_per_frame, native_window_for, resolve_native_px

OPTIONS_KEY = "freeswim"
FORWARD_KEY = "freeswim_forward"
RUN_KEY = "freeswim_run"
# Diagnostic: when set in transformer_options, a dual-path call also returns the
# full-branch twin rows (after the caller's rows). Used by the parity checks.
KEEP_TWINS_KEY = "freeswim_keep_twins"
WRAPPER_KEY = "freeswim"
OVERRIDE_SLOT = "optimized_attention_override"

# Positions of WanModel.forward's arguments as ComfyUI's executor passes them.
_ARG_X, _ARG_CONTEXT, _ARG_CLIP_FEA, _ARG_TIME_DIM_CONCAT, _ARG_TRANSFORMER_OPTIONS = 0, 2, 3, 4, 5


@dataclass(frozen=True)
class WindowSettings:
    """What the user chose on FreeSwim Window Attention Patch."""

    info: WanInfo
    native_size: str = "auto"
    custom_width: int = 832
    custom_height: int = 480
    inward: bool = True
    scale_mode: str = "reference"
    backend: str = "auto"


@dataclass(frozen=True)
class DualPathSettings:
    """What the user chose on Dual-Path Override."""

    passes: str = "cond"                 # "cond" or "cond_and_uncond"
    override_image_cross: bool = False   # also replace I2V image cross-attention
    start_percent: float = 0.0
    end_percent: float = 1.0
    execution: str = "batched"           # "batched": twins in the same batch; "sequential": see below


@dataclass(frozen=True)
class CacheSettings:
    """What the user chose on Cross-Attn Cache."""

    interval: int = 2
    storage: str = "auto"
    precision: str = "model"


@dataclass(frozen=True)
class FreeSwimOptions:
    """Everything the FreeSwim patches put on a model, in one place, so that the
    nodes can be applied in any order and any number of times."""

    window: Optional[WindowSettings] = None
    dual: Optional[DualPathSettings] = None
    cache: Optional[CacheSettings] = None
    inner_override: Optional[Callable] = None


@dataclass(frozen=True)
class WindowPlan:
    """How the self-attention calls of one model call are computed."""

    grid: TokenGrid
    window: Window
    inward: bool
    scale: float
    backend: str


@dataclass
class RunState:
    """Per sampling run; created by the OUTER_SAMPLE wrapper, dropped when it ends."""

    said: set = field(default_factory=set)
    sigma_start: float = float("inf")    # dual path active for sigma_end <= sigma <= sigma_start
    sigma_end: float = 0.0
    store: Optional[FeatureStore] = None
    cache_off: bool = False              # the cache did not fit: full branch every step
    guide_calls: int = 0
    reuse_calls: int = 0

    def say(self, key: str, level: int, msg: str, *args) -> None:
        if key in self.said:
            return
        self.said.add(key)
        logger.log(level, msg, *args)


def _say(run: Optional[RunState], key: str, level: int, msg: str, *args) -> None:
    if run is not None:
        run.say(key, level, msg, *args)
    else:
        log_once(key, level, msg, *args)


# --- installing -------------------------------------------------------------------------

def install(model, **changes) -> None:
    """Merge ``changes`` into the FreeSwim options of a (cloned) ModelPatcher and hook it."""
    to = model.model_options.setdefault("transformer_options", {})
    opts: FreeSwimOptions = to.get(OPTIONS_KEY) or FreeSwimOptions()
    current = to.get(OVERRIDE_SLOT)
    inner = opts.inner_override if current is freeswim_attention_override else current
    to[OPTIONS_KEY] = replace(opts, inner_override=inner, **changes)
    to[OVERRIDE_SLOT] = freeswim_attention_override
    for kind, fn in ((WrappersMP.DIFFUSION_MODEL, diffusion_model_wrapper),
                     (WrappersMP.OUTER_SAMPLE, outer_sample_wrapper)):
        model.remove_wrappers_with_key(kind, WRAPPER_KEY)
        model.add_wrapper_with_key(kind, WRAPPER_KEY, fn)


# --- per sampling run -------------------------------------------------------------------

def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    orig = guider.model_options
    guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
    to = guider.model_options.setdefault("transformer_options", {})
    run = RunState()
    opts: Optional[FreeSwimOptions] = to.get(OPTIONS_KEY)
    if opts is not None and opts.dual is not None:
        sampling = guider.model_patcher.get_model_object("model_sampling")
        run.sigma_start = float(sampling.percent_to_sigma(opts.dual.start_percent))
        run.sigma_end = float(sampling.percent_to_sigma(opts.dual.end_percent))
    to[RUN_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = orig
        if run.store is not None:
            logger.info("FreeSwim Cross-Attn Cache: %d guide and %d reuse calls, %d feature reads, "
                        "%.1f MB on %s (%s).", run.guide_calls, run.reuse_calls, run.store.hits,
                        run.store.nbytes() / 2**20, run.store.storage, run.store.precision)
            run.store.clear()
        run.store = None


# --- per model call ---------------------------------------------------------------------

def _arg(args, kwargs, index, name, default=None):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _with_transformer_options(args, kwargs, to):
    if "transformer_options" in kwargs or len(args) <= _ARG_TRANSFORMER_OPTIONS:
        return args, {**kwargs, "transformer_options": to}
    args = list(args)
    args[_ARG_TRANSFORMER_OPTIONS] = to
    return tuple(args), kwargs


def model_token_grid(dm, x, time_dim_concat=None, has_reference_latent=False) -> TokenGrid:
    """Token grid of a Wan forward, mirroring ``WanModel._forward``: latent frames,
    plus frames concatenated in time, plus one frame of reference tokens."""
    grid = token_grid_from_latent(x.shape, dm.patch_size)
    t = grid.t
    if time_dim_concat is not None:
        t += token_grid_from_latent(time_dim_concat.shape, dm.patch_size).t
    if has_reference_latent and getattr(dm, "ref_conv", None) is not None:
        t += 1
    return TokenGrid(t, grid.h, grid.w)


def cross_attention_lengths(context, clip_fea) -> set[int]:
    lengths = set()
    if context is not None and hasattr(context, "shape") and context.dim() >= 2:
        lengths.add(int(context.shape[1]))
    if clip_fea is not None and hasattr(clip_fea, "shape") and clip_fea.dim() >= 2:
        lengths.add(int(clip_fea.shape[-2]))
    return lengths


def plan_window(settings: WindowSettings, grid: TokenGrid, head_dim: int,
                cross_lengths: set[int], run: Optional[RunState],
                placed_by_host: bool = False) -> Optional[WindowPlan]:
    """The window plan for one model call, or None when the call runs unpatched.

    ``placed_by_host``: the host's block index places every attention call, so a grid
    with a conditioning's token count is no longer ambiguous."""
    info = settings.info
    native_px = resolve_native_px(info, settings.native_size, settings.custom_width,
                                  settings.custom_height, grid_hw=(grid.h, grid.w))
    window = native_window_for(info, native_px)
    geometry = f"{grid.t}x{grid.h}x{grid.w}"
    if window.covers(grid):
        _say(run, f"noop:{geometry}:{window}", logging.INFO,
             "FreeSwim Window Attention Patch: the %s token grid fits inside the %dx%d native "
             "window (%dx%d px); window attention is a no-op for this run.",
             geometry, window.h, window.w, native_px[0], native_px[1])
        return None
    if grid.tokens in cross_lengths and not placed_by_host:
        _say(run, f"ambiguous:{geometry}", logging.WARNING,
             "FreeSwim Window Attention Patch: the %s grid has %d tokens, the same count as the "
             "conditioning, so self- and cross-attention cannot be told apart on this ComfyUI "
             "(it does not pass the block index; current ComfyUI does); window attention is "
             "skipped for this size. Change the width, height or frame count slightly.",
             geometry, grid.tokens)
        return None
    scale = attention_scale(settings.scale_mode, head_dim, native_tokens_per_frame(info, native_px))
    plan = WindowPlan(grid, window, settings.inward, scale, settings.backend)
    cost = attention_cost(grid, window, info.heads, head_dim, settings.inward)
    _say(run, f"plan:{geometry}:{window}", logging.INFO,
         "FreeSwim window attention: grid %s tokens, window %dx%d (native %dx%d px, %s), %s, "
         "scale %.6f (%s), backend %s; self-attention work %.1f%% of full attention.",
         geometry, window.h, window.w, native_px[0], native_px[1], info.native_label
         if settings.native_size == "auto" else settings.native_size,
         "inward" if settings.inward else "truncated", scale, settings.scale_mode,
         settings.backend, 100.0 * cost["fraction_of_full"])
    return plan


@dataclass
class ForwardState:
    """What one model call does, and where it is inside the model.

    Blocks are identified by counting video self-attention calls (every Wan block,
    VACE blocks included, makes exactly one, before its cross-attention), so no
    ``block_index`` from the host is needed.
    """

    window: Optional[WindowPlan]
    layout: Optional[DualLayout] = None
    mode: str = "off"                     # off | dual | guide | reuse | full_only
    keys: tuple = ()
    reuse_rows: tuple[int, ...] = ()
    store: Optional[FeatureStore] = None
    cross_per_block: int = 1              # 2 for I2V blocks (image call, then text call)
    override_image: bool = False
    block: int = -1
    cross_in_block: int = 0
    signature: tuple = ()
    host_indexed: bool = False            # the host sets block_index: a block's first call is self-attention
    check_grid: bool = False              # the host sets grid_sizes: confirm the grid against it
    has_vace: bool = False                # VACE blocks run under their main block's index
    ref_frames: int = 0                   # reference-latent frames prepended to the host's grid
    host_block: object = None             # cursor: the host's block_index of the last call
    disabled: bool = False                # cursor: the call did not match the plan; pass through

    def rewound(self, **changes) -> "ForwardState":
        """A copy with the same plan and the cursor at the start of a model call."""
        return replace(self, block=-1, cross_in_block=0, host_block=None, disabled=False, **changes)

    @property
    def grid(self) -> Optional[TokenGrid]:
        return self.window.grid if self.window is not None else None


def _dual_unavailable(opts: FreeSwimOptions, window: Optional[WindowPlan], run) -> bool:
    if opts.window is None:
        _say(run, "dual:no-window", logging.WARNING,
             "FreeSwim Dual-Path Override: this model has no FreeSwim Window Attention Patch, so the "
             "full-attention branch has nothing to correct and the override is off. Add FreeSwim "
             "Window Attention Patch to the model (before or after this node).")
        return True
    return window is None     # window is a no-op for this grid (already logged)


def plan_dual(opts: FreeSwimOptions, window: Optional[WindowPlan], to: dict, rows: int, dm, x,
              run: Optional[RunState]) -> ForwardState:
    state = ForwardState(window=window)
    if opts.dual is None:
        if opts.cache is not None:
            _say(run, "cache:no-dual", logging.WARNING,
                 "FreeSwim Cross-Attn Cache: this model has no FreeSwim Dual-Path Override, so there "
                 "are no full-branch features to cache and the cache is off. Add FreeSwim Dual-Path "
                 "Override to the model (before or after this node).")
        return state
    if _dual_unavailable(opts, window, run):
        return state
    sigmas = to.get("sigmas")
    sigma = float(sigmas.flatten()[0]) if sigmas is not None else None
    if run is not None and sigma is not None and not (run.sigma_end <= sigma <= run.sigma_start):
        return state
    kinds = row_kinds(to.get("cond_or_uncond") or [0], rows)
    keys = row_keys(to.get("uuids") or [None] * len(to.get("cond_or_uncond") or [0]), rows)
    eligible = twin_rows(kinds, opts.dual.passes)
    if not eligible:
        return state
    state.keys = tuple(keys)
    state.override_image = opts.dual.override_image_cross
    state.signature = (window.grid.as_tuple(), tuple(x.shape[1:2]), str(x.dtype))
    if opts.cache is None or run is None or run.cache_off:
        state.mode, state.layout = "dual", DualLayout(rows, eligible)
        return state
    store = run.store
    if store is None:
        store = _open_store(opts.cache, window.grid, dm, x, len(eligible), run)
        if store is None:
            state.mode, state.layout = "dual", DualLayout(rows, eligible)
            return state
    state.store = store
    step = step_index(sigma, to.get("sample_sigmas")) if sigma is not None else None
    fresh = [r for r in eligible if store.valid_for(keys[r], state.signature)]
    same_sigma = all(store.computed_at(keys[r]) == sigma for r in fresh) and len(fresh) == len(eligible)
    if len(fresh) < len(eligible) or (is_guide_step(step, opts.cache.interval) and not same_sigma):
        state.mode, state.layout = "guide", DualLayout(rows, eligible)
        run.guide_calls += 1
        for r in eligible:
            store.mark(keys[r], sigma, state.signature)
    else:
        state.mode, state.reuse_rows = "reuse", tuple(eligible)
        run.reuse_calls += 1
    return state


def _open_store(cache: CacheSettings, grid: TokenGrid, dm, x, rows: int, run: RunState):
    import psutil
    import comfy.model_management as mm
    blocks = len(dm.blocks) + len(getattr(dm, "vace_blocks", None) or [])
    elem = element_bytes(cache.precision, x.dtype)
    needed = cache_bytes(blocks, grid.tokens, dm.dim, rows, elem)
    device = x.device
    free_accel = mm.get_free_memory(device) if device.type != "cpu" else None
    free_host = psutil.virtual_memory().available
    where = choose_storage(cache.storage, needed, free_accel, free_host)
    if where is None:
        run.cache_off = True
        _say(run, "cache:nofit", logging.WARNING,
             "FreeSwim Cross-Attn Cache: %.2f GB of features (%d blocks x %d tokens x %d x %d rows) "
             "do not fit in %s memory; running without the cache (full branch on every step). "
             "Try storage cpu or precision fp8.", needed / 2**30, blocks, grid.tokens, dm.dim, rows,
             cache.storage)
        return None
    if device.type == "cpu":
        where = "cpu"        # the model runs on the CPU: its device is host memory
    run.store = FeatureStore(where, cache.precision, device)
    _say(run, "cache:open", logging.INFO,
         "FreeSwim Cross-Attn Cache: %.2f GB of features on %s (%s, storage %s), guide every %d steps.",
         needed / 2**30, where, cache.precision, cache.storage, cache.interval)
    return run.store


def _map_batch(args, kwargs, rows: int, fn):
    """Apply ``fn`` to every batch-sized (``rows``) tensor argument of the model call."""
    def one(v):
        return fn(v) if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == rows else v
    args = tuple(one(a) if i != _ARG_TRANSFORMER_OPTIONS else a for i, a in enumerate(args))
    kwargs = {k: (v if k == "transformer_options" else one(v)) for k, v in kwargs.items()}
    return args, kwargs


def _run_sequential(executor, args, kwargs, to, state: ForwardState):
    """The dual path as two model calls with the same result: first the full-attention twins
    alone, storing their per-block cross-attention outputs, then the caller's rows reusing
    them. The twin never depends on its window row, so nothing changes but the peak memory,
    which is that of the larger call instead of both together."""
    layout = state.layout
    sources = layout.twin_sources
    device = _arg(args, kwargs, _ARG_X, "x").device
    store = state.store if state.mode == "guide" else FeatureStore("gpu", "model", device)
    twin = state.rewound(layout=None, mode="full_only", keys=tuple(state.keys[r] for r in sources),
                         store=store)
    t_args, t_kwargs = _map_batch(args, kwargs, layout.rows,
                                  lambda t: t.index_select(0, torch.tensor(sources, device=t.device)))
    t_args, t_kwargs = _with_transformer_options(t_args, t_kwargs, {**to, FORWARD_KEY: twin})
    twin_out = executor(*t_args, **t_kwargs)
    window = state.rewound(layout=None, mode="reuse", reuse_rows=sources, store=store)
    w_args, w_kwargs = _with_transformer_options(args, kwargs, {**to, FORWARD_KEY: window})
    out = executor(*w_args, **w_kwargs)
    return torch.cat([out, twin_out]) if to.get(KEEP_TWINS_KEY) else out


def diffusion_model_wrapper(executor, *args, **kwargs):
    to = _arg(args, kwargs, _ARG_TRANSFORMER_OPTIONS, "transformer_options", None)
    opts: Optional[FreeSwimOptions] = to.get(OPTIONS_KEY) if isinstance(to, dict) else None
    if opts is None or (opts.window is None and opts.dual is None and opts.cache is None):
        return executor(*args, **kwargs)
    run = to.get(RUN_KEY)
    dm = executor.class_obj
    x = _arg(args, kwargs, _ARG_X, "x")
    grid = model_token_grid(dm, x, _arg(args, kwargs, _ARG_TIME_DIM_CONCAT, "time_dim_concat"),
                            "reference_latent" in kwargs)
    context = _arg(args, kwargs, _ARG_CONTEXT, "context")
    lengths = cross_attention_lengths(context, _arg(args, kwargs, _ARG_CLIP_FEA, "clip_fea"))
    # VACE blocks run under their main block's index, so only their shape tells them apart.
    host_indexed, has_vace = sets_block_index(dm), bool(getattr(dm, "vace_blocks", None))
    placed_by_host = host_indexed and not has_vace
    window = (plan_window(opts.window, grid, dm.dim // dm.num_heads, lengths, run, placed_by_host)
              if opts.window is not None else None)
    state = plan_dual(opts, window, to, x.shape[0], dm, x, run)
    state.host_indexed, state.check_grid, state.has_vace = host_indexed, sets_grid_sizes(dm), has_vace
    state.ref_frames = 1 if "reference_latent" in kwargs and getattr(dm, "ref_conv", None) is not None else 0
    state.cross_per_block = 2 if isinstance(dm.blocks[0].cross_attn, WanI2VCrossAttention) else 1
    if run is not None and window is not None:
        _say(run, "host-blocks", logging.INFO, "FreeSwim: attention calls placed by %s; grid %s.",
             "the host's block index" if host_indexed else "their shapes (this ComfyUI passes no block index)",
             "confirmed against the host's grid_sizes" if state.check_grid else "derived from the latent")
    layout = state.layout
    if layout is not None and layout.twin_sources and opts.dual.execution == "sequential":
        return _run_sequential(executor, args, kwargs, to, state)
    args, kwargs = _with_transformer_options(args, kwargs, {**to, FORWARD_KEY: state})
    if layout is None or not layout.twin_sources:
        return executor(*args, **kwargs)
    args, kwargs = _map_batch(args, kwargs, layout.rows, layout.expand)
    out = executor(*args, **kwargs)
    return out if to.get(KEEP_TWINS_KEY) else out[:layout.rows]


# --- the attention override ------------------------------------------------------------

def _split_heads(t, heads):
    B, L, C = t.shape
    return t.view(B, L, heads, C // heads).transpose(1, 2)


def _full_attention(call, plan: Optional[WindowPlan], q, k, v, heads, kwargs):
    """Full attention through the host's own attention (and any earlier override), with the
    FreeSwim scale folded into q: the host applies 1/sqrt(D) itself."""
    factor = plan.scale * (q.shape[-1] // heads) ** 0.5 if plan is not None else 1.0
    return call(q * factor, k, v, **kwargs)


def _self_attention(state: ForwardState, call, q, k, v, heads, kwargs):
    plan = state.window
    if state.mode == "full_only":
        return _full_attention(call, plan, q, k, v, heads, kwargs)
    layout = state.layout
    rows = layout.rows if layout is not None else q.shape[0]
    L = plan.grid.tokens if plan is not None else q.shape[1]
    parts = []
    if plan is not None:
        qh, kh, vh = (_split_heads(t[:rows], heads) for t in (q, k, v))
        out = window_attention(qh, kh, vh, plan.grid, plan.window, inward=plan.inward,
                               scale=plan.scale, backend=plan.backend)
        B, NH, _, D = out.shape
        parts.append(out.transpose(1, 2).reshape(B, L, NH * D))
    else:
        parts.append(call(q[:rows], k[:rows], v[:rows], **kwargs))
    if layout is not None and q.shape[0] > rows:
        parts.append(_full_attention(call, plan, q[rows:], k[rows:], v[rows:], heads, kwargs))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def _cross_attention(state: ForwardState, call, q, k, v, heads, kwargs, cache_block):
    total = q.shape[0]
    if state.mode == "full_only":          # twins alone: compute and keep for the window rows
        res = call(q, k, v, **kwargs)
        for r in range(total):
            state.store.put(state.keys[r], cache_block, res[r])
        return res
    if state.mode == "reuse":
        cached = {r: state.store.get(state.keys[r], cache_block) for r in state.reuse_rows}
        if any(f is None for f in cached.values()):
            return None    # a block without features (should not happen): compute it normally
        others = [r for r in range(total) if r not in cached]
        out = torch.empty(q.shape[:2] + (v.shape[-1],), dtype=q.dtype, device=q.device)
        if others:
            idx = torch.tensor(others, device=q.device)
            out[idx] = call(q[idx], k[idx], v[idx], **kwargs)
        for r, f in cached.items():
            out[r] = f
        return out
    twin_of = state.layout.twin_of()
    need = [r for r in range(total) if r not in twin_of]
    idx = torch.tensor(need, device=q.device)
    res = call(q[idx], k[idx], v[idx], **kwargs)
    out = torch.empty((total,) + tuple(res.shape[1:]), dtype=res.dtype, device=res.device)
    out[idx] = res
    for src, twin in twin_of.items():
        out[src] = out[twin]
        if state.mode == "guide":
            state.store.put(state.keys[src], cache_block, out[twin])
    return out


def _handle(state: ForwardState, call, args, kwargs):
    """FreeSwim's result for one attention call, or None to leave the call alone."""
    if len(args) < 3:
        return None
    q, k, v = args[:3]
    heads = kwargs.get("heads", args[3] if len(args) > 3 else None)
    mask = kwargs.get("mask", args[4] if len(args) > 4 else None)
    if (heads is None or mask is not None or q.dim() != 3 or k.dim() != 3
            or kwargs.get("skip_reshape") or kwargs.get("skip_output_reshape")):
        return None
    rest = {**kwargs, "heads": heads}      # heads may have come positionally
    is_self = _is_self_attention(state, q, k, v, kwargs.get("transformer_options") or {})
    if state.disabled:
        return None
    if is_self:
        state.block += 1
        state.cross_in_block = 0
        return _self_attention(state, call, q, k, v, heads, rest)
    if state.block < 0 or state.mode == "off" or k.shape[0] != q.shape[0]:
        return None
    state.cross_in_block += 1
    text_call = state.cross_in_block == state.cross_per_block
    if not text_call and not state.override_image:
        return None
    cache_block = (state.block, "text" if text_call else "image")
    return _cross_attention(state, call, q, k, v, heads, rest, cache_block)


def _is_self_attention(state: ForwardState, q, k, v, to: dict) -> bool:
    """Is this attention call a video self-attention? Sets ``state.disabled`` when the call
    does not fit the plan (then the whole model call passes through, with a warning)."""
    grid = state.grid
    shaped_like_self = grid is not None and q.shape == k.shape == v.shape and q.shape[1] == grid.tokens
    index = to.get(BLOCK_INDEX) if state.host_indexed else None
    if index is None:
        return shaped_like_self           # 0.3.x: by shape
    if index == state.host_block:         # a later call of the block: cross-attention, or the
        return state.has_vace and shaped_like_self    # self-attention of a VACE block run after it
    state.host_block = index              # the first attention call of a block is its self-attention
    if grid is None:
        return False
    problem = None
    if not shaped_like_self:
        problem = (f"block {index}'s self-attention has {q.shape[1]} tokens, not the {grid.tokens} of "
                   f"the {grid.t}x{grid.h}x{grid.w} grid (tokens that are not on the video grid)")
    elif state.check_grid and state.block < 0 and to.get(GRID_SIZES) is not None:
        host_grid = tuple(int(n) for n in to[GRID_SIZES])
        if host_grid != (grid.t - state.ref_frames, grid.h, grid.w):
            problem = f"the host's token grid {host_grid} differs from FreeSwim's {grid.as_tuple()}"
    if problem is not None:
        state.disabled = True
        log_once(f"host-mismatch:{problem}", logging.WARNING,
                 "FreeSwim Window Attention Patch: %s; this model call runs without FreeSwim. This Wan "
                 "variant is not supported by the window patch yet.", problem)
        return False
    return True


def freeswim_attention_override(func, *args, **kwargs):
    """ComfyUI ``optimized_attention_override`` for FreeSwim-patched models."""
    to = kwargs.get("transformer_options") or {}
    opts: Optional[FreeSwimOptions] = to.get(OPTIONS_KEY)
    inner = opts.inner_override if opts is not None else None

    def call(*a, **kw):
        return inner(func, *a, **kw) if inner is not None else func(*a, **kw)

    state: Optional[ForwardState] = to.get(FORWARD_KEY)
    if state is not None:
        out = _handle(state, call, args, kwargs)
        if out is not None:
            return out
    return call(*args, **kwargs)
