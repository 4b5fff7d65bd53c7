"""Glue between the FreeSwim nodes and ComfyUI's sampling machinery.

How a patched Wan model runs:

* The node stores its settings in ``transformer_options["freeswim"]`` and installs
  one attention override, :func:`freeswim_attention_override`, in ComfyUI's single
  ``optimized_attention_override`` slot. An override that another pack installed
  earlier is kept and called for every call FreeSwim does not handle.
* A DIFFUSION_MODEL wrapper sees every model call with the real latent. It derives
  the token grid from the latent shape and the patch size (ComfyUI 0.3.75 tells
  the blocks neither ``grid_sizes`` nor ``block_index``), decides what this call
  does and hands that plan to the override through ``transformer_options``.
* An OUTER_SAMPLE wrapper gives every sampling run its own small state (what has
  been logged) and drops it in ``finally``, so nothing carries over between runs,
  prompts or models.

The override recognises video self-attention by shape: q, k and v with the grid's
token count and no mask. Cross-attention keys are text (512) or CLIP image
tokens; when the grid's token count happens to equal one of those lengths the two
cannot be told apart and the call is passed through, with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import comfy.model_patcher
import comfy.patcher_extension
from comfy.patcher_extension import WrappersMP

from ..freeswim_core import (TokenGrid, Window, attention_cost, attention_scale,
                             token_grid_from_latent, window_attention)
from ..freeswim_core.log import log_once, logger
from .wan import WanInfo, native_tokens_per_frame, native_window_for, resolve_native_px

OPTIONS_KEY = "freeswim"
FORWARD_KEY = "freeswim_forward"
RUN_KEY = "freeswim_run"
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
class FreeSwimOptions:
    """Everything the FreeSwim patches put on a model, in one place, so that the
    nodes can be applied in any order and any number of times."""

    window: Optional[WindowSettings] = None
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
    guider.model_options.setdefault("transformer_options", {})[RUN_KEY] = RunState()
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = orig


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
                cross_lengths: set[int], run: Optional[RunState]) -> Optional[WindowPlan]:
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
    if grid.tokens in cross_lengths:
        _say(run, f"ambiguous:{geometry}", logging.WARNING,
             "FreeSwim Window Attention Patch: the %s grid has %d tokens, the same count as the "
             "conditioning, so self- and cross-attention cannot be told apart; window attention "
             "is skipped for this size. Change the width, height or frame count slightly.",
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


def diffusion_model_wrapper(executor, *args, **kwargs):
    to = _arg(args, kwargs, _ARG_TRANSFORMER_OPTIONS, "transformer_options", None)
    opts: Optional[FreeSwimOptions] = to.get(OPTIONS_KEY) if isinstance(to, dict) else None
    if opts is None or opts.window is None:
        return executor(*args, **kwargs)
    dm = executor.class_obj
    x = _arg(args, kwargs, _ARG_X, "x")
    grid = model_token_grid(dm, x, _arg(args, kwargs, _ARG_TIME_DIM_CONCAT, "time_dim_concat"),
                            "reference_latent" in kwargs)
    lengths = cross_attention_lengths(_arg(args, kwargs, _ARG_CONTEXT, "context"),
                                      _arg(args, kwargs, _ARG_CLIP_FEA, "clip_fea"))
    plan = plan_window(opts.window, grid, dm.dim // dm.num_heads, lengths, to.get(RUN_KEY))
    args, kwargs = _with_transformer_options(args, kwargs, {**to, FORWARD_KEY: plan})
    return executor(*args, **kwargs)


# --- the attention override ------------------------------------------------------------

def _window_self_attention(plan: WindowPlan, args, kwargs):
    """Window attention for a video self-attention call, or None if the call is not one."""
    if len(args) < 3:
        return None
    q, k, v = args[:3]
    heads = kwargs.get("heads", args[3] if len(args) > 3 else None)
    mask = kwargs.get("mask", args[4] if len(args) > 4 else None)
    if heads is None or mask is not None or not (q.shape == k.shape == v.shape):
        return None
    skip_reshape = kwargs.get("skip_reshape", False)
    L = plan.grid.tokens
    if skip_reshape:
        if q.dim() != 4 or q.shape[1] != heads or q.shape[2] != L:
            return None
        qh, kh, vh = q, k, v
    else:
        if q.dim() != 3 or q.shape[1] != L or q.shape[2] % heads:
            return None
        B, _, C = q.shape
        qh, kh, vh = (t.view(B, L, heads, C // heads).transpose(1, 2) for t in (q, k, v))
    out = window_attention(qh, kh, vh, plan.grid, plan.window, inward=plan.inward,
                           scale=plan.scale, backend=plan.backend)
    if kwargs.get("skip_output_reshape", False):
        return out
    B, NH, _, D = out.shape
    return out.transpose(1, 2).reshape(B, L, NH * D)


def freeswim_attention_override(func, *args, **kwargs):
    """ComfyUI ``optimized_attention_override`` for FreeSwim-patched models."""
    to = kwargs.get("transformer_options") or {}
    opts: Optional[FreeSwimOptions] = to.get(OPTIONS_KEY)
    plan: Optional[WindowPlan] = to.get(FORWARD_KEY)
    if plan is not None:
        out = _window_self_attention(plan, args, kwargs)
        if out is not None:
            return out
    inner = opts.inner_override if opts is not None else None
    if inner is not None:
        return inner(func, *args, **kwargs)
    return func(*args, **kwargs)
