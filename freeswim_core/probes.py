"""Probes: the documented way for tests, traces and tools to watch a run or stand in for a part.

Product code never carries a key or a flag for its tests. Where something outside needs to
see inside a run (the full-attention twins' rows for a parity check, the plan of every
model call) or to replace what cannot run where it is measured (a memory trace on a fake
device cannot compile the window kernel nor ask the device what is free), it registers a
:class:`Probe` for the duration of a ``with probing(...)`` block. Every host calls the same
hooks, so a probe works the same on the ComfyUI nodes and the diffusers adapter. With no
probe registered each hook is a loop over an empty list. ComfyUI imports the pack under its
folder's path, so a probe for the nodes is registered on that copy of this module
(``harness.inprocess.pack_module("freeswim_core.probes")``).
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable, Optional

_probes: list["Probe"] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class Probe:
    """Watchers (``on_*``) are called; stand-ins (the others) replace a part while set."""

    on_call: Optional[Callable] = None           # (CallPlan) -> None: every planned model call
    on_output: Optional[Callable] = None         # (CallPlan, output) -> None: a model call's output with its
                                                 # twin rows after the caller's, before they are cut off
    window_kernel: Optional[Callable] = None     # (device) -> kernel: stands in for the compiled flex kernel
    natten_kernel: Optional[Callable] = None     # (q, k, v heads-last, kernel_size=, scale=) -> output: stands
                                                 # in for NATTEN's fused call (and says it can run)
    block_tables: Optional[Callable] = None      # (grid, window, inward, device, block_size) -> the four
                                                 # BlockMask tables: stands in for flex's table builder
    device_memory_unknown: bool = False          # hosts report no free-memory limit (a device with nothing to ask)


@contextlib.contextmanager
def probing(probe: Probe):
    """Register ``probe`` for the block."""
    with _lock:
        _probes.append(probe)
    try:
        yield probe
    finally:
        with _lock:
            _probes.remove(probe)


def _first(name: str):
    for p in _probes:
        value = getattr(p, name)
        if value:
            return value
    return None


def planned(plan) -> None:
    """Every registered probe's ``on_call`` sees ``plan`` (hosts call this for each planned call)."""
    for p in list(_probes):
        if p.on_call is not None:
            p.on_call(plan)


def output(plan, out) -> None:
    """Every registered probe's ``on_output`` sees a call's output with its twin rows."""
    for p in list(_probes):
        if p.on_output is not None:
            p.on_output(plan, out)


def window_kernel_stand_in() -> Optional[Callable]:
    return _first("window_kernel") if _probes else None


def natten_kernel_stand_in() -> Optional[Callable]:
    return _first("natten_kernel") if _probes else None


def block_tables_stand_in() -> Optional[Callable]:
    return _first("block_tables") if _probes else None


def device_memory_unknown() -> bool:
    return bool(_probes) and any(p.device_memory_unknown for p in _probes)
