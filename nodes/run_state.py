"""The state of one sampling run, and the report it leaves.

Created by the OUTER_SAMPLE wrapper when a sampling run starts and dropped in its
``finally``, so nothing carries over between runs, prompts, models or after an
interrupt. The :class:`RunReport` is plain JSON: the run's log line is written
from it, and tests, the demo (over HTTP) and the benchmarks read it.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Optional

from ..freeswim_core.dual import FeatureStore
from ..freeswim_core.log import log_once, logger
from ..freeswim_core.host_reads import HostReads

RECENT_REPORTS = 32


@dataclass
class RunReport:
    """What one sampling run did (all fields JSON-serialisable)."""

    run: int = 0                                         # sequence number in this process
    prompt_id: Optional[str] = None
    node_id: Optional[str] = None
    grids: list = field(default_factory=list)           # [t, h, w] token grids seen
    window: Optional[list] = None                        # [h, w] tokens
    backends: list = field(default_factory=list)        # window backends actually used
    model_calls: int = 0
    windowed_calls: int = 0
    dual_calls: int = 0                                  # full branch run, no cache
    guide_calls: int = 0
    reuse_calls: int = 0
    execution: Optional[str] = None                      # batched | sequential
    handoff_peak_bytes: int = 0                          # largest cross-attention hand-off held at once
    host_grid_confirmed: bool = False                    # the host's grid_sizes matched FreeSwim's grid
    cache_bytes: int = 0
    cache_storage: Optional[str] = None
    cache_precision: Optional[str] = None
    cache_prefetch: bool = False                         # host-stored blocks uploaded ahead of their read
    cache_off_reason: Optional[str] = None
    attention_seconds: float = 0.0                       # in window attention (host clock)
    memory: Optional[dict] = None                        # the memory plan of the run's calls (freeswim_core.memory)
    warnings: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunState:
    """Per sampling run: settings resolved at its start, the cache, the report."""

    sigma_start: float = float("inf")    # dual path active for sigma_end <= sigma <= sigma_start
    sigma_end: float = 0.0
    bypass: bool = False                 # FreeSwim's override was replaced: run the model untouched
    uncond_runs: bool = True             # False where ComfyUI skips the unconditional pass (cfg 1)
    store: Optional[FeatureStore] = None
    cache_off: bool = False              # the cache did not fit: full branch every step
    memory_key: Optional[tuple] = None   # (latent shape, twins, execution asked) the plan below is for
    memory_execution: str = "sequential"
    memory_plan: Optional[object] = None
    report: RunReport = field(default_factory=RunReport)
    said: set = field(default_factory=set)
    host_reads: HostReads = field(default_factory=HostReads)   # sigmas and schedule read once each

    def say(self, key: str, level: int, msg: str, *args) -> None:
        """Log once per run; warnings also go into the report."""
        if key in self.said:
            return
        self.said.add(key)
        logger.log(level, msg, *args)
        if level >= logging.WARNING:
            self.report.warnings.append(msg % args if args else msg)


def say(run: Optional[RunState], key: str, level: int, msg: str, *args) -> None:
    if run is not None:
        run.say(key, level, msg, *args)
    else:
        log_once(key, level, msg, *args)


_recent: collections.deque = collections.deque(maxlen=RECENT_REPORTS)
_lock = threading.Lock()
_runs = 0
_listeners: list = []          # called with each published report (the server's UI event)


def add_listener(fn) -> None:
    if fn not in _listeners:
        _listeners.append(fn)


def publish(report: RunReport) -> None:
    """Keep the report among the recent ones (``recent_reports``) and log it as one JSON line."""
    global _runs
    with _lock:
        _runs += 1
        report.run = _runs
        _recent.append(report.as_dict())
    logger.info("FreeSwim run report: %s", json.dumps(report.as_dict(), sort_keys=True))
    for listener in list(_listeners):
        listener(report.as_dict())


def recent_reports(prompt_id: Optional[str] = None) -> list[dict]:
    """Reports of the most recent sampling runs, oldest first (of one prompt, if given)."""
    with _lock:
        return [r for r in _recent if prompt_id is None or r.get("prompt_id") == prompt_id]
