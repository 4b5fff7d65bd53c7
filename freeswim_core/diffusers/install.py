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

import collections
import os
from dataclasses import replace
from types import SimpleNamespace
from typing import Optional, Sequence

import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .. import probes
from ..dual import dual_sigma_range, step_index
from ..families import detected_native
from ..geometry import token_grid_from_latent
from ..host_reads import HostReads
from ..planner import CallFacts, CallPlan, HostServices, ModelFacts, Run, RunReport
from ..settings import CacheOptions, DualOptions, WindowOptions
from .processors import FreeSwimCrossAttention, FreeSwimSelfAttention
from .ulysses import Ulysses, ulysses_of

HOOK_NAME = "freeswim"
ROWS_KEY = "freeswim_rows"
KINDS = {"cond": 0, "uncond": 1}


def flow_shift_of(scheduler) -> Optional[float]:
    """The flow shift of a diffusers flow-matching scheduler (UniPC's ``flow_shift`` with flow
    sigmas, FlowMatchEuler's ``shift``), or None."""
    config = getattr(scheduler, "config", None) or {}
    if config.get("use_flow_sigmas") and config.get("flow_shift") is not None:
        return float(config["flow_shift"])
    if config.get("shift") is not None and not config.get("use_dynamic_shifting", False):
        return float(config["shift"])
    return None


