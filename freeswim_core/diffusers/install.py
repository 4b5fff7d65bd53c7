"""FreeSwim installed on a diffusers ``WanTransformer3DModel``.

:class:`FreeSwim` puts FreeSwim's processors on every block's attention and a
diffusers model hook around the transformer's forward. Per model call the hook
plans what FreeSwim does (the core decides: window geometry and scale from the
native size, which rows get a full-attention twin, guide or reuse), appends the
twin rows, and cuts them off the output.

The hook is a *stateful* diffusers hook, so diffusers' pipelines tell it which
pass a call is (``cache_context("cond" | "uncond", step_index=, sigma=)``) and
reset it when a pipeline call ends (the cache is dropped). What a pipeline does
not say is read from the calls themselves, as diffusers' Wan pipelines make them
(some give no context, or a name only): a new timestep is a new step (its sigma
the scheduler's at that timestep when FreeSwim was given the scheduler, else
t / 1000, the flow-matching timestep), and the calls at one timestep are the
conditional pass, then the unconditional one. Rows of a call that batches both
passes are named with ``attention_kwargs={"freeswim_rows": ["uncond", "cond"]}``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional, Sequence

import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from ..attention import backend_for, release_run_caches
from ..dual import (CacheAction, DualLayout, FeatureStore, cache_action_for_call, cached_rows, dual_active,
                    dual_sigma_range, plan_store, step_index, twin_rows)
from ..dual.calls import split_heads
from ..geometry import token_grid_from_latent
from ..host_reads import HostReads
from ..log import log_once, logger
from ..native import detected_native
from ..settings import CacheOptions, DualOptions, WindowOptions
from ..window_plan import WindowPlan, plan_window
from .processors import FreeSwimCrossAttention, FreeSwimSelfAttention

HOOK_NAME = "freeswim"
ROWS_KEY = "freeswim_rows"
KINDS = {"cond": 0, "uncond": 1}


@dataclass(frozen=True)
class DiffusersCall:
    """What FreeSwim does in one transformer call (read by the processors)."""

    window: Optional[WindowPlan]
    mode: str = "off"                    # off (window attention only) | dual | guide | reuse
    layout: Optional[DualLayout] = None  # dual/guide: twins appended after the caller's rows
    keys: tuple = ()                     # cache key per caller row
    reuse_rows: tuple = ()
    store: Optional[FeatureStore] = None


@dataclass
class Report:
    """What FreeSwim did since it was installed (calls by mode, backends used)."""

    model_calls: int = 0
    windowed_calls: int = 0
    dual_calls: int = 0
    guide_calls: int = 0
    reuse_calls: int = 0
    backends: tuple = ()


def flow_shift_of(scheduler) -> Optional[float]:
    """The flow shift of a diffusers flow-matching scheduler (UniPC's ``flow_shift`` with flow
    sigmas, FlowMatchEuler's ``shift``), or None."""
    config = getattr(scheduler, "config", None) or {}
    if config.get("use_flow_sigmas") and config.get("flow_shift") is not None:
        return float(config["flow_shift"])
    if config.get("shift") is not None and not config.get("use_dynamic_shifting", False):
        return float(config["shift"])
    return None


def _free_host_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


class FreeSwim:
    """FreeSwim on one ``WanTransformer3DModel``: ``window`` always, the dual path with ``dual``,
    the cross-attention cache with ``cache`` (which needs ``dual``). ``vae_scale_factor``: the
    spatial factor of the pipeline's VAE (8 for Wan 2.1 and the 2.2 14B models, 16 for TI2V-5B;
    by default from the transformer's channels). ``scheduler``: the pipeline's scheduler
    (``pipe.scheduler``); with it, a call's sigma is the schedule's own where the pipeline gives
    only a timestep (diffusers' flow schedulers round timesteps to integers), and it is needed
    where ``dual`` limits the active range: ``start_percent``/``end_percent`` are points of the
    flow schedule, as in ComfyUI, turned into sigmas under the scheduler's flow shift.
    ``keep_twins`` (a diagnostic) returns the full-attention twin rows after the caller's rows."""

    def __init__(self, transformer, window: WindowOptions = WindowOptions(),
                 dual: Optional[DualOptions] = DualOptions(), cache: Optional[CacheOptions] = CacheOptions(),
                 vae_scale_factor: Optional[int] = None, scheduler=None, keep_twins: bool = False):
        if not isinstance(transformer, WanTransformer3DModel):
            raise TypeError(f"FreeSwim: expected a diffusers WanTransformer3DModel (pipe.transformer of a Wan "
                            f"pipeline), got {type(transformer).__name__}; other model families are not supported.")
        if cache is not None and dual is None:
            raise ValueError("FreeSwim: the cross-attention cache stores the dual path's features; pass dual= too "
                             "(or cache=None).")
        if dual is not None and dual.execution == "sequential":
            raise ValueError("FreeSwim: execution 'sequential' (twins, then window rows, per block) exists in the "
                             "ComfyUI nodes only; the diffusers adapter runs the dual path batched: use 'auto' or "
                             "'batched'.")
        self.scheduler = scheduler
        self._sigma_range = (float("inf"), 0.0)
        if dual is not None and (dual.start_percent, dual.end_percent) != (0.0, 1.0):
            shift = flow_shift_of(scheduler)
            if shift is None:
                raise ValueError("FreeSwim: start_percent/end_percent are points of the flow schedule (as in "
                                 "ComfyUI); pass the pipeline's flow-matching scheduler: "
                                 f"FreeSwim(..., scheduler=pipe.scheduler) (got {type(scheduler).__name__}).")
            self._sigma_range = dual_sigma_range(dual.start_percent, dual.end_percent, shift)
        if getattr(transformer, "_freeswim", None) is not None:
            raise ValueError("FreeSwim is already installed on this transformer; call .remove() on it first.")
        cfg = transformer.config
        self.transformer = transformer
        self.window, self.dual, self.cache = window, dual, cache
        self.keep_twins = keep_twins
        self.heads, self.head_dim = int(cfg.num_attention_heads), int(cfg.attention_head_dim)
        self.patch = tuple(int(p) for p in cfg.patch_size)
        vae = int(vae_scale_factor or (16 if int(cfg.in_channels) == 48 else 8))
        self.px_per_token = vae * self.patch[1]
        self.native_px, self.native_label = detected_native(self.heads * self.head_dim, vae)
        self.report = Report()
        self.current_call: Optional[DiffusersCall] = None
        self._store: Optional[FeatureStore] = None
        self._last_step: Optional[int] = None
        self._reads = HostReads()
        self._timestep: Optional[float] = None      # the last call's timestep, its step, calls at it
        self._step, self._calls_at_step = -1, 0
        self._originals = []
        for i, block in enumerate(transformer.blocks):
            self._originals.append((block.attn1.processor, block.attn2.processor))
            block.attn1.set_processor(FreeSwimSelfAttention(self, i, block.attn1.processor))
            block.attn2.set_processor(FreeSwimCrossAttention(self, i, block.attn2.processor))
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(_FreeSwimHook(self), HOOK_NAME)
        transformer._freeswim = self

    def remove(self) -> None:
        """Give the transformer back as it was."""
        HookRegistry.check_if_exists_or_initialize(self.transformer).remove_hook(HOOK_NAME, recurse=False)
        for block, (attn1, attn2) in zip(self.transformer.blocks, self._originals):
            block.attn1.set_processor(attn1)
            block.attn2.set_processor(attn2)
        self.reset()
        self.transformer._freeswim = None

    def reset(self) -> None:
        """Drop the run's state (the cached features): a sampling run ended."""
        if self._store is not None:
            self._store.clear()
        self._store, self._last_step = None, None
        self._timestep, self._step, self._calls_at_step = None, -1, 0
        release_run_caches()                    # the window backend's BlockMask tables and bounds

    def context_of(self, given, timestep: torch.Tensor):
        """The call's pass name, step index and sigma: as the pipeline gave them (``given``, a
        diffusers CacheContext or None), the rest read from the timestep (see the module doc)."""
        step = getattr(given, "step_index", None)
        sigma = getattr(given, "sigma", None)
        if step is not None and sigma is not None and getattr(given, "name", None):
            return given                        # all said: no value read from the device
        if timestep.numel() == 0:
            t = None
        elif timestep.dim() > 1:        # per-token timesteps (Wan2.2 TI2V): conditioning tokens are at 0
            t = float(timestep.max())
        else:
            t = self._reads.floats(timestep)[0]
        if t is not None and t != self._timestep:
            if self._timestep is not None and t > self._timestep:
                self.reset()                        # the timestep went back up: a new run
            self._timestep, self._step, self._calls_at_step = t, self._step + 1, 0
        inferred = ("cond", "uncond")[min(self._calls_at_step, 1)]
        self._calls_at_step += 1
        return SimpleNamespace(name=getattr(given, "name", None) or inferred,
                               step_index=step if step is not None else max(self._step, 0),
                               sigma=sigma if sigma is not None else self._sigma_of(t))

    def _sigma_of(self, t: Optional[float]) -> Optional[float]:
        """The schedule's sigma at timestep ``t`` (each read once per schedule), else ``t / 1000``."""
        if t is None:
            return None
        timesteps, sigmas = getattr(self.scheduler, "timesteps", None), getattr(self.scheduler, "sigmas", None)
        if timesteps is not None and sigmas is not None and len(sigmas) >= len(timesteps):
            at = step_index(t, self._reads.floats(timesteps))
            if at is not None:
                return self._reads.floats(sigmas)[at]
        return t / 1000.0

    def note_backend(self, q: torch.Tensor, heads: int, w: WindowPlan) -> None:
        used = backend_for(split_heads(q, heads), w.grid, w.window, w.backend)
        if used not in self.report.backends:
            self.report.backends += (used,)

    # --- planning one call --------------------------------------------------------------------

    def plan(self, hidden_states: torch.Tensor, context, kinds: Optional[Sequence]) -> DiffusersCall:
        grid = token_grid_from_latent(hidden_states.shape, self.patch)
        w = plan_window(self.window, grid, self.head_dim, self.native_px, self.px_per_token)
        if w.is_full:
            log_once(f"diffusers-noop:{grid.as_tuple()}", logging.INFO, "FreeSwim: the %dx%dx%d token grid fits "
                     "inside the %dx%d native window; window attention is a no-op.", *grid.as_tuple(), *w.window.as_tuple())
            return DiffusersCall(window=None)
        log_once(f"diffusers-plan:{grid.as_tuple()}:{w.window}", logging.INFO,
                 "FreeSwim: grid %s tokens, window %dx%d (native %dx%d px), scale %.6f, backend %s.",
                 grid.as_tuple(), w.window.h, w.window.w, *w.native_px, w.scale, w.backend)
        base = DiffusersCall(window=w)
        step = getattr(context, "step_index", None)
        if step is not None and self._last_step is not None and step < self._last_step:
            self.reset()                              # a new run (the last one was interrupted)
        if step is not None:
            self._last_step = step
        if self.dual is None or not self._active(context):
            return base
        rows = hidden_states.shape[0]
        name = getattr(context, "name", None) or "cond"
        row_kinds = self._row_kinds(kinds, name, rows)
        eligible = twin_rows(row_kinds, self.dual.passes)
        if not eligible:
            return base
        keys = tuple((kinds[r] if kinds is not None else name, r) for r in range(rows))
        twins = DualLayout(rows, eligible)
        if self.cache is None:
            return DiffusersCall(w, "dual", twins, keys)
        image_too = self.dual.override_image_cross and self.transformer.config.added_kv_proj_dim is not None
        stored = cached_rows(len(eligible), len(set(row_kinds)), self.dual.passes, 2 if image_too else 1)
        store = self._store or self._open_store(grid, hidden_states, stored)
        if store is None:
            return DiffusersCall(w, "dual", twins, keys)
        sigma = getattr(context, "sigma", None)
        signature = (grid.as_tuple(), hidden_states.shape[1], str(hidden_states.dtype))
        action = cache_action_for_call(store, keys, eligible, signature, sigma, step, self.cache.interval)
        if action is CacheAction.GUIDE:
            return DiffusersCall(w, "guide", twins, keys, store=store)
        return DiffusersCall(w, "reuse", None, keys, reuse_rows=eligible, store=store)

    def _active(self, context) -> bool:
        """Whether the call's sigma is inside the dual path's active range (every call by default)."""
        return dual_active(getattr(context, "sigma", None), *self._sigma_range)

    @staticmethod
    def _row_kinds(kinds: Optional[Sequence], name: str, rows: int) -> list[int]:
        if kinds is None:
            return [KINDS.get(name, 0)] * rows
        if len(kinds) != rows or any(k not in KINDS for k in kinds):
            raise ValueError(f"FreeSwim: attention_kwargs['{ROWS_KEY}'] must name each of the {rows} rows "
                             f"'cond' or 'uncond'; got {list(kinds)!r}")
        return [KINDS[k] for k in kinds]

    def _open_store(self, grid, x: torch.Tensor, rows: int) -> Optional[FeatureStore]:
        c = self.cache
        free_accel = torch.cuda.mem_get_info(x.device)[0] if x.device.type == "cuda" else None
        sp = plan_store(c.storage, c.precision, len(self.transformer.blocks), grid.tokens,
                        self.heads * self.head_dim, rows, x.dtype, x.device, free_accel, _free_host_bytes())
        if sp.where is None:
            log_once(f"diffusers-cache-nofit:{grid.as_tuple()}", logging.WARNING,
                     "FreeSwim: %.2f GB of cached features do not fit in %s memory; running without the cache. "
                     "Try storage 'cpu' or precision 'fp8'.", sp.needed / 2**30, c.storage)
            return None
        self._store = FeatureStore(sp.where, c.precision, x.device, prefetch=sp.prefetch)
        logger.info("FreeSwim: %.2f GB of cached features on %s (%s), guide every %d steps.",
                    sp.needed / 2**30, sp.where, c.precision, c.interval)
        return self._store

    def count(self, call: DiffusersCall) -> None:
        r = self.report
        r.model_calls += 1
        r.windowed_calls += call.window is not None
        r.dual_calls += call.mode == "dual"
        r.guide_calls += call.mode == "guide"
        r.reuse_calls += call.mode == "reuse"


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class _FreeSwimHook(ModelHook):
    """The transformer's forward with FreeSwim's plan: twins appended, then cut off the output.

    Stateful, so that diffusers' ``cache_context`` reaches it (``self.passes``) and pipelines
    reset it when they finish (the run's cached features are dropped)."""

    _is_stateful = True

    def __init__(self, fs: FreeSwim):
        super().__init__()
        self.fs = fs
        self.passes = StateManager(_NoState)

    def reset_state(self, module):
        self.fs.reset()
        return module

    def new_forward(self, module, hidden_states, timestep, encoder_hidden_states,
                    encoder_hidden_states_image=None, return_dict=True, attention_kwargs=None):
        fs = self.fs
        attention_kwargs = dict(attention_kwargs or {})
        kinds = attention_kwargs.pop(ROWS_KEY, None)
        call = fs.plan(hidden_states, fs.context_of(self.passes._context, timestep), kinds)
        fs.count(call)
        rows = hidden_states.shape[0]
        if call.layout is not None:
            expand = call.layout.expand
            hidden_states = expand(hidden_states)
            if timestep.dim() > 0 and timestep.shape[0] == rows:
                timestep = expand(timestep)
            if encoder_hidden_states.shape[0] == rows:
                encoder_hidden_states = expand(encoder_hidden_states)
            if encoder_hidden_states_image is not None and encoder_hidden_states_image.shape[0] == rows:
                encoder_hidden_states_image = expand(encoder_hidden_states_image)
        fs.current_call = call
        try:
            out = self.fn_ref.original_forward(hidden_states, timestep, encoder_hidden_states,
                                               encoder_hidden_states_image, return_dict=False,
                                               attention_kwargs=attention_kwargs or None)[0]
        finally:
            fs.current_call = None
        if call.layout is not None and not fs.keep_twins:
            out = out[:rows]
        if not return_dict:
            return (out,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput
        return Transformer2DModelOutput(sample=out)
