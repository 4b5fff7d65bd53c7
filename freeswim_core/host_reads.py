"""Device values read to the host once, not once per model call.

Reading a CUDA tensor's value (``float(t)``, ``t.tolist()``) waits for every kernel
queued before it. The model calls of one sampling step share one sigma tensor
and a run shares one schedule, so a run keeps what it has read, keyed by the
tensor object and its version: one read per step and one for the schedule,
whatever the number of calls (cond and uncond split, multi-evaluation samplers).
"""
from __future__ import annotations

import threading
import weakref
from typing import Optional

import torch

_KEEP = 16          # tensors remembered at once (a step's sigmas, the schedule)


class HostReads:
    """One run's reads (safe to share between the threads of a multi-device run)."""

    def __init__(self):
        self._memo: dict[int, tuple] = {}
        self._lock = threading.Lock()

    def floats(self, values) -> tuple[float, ...]:
        """``values`` (a tensor or a sequence of numbers) as host floats."""
        if not isinstance(values, torch.Tensor):
            return tuple(float(v) for v in values)
        version = _version(values)
        with self._lock:
            hit = self._memo.get(id(values))
            if hit is not None and hit[0]() is values and hit[1] == version:
                return hit[2]
        read = tuple(float(v) for v in values.detach().flatten().tolist())
        with self._lock:
            if len(self._memo) >= _KEEP:
                self._memo = {k: v for k, v in self._memo.items() if v[0]() is not None}
                if len(self._memo) >= _KEEP:
                    self._memo.clear()
            self._memo[id(values)] = (weakref.ref(values), version, read)
        return read


def _version(t: torch.Tensor) -> Optional[int]:
    """The tensor's in-place version; inference tensors (ComfyUI samples in inference mode) keep
    none, and are told apart by identity alone."""
    return None if t.is_inference() else t._version


def first_value(values, reads: Optional[HostReads] = None) -> Optional[float]:
    """The first of ``values`` (this call's sigma: ComfyUI passes a tensor, hosts and tools may pass
    floats), through ``reads`` when the run has one."""
    if values is None:
        return None
    return (reads or HostReads()).floats(values)[0]