def _free_device_bytes(device: torch.device) -> Optional[int]:
    return int(torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else None


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
    ``guidance_scale``: the pipeline call's; at 1 or below diffusers' Wan pipelines make no
    unconditional call, so the cache keeps the conditional pass's features only.

    Each pipeline run is planned by the core's planner (:class:`freeswim_core.planner.Run`), the
    one the ComfyUI nodes use, and leaves its own :class:`~freeswim_core.planner.RunReport`:
    :attr:`report` is the current run's (the last finished one's until a new run makes a call),
    :attr:`reports` the finished runs' (the most recent 32)."""

    def __init__(self, transformer, window: WindowOptions = WindowOptions(),
                 dual: Optional[DualOptions] = DualOptions(), cache: Optional[CacheOptions] = CacheOptions(),
                 vae_scale_factor: Optional[int] = None, scheduler=None, guidance_scale: Optional[float] = None):
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
        self.uncond_runs = guidance_scale is None or guidance_scale > 1.0
        heads, head_dim = int(cfg.num_attention_heads), int(cfg.attention_head_dim)
        self.patch = tuple(int(p) for p in cfg.patch_size)
        vae = int(vae_scale_factor or (16 if int(cfg.in_channels) == 48 else 8))
        native_px, native_label = detected_native("wan", heads * head_dim, vae)
        self.model = ModelFacts(family="wan", blocks=len(transformer.blocks), dim=heads * head_dim, heads=heads,
                                head_dim=head_dim, px_per_token=vae * self.patch[1], native_px=native_px,
                                native_label=native_label,
                                cross_per_block=2 if cfg.added_kv_proj_dim is not None else 1)
        self.services = HostServices(free_device_bytes=self._free_device_bytes, free_host_bytes=self._free_host_bytes)
        self._device: Optional[torch.device] = None  # the current call's
        self.reports: collections.deque[RunReport] = collections.deque(maxlen=32)
        self.run = self._new_run()
        self.current_call: Optional[CallPlan] = None
        self.ulysses: Optional[Ulysses] = None       # the current call's context-parallel group, if any
        self.reached: set = set()                    # blocks whose self-attention reached FreeSwim (this call)
        self.ran: set = set()                        # blocks whose cross-attention ran (this call)
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

    def unreached_culprit(self, blocks) -> str:
        """What sits in FreeSwim's place on these blocks' self-attention, and the fix."""
        kinds = sorted({type(self.transformer.blocks[i].attn1.processor).__name__ for i in blocks})
        return (f"Their attn1 processor is {', '.join(kinds)}, set after FreeSwim was installed: set it before "
                f"installing FreeSwim, or not at all.")

    def _free_device_bytes(self, device) -> Optional[int]:
        free = _free_device_bytes(device)
        return self.ulysses.least(free, device) if self.ulysses is not None else free

    def _free_host_bytes(self) -> int:
        free = _free_host_bytes()
        return self.ulysses.least(free, self._device) if self.ulysses is not None else free

    def _new_run(self) -> Run:
        return Run(model=self.model, window=self.window, dual=self.dual, cache=self.cache, host=self.services,
                   sigma_start=self._sigma_range[0], sigma_end=self._sigma_range[1], uncond_runs=self.uncond_runs)

    @property
    def report(self) -> RunReport:
        """The current run's report, or the last finished run's while the current one has made no call."""
        if self.run.report.model_calls == 0 and self.reports:
            return self.reports[-1]
        return self.run.report

    def remove(self) -> None:
        """Give the transformer back as it was."""
        HookRegistry.check_if_exists_or_initialize(self.transformer).remove_hook(HOOK_NAME, recurse=False)
        for block, (attn1, attn2) in zip(self.transformer.blocks, self._originals):
            block.attn1.set_processor(attn1)
            block.attn2.set_processor(attn2)
        self.reset()
        self.transformer._freeswim = None

    def reset(self) -> None:
        """End the run (its cached features are dropped) and start the next one."""
        report = self.run.close()
        if report.model_calls:
            self.reports.append(report)
        self.run = self._new_run()
        self._last_step = None
        self._timestep, self._step, self._calls_at_step = None, -1, 0

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

    # --- planning one call --------------------------------------------------------------------

    def plan(self, hidden_states: torch.Tensor, context, kinds: Optional[Sequence]) -> CallPlan:
        """The core planner's plan for this call (its facts read off the pipeline's call)."""
        self.ulysses, self._device = ulysses_of(self.transformer), hidden_states.device
        shards = 1
        if self.ulysses is not None:
            self.ulysses.check_heads(self.model.heads)
            shards = self.ulysses.degree
        if self.model.sequence_shards != shards:          # each rank holds (and caches) its shard's tokens
            self.model = replace(self.model, sequence_shards=shards)
        if self.run.model.sequence_shards != shards:      # (the next runs are made from self.model)
            self.run.model = replace(self.run.model, sequence_shards=shards)
        step = getattr(context, "step_index", None)
        if step is not None and self._last_step is not None and step < self._last_step:
            self.reset()                              # a new run (the last one was interrupted)
        if step is not None:
            self._last_step = step
        rows = hidden_states.shape[0]
        name = getattr(context, "name", None) or "cond"
        row_kinds, keys = (), ()
        if self.dual is not None:             # what only the dual path reads
            row_kinds = tuple(self._row_kinds(kinds, name, rows))
            keys = tuple((kinds[r] if kinds is not None else name, r) for r in range(rows))
        facts = CallFacts(grid=token_grid_from_latent(hidden_states.shape, self.patch), rows=rows,
                          kinds=row_kinds, keys=keys,
                          sigma=getattr(context, "sigma", None), step=step, channels=int(hidden_states.shape[1]),
                          dtype=hidden_states.dtype, device=hidden_states.device, shape=tuple(hidden_states.shape))
        return self.run.plan_call(facts)

    @staticmethod
    def _row_kinds(kinds: Optional[Sequence], name: str, rows: int) -> list[int]:
        if kinds is None:
            return [KINDS.get(name, 0)] * rows
        if len(kinds) != rows or any(k not in KINDS for k in kinds):
            raise ValueError(f"FreeSwim: attention_kwargs['{ROWS_KEY}'] must name each of the {rows} rows "
                             f"'cond' or 'uncond'; got {list(kinds)!r}")
        return [KINDS[k] for k in kinds]


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
        fs.reached, fs.ran = set(), set()
        try:
            out = self.fn_ref.original_forward(hidden_states, timestep, encoder_hidden_states,
                                               encoder_hidden_states_image, return_dict=False,
                                               attention_kwargs=attention_kwargs or None)[0]
            fs.run.finish_call(call, fs.ran, fs.reached, fs.unreached_culprit)
        finally:
            fs.current_call, fs.ulysses = None, None
        if call.layout is not None:
            probes.output(call, out)
            out = out[:rows]
        if not return_dict:
            return (out,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput
        return Transformer2DModelOutput(sample=out)
