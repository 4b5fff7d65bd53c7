"""One sampling run's planner: every host's model calls are planned here, the same way.

A host creates a :class:`Run` when a sampling run starts (the ComfyUI nodes' OUTER_SAMPLE
wrapper; the diffusers adapter when a pipeline starts calling), gives it the model's facts
once (:class:`~.facts.ModelFacts`), and asks :meth:`Run.plan_call` for each model call's
:class:`~.call.CallPlan` with that call's facts. The run decides the window (once per grid),
which rows get a full-attention twin, the dual path's execution (the memory planner's one
rule), guide or reuse, and where the cache's features live; it keeps the run's report and
drops the cache in :meth:`Run.close`. What only a host can answer (what memory is free,
a memory plan for its model) it asks through :class:`HostServices`.

One run may be called from several threads at once: ComfyUI's MultiGPU CFG Split runs the
conditional and the unconditional work units of each step on two devices, each in its own
thread, with one Run for the sampling run. Planning and the report take the run's lock
(planning is arithmetic: it never waits on a device), and the cache keeps one store per
device: each device stores and reads the features of the rows it runs, on its own streams.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch

from .. import probes
from ..attention import choose_backend, release_run_caches
from ..dual import (CacheAction, DualLayout, FeatureStore, cache_action_for_call, cached_rows, dual_active,
                    plan_store, twin_rows)
from ..dual.calls import split_heads, window_rows
from ..geometry import TokenGrid, attention_cost
from ..host_reads import HostReads
from ..log import log_once, logger
from ..memory.execution import activation_bytes, choose_execution, fits_beside_weights
from ..settings import CacheOptions, DualOptions, WindowOptions
from ..window_plan import WindowPlan, plan_window
from .call import CallPlan, Mode
from .facts import CallFacts, ModelFacts
from .report import RunReport


@dataclass(frozen=True)
class Names:
    """How the host's messages name each part (the ComfyUI nodes' names, or "FreeSwim")."""

    window: str = "FreeSwim"
    dual: str = "FreeSwim"
    cache: str = "FreeSwim"
    # what likely computed a block's self-attention outside FreeSwim, and the fix
    unreached_hint: str = ("Something replaced their attention code after FreeSwim was installed: remove it, or "
                           "install it before FreeSwim.")


@dataclass(frozen=True)
class HostServices:
    """What the planner asks its host.

    ``free_device_bytes(device)``: memory free on the device now (the weights loaded), None where
    there is nothing to ask. ``free_host_bytes()``: host RAM available. ``plan_memory(window,
    facts, twins, mode, execution, cache_precision)``: the memory plan of one call of this model
    on this host (:func:`freeswim_core.memory.plan_memory`), None where the host has none.
    ``invalid``: the exception type for a setting the call cannot use (its message names the fix).
    """

    names: Names = Names()
    free_device_bytes: Callable = lambda device: None
    free_host_bytes: Callable = lambda: 1 << 62
    plan_memory: Optional[Callable] = None
    invalid: type = ValueError


@dataclass
class Run:
    """Per sampling run: the settings, the model's facts, the cache's store, the report."""

    model: Optional[ModelFacts] = None   # set once per run, before the first call is planned
    window: Optional[WindowOptions] = None
    dual: Optional[DualOptions] = None
    cache: Optional[CacheOptions] = None
    host: HostServices = HostServices()
    sigma_start: float = float("inf")    # the dual path runs for sigma_end <= sigma <= sigma_start
    sigma_end: float = 0.0
    uncond_runs: bool = True             # False where no unconditional pass runs (cfg 1): the cache sizes for cond
    cache_allowed: bool = True           # False for calls made outside a sampling run: no store to drop later
    once_per_process: bool = False       # messages once per process (calls outside a sampling run each get a Run)
    bypass: bool = False                 # FreeSwim's hooks were taken over: every call passes through
    stores: dict = field(default_factory=dict)            # device -> the cache's FeatureStore there
    cache_off: set = field(default_factory=set)           # devices where the cache did not fit: full branch there
    report: RunReport = field(default_factory=RunReport)
    reads: HostReads = field(default_factory=HostReads)   # sigmas and schedule read once each
    said: set = field(default_factory=set)
    _windows: dict = field(default_factory=dict)          # grid -> WindowPlan (None: a no-op)
    _memory: dict = field(default_factory=dict)           # (shape, twins, execution, device) -> (execution, plan)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def store(self) -> Optional[FeatureStore]:
        """The cache's store (the first device's, where several devices run the model)."""
        return next(iter(self.stores.values()), None)

    @store.setter
    def store(self, value: Optional[FeatureStore]) -> None:
        self.stores = {} if value is None else {str(value.device): value}

    def say(self, key: str, level: int, msg: str, *args) -> None:
        """Log once per run; warnings also go into the report."""
        if self.once_per_process:
            log_once(key, level, msg, *args)
            return
        with self.lock:
            if key in self.said:
                return
            self.said.add(key)
            if level >= logging.WARNING:
                self.report.warnings.append(msg % args if args else msg)
        logger.log(level, msg, *args)

    # --- one model call -----------------------------------------------------------------------

    @torch.compiler.disable
    def plan_call(self, f: CallFacts) -> CallPlan:
        """What FreeSwim does in the call described by ``f``; counted in the report. Host bookkeeping:
        not traced by ``torch.compile`` (ComfyUI's TorchCompileModel compiles around the wrappers)."""
        with self.lock:
            self.report.sequence_shards = self.model.sequence_shards if self.model is not None else 1
            plan = self._plan(f)
            self._count(plan)
        probes.planned(plan)
        return plan

    def _plan(self, f: CallFacts) -> CallPlan:
        window = self.window_plan(f.grid, f.ambiguous) if self.window is not None else None
        base = CallPlan(window=window, model=self.model, ref_frames=f.ref_frames)
        if window is None:
            return base
        if self.dual is None:
            self.execution_plan(f, window, 0)                    # for the run report
            return base
        if not dual_active(f.sigma, self.sigma_start, self.sigma_end):
            return base
        eligible = twin_rows(list(f.kinds), self.dual.passes)
        if not eligible:
            return base
        execution, memory = self.execution_plan(f, window, len(eligible))
        base = replace(base, keys=f.keys, execution=execution,
                       override_image=self.dual.override_image_cross and self.model.cross_per_block == 2)
        twins = DualLayout(f.rows, tuple(eligible))
        if self.cache is None or not self.cache_allowed or str(f.device) in self.cache_off:
            return replace(base, mode=Mode.DUAL, layout=twins)
        passes = self.dual.passes if self.uncond_runs else "cond"      # cfg 1: no unconditional calls to come
        stored = cached_rows(len(eligible), len(set(f.kinds)), passes, 2 if base.override_image else 1)
        store = self.stores.get(str(f.device))
        if store is None:
            store = self._open_store(f, stored, reserve=activation_bytes(memory) if memory else 0)
        if store is None:
            return replace(base, mode=Mode.DUAL, layout=twins)
        action = cache_action_for_call(store, f.keys, eligible, f.signature, f.sigma, f.step, self.cache.interval)
        if action is CacheAction.GUIDE:
            return replace(base, mode=Mode.GUIDE, layout=twins, store=store)
        return replace(base, mode=Mode.REUSE, reuse_rows=tuple(eligible), store=store)

    def window_plan(self, grid: TokenGrid, ambiguous: bool = False) -> Optional[WindowPlan]:
        """The window of calls on ``grid`` (planned once per grid and run), or None when window
        attention does nothing for them. ``ambiguous``: some attention calls can only be placed by
        shape (VACE blocks run outside the block replacement) and the grid has a conditioning's
        token count."""
        key = (grid, ambiguous)
        if key not in self._windows:
            self._windows[key] = self._new_window_plan(grid, ambiguous)
        return self._windows[key]

    def _new_window_plan(self, grid: TokenGrid, ambiguous: bool) -> Optional[WindowPlan]:
        m, settings, name = self.model, self.window, self.host.names.window
        try:
            plan = plan_window(settings, grid, m.head_dim, m.native_px, m.px_per_token, m.reference_tokens)
        except ValueError as exc:
            raise self.host.invalid(f"{name}: {exc}") from None
        window, native_px = plan.window, plan.native_px
        geometry = f"{grid.t}x{grid.h}x{grid.w}"
        if plan.is_full:
            self.say(f"noop:{geometry}:{window}", logging.INFO,
                     "%s: the %s token grid fits inside the %dx%d native window (%dx%d px); window attention "
                     "is a no-op for this run.", name, geometry, window.h, window.w, *native_px)
            return None
        if ambiguous:
            self.say(f"ambiguous:{geometry}", logging.WARNING,
                     "%s: the %s grid has %d tokens, the same count as the conditioning, and this model's VACE "
                     "blocks can only be told apart by shape; window attention is skipped for this size. "
                     "Change the width, height or frame count slightly.", name, geometry, grid.tokens)
            return None
        cost = attention_cost(grid, window, m.heads, m.head_dim, settings.inward)
        self.say(f"plan:{geometry}:{window}", logging.INFO,
                 "FreeSwim window attention: grid %s tokens, window %dx%d (native %dx%d px, %s), %s, scale %.6f "
                 "(%s), backend %s; self-attention work %.1f%% of full attention.", geometry, window.h, window.w,
                 native_px[0], native_px[1], m.native_label if settings.native_size == "auto" else settings.native_size,
                 "inward" if settings.inward else "truncated", plan.scale, settings.scale_mode, settings.backend,
                 100.0 * cost["fraction_of_full"])
        return plan

    def execution_plan(self, f: CallFacts, window: WindowPlan, twins: int):
        """(execution, memory plan or None) of the run's calls of this size: the dual path's ``auto``
        by the memory planner's rule (:func:`freeswim_core.memory.choose_execution`) against what
        the device has free now. Planned once per latent size; a plan that does not fit is said once."""
        requested = self.dual.execution if (self.dual is not None and twins) else "sequential"
        key = (tuple(f.shape), twins, requested, str(f.device))
        if key in self._memory:
            return self._memory[key]
        if self.host.plan_memory is None:
            answer = ("batched" if requested == "auto" else requested), None
            self._memory[key] = answer
            return answer
        mode = ("cache" if self.cache is not None else "dual") if twins else "window"
        precision = {"model": "bf16"}.get(self.cache.precision, self.cache.precision) if self.cache else "bf16"
        free = None if probes.device_memory_unknown() else self.host.free_device_bytes(f.device)
        execution, plan = choose_execution(
            requested, lambda e: self.host.plan_memory(window, f, twins, mode, e, precision), free)
        execution = execution if twins else requested
        self._memory[key] = (execution, plan)
        fits = fits_beside_weights(plan, free)
        self.report.memory = {**plan.as_dict(), "free_bytes": free, "activation_bytes": activation_bytes(plan),
                              "fits_free": fits}
        if twins:
            self.report.execution = execution
        if not fits:
            self.say("memory:nofit", logging.WARNING,
                     "%s: one model call at %dx%dx%d needs about %.1f GB beyond the weights (%s peak, "
                     "execution %s, 10%% allocator headroom) but %.1f GB are free on %s. Expect an "
                     "out-of-memory error or offloaded weights: use execution sequential, a "
                     "smaller size, or fp8 weights.", self.host.names.dual if twins else self.host.names.window,
                     plan.width, plan.height, plan.frames, activation_bytes(plan) / 1e9, plan.peak_phase, execution,
                     free / 1e9, f.device)
        return execution, plan

    def _open_store(self, f: CallFacts, rows: int, reserve: int = 0) -> Optional[FeatureStore]:
        """The run's feature store where the cache fits, or None (then the cache is off for the run).
        ``reserve``: device bytes the model calls themselves need (the memory plan's activations),
        which a cache on the device must leave free."""
        cache, m, name = self.cache, self.model, self.host.names.cache
        free = None
        if f.device.type != "cpu" and not probes.device_memory_unknown():
            now = self.host.free_device_bytes(f.device)
            free = None if now is None else max(0, now - reserve)
        tokens = -(-f.grid.tokens // m.sequence_shards)      # this rank's share under sequence parallelism
        sp = plan_store(cache.storage, cache.precision, m.blocks, tokens, m.dim, rows, f.dtype, f.device,
                        free, self.host.free_host_bytes())
        report = self.report
        report.cache_bytes, report.cache_precision = (sp.on_host if sp.where == "cpu" else sp.needed), cache.precision
        if sp.where is None:
            self.cache_off.add(str(f.device))
            report.cache_off_reason = (f"{sp.needed} bytes ({sp.on_host} in host RAM) do not fit in "
                                       f"{cache.storage} memory")
            self.say("cache:nofit", logging.WARNING,
                     "%s: %.2f GB of features (%d blocks x %d tokens x %d x %d rows; %.2f GB as pinned host "
                     "memory) do not fit in %s memory; running without the cache (full branch on every step). "
                     "Try storage cpu or precision fp8.", name, sp.needed / 2**30, m.blocks, tokens, m.dim,
                     rows, sp.on_host / 2**30, cache.storage)
            return None
        store = self.stores[str(f.device)] = FeatureStore(sp.where, cache.precision, f.device, prefetch=sp.prefetch)
        report.cache_storage, report.cache_prefetch = sp.where, sp.prefetch
        self.say("cache:open", logging.INFO, "%s: %.2f GB of features on %s (%s, storage %s), guide every %d steps.",
                 name, sp.needed / 2**30, sp.where, cache.precision, cache.storage, cache.interval)
        return store

    def _count(self, plan: CallPlan) -> None:
        r = self.report
        r.model_calls += 1
        if plan.window is None:
            return
        r.windowed_calls += 1
        grid = list(plan.window.grid.as_tuple())
        if grid not in r.grids:
            r.grids.append(grid)
        r.window = [plan.window.window.h, plan.window.window.w]
        r.dual_calls += plan.mode is Mode.DUAL
        r.guide_calls += plan.mode is Mode.GUIDE
        r.reuse_calls += plan.mode is Mode.REUSE

    # --- inside a call ------------------------------------------------------------------------

    def window_rows(self, w: WindowPlan, q, k, v, heads: int, in_place: bool):
        """The core's window rows, noting the backend used and the host time spent in the report."""
        choice = choose_backend(split_heads(q, heads), w.grid, w.window, w.backend, w.inward)
        started = time.perf_counter()
        out = window_rows(w, q, k, v, heads, in_place)
        with self.lock:
            if choice.backend not in self.report.backends:
                self.report.backends.append(choice.backend)
            for name, reason in choice.passed_over:
                self.report.backends_passed_over.setdefault(name, reason)
            self.report.attention_seconds += time.perf_counter() - started
        return out

    @torch.compiler.disable
    def finish_call(self, plan: CallPlan, ran, reached, culprit: Optional[Callable[[list], str]] = None) -> None:
        """After a windowed model call: of the blocks that ran (``ran``: their other attention calls,
        or FreeSwim's run of the block, were seen), those whose self-attention never reached FreeSwim
        (not in ``reached``) computed it some other way (another pack's code, as raylight's sequence
        parallelism replaces Wan's), so they had no window and no dual path: said once per run,
        naming ``culprit(blocks)`` (what the host finds in their place; asked only when it is said),
        and listed in the report
        (``unreached_blocks``). Blocks that did not run at all (skipped by a layer-skip guidance, a
        block cache's hit) are not counted."""
        if plan.window is None:
            return
        missing = sorted(set(ran) - set(reached))
        if not missing:
            return
        with self.lock:
            self.report.unreached_blocks = sorted(set(self.report.unreached_blocks) | set(missing))
            if "unreached" in self.said:
                return
        shown = ", ".join(map(str, missing[:12])) + (", ..." if len(missing) > 12 else "")
        self.say("unreached", logging.WARNING,
                 "%s: the self-attention of %d of the model's %d blocks (%s) ran but never reached FreeSwim in a "
                 "call at the %s token grid, so those blocks had no window and no dual path. %s",
                 self.host.names.window, len(missing), self.model.blocks if self.model else len(set(ran)), shown,
                 "x".join(map(str, plan.window.grid.as_tuple())),
                 (culprit(missing) if culprit is not None else "") or self.host.names.unreached_hint)

    def note_handoff(self, nbytes: int) -> None:
        with self.lock:
            if nbytes > self.report.handoff_peak_bytes:
                self.report.handoff_peak_bytes = nbytes

    # --- the end ------------------------------------------------------------------------------

    def close(self) -> RunReport:
        """End the run: drop the cached features and the window backend's per-run tables, and
        give the report, complete (the host publishes it)."""
        release_run_caches()
        if self.stores:
            self.report.cache_bytes = sum(store.nbytes() for store in self.stores.values())
            for store in self.stores.values():
                store.clear()
        self.stores = {}
        self.report.attention_seconds = round(self.report.attention_seconds, 4)
        return self.report
