"""Count the device bytes that ops allocate and free, in order: a small dispatch-mode counter.

Used where ``MemTracker`` cannot be (a module called many times, as the Wan VAE calls its
decoder once per chunk of frames). Every op's output storage on ``device_type`` counts
from its creation until Python frees it; views share their base's storage and are not
counted twice. Works under ``FakeTensorMode`` (nothing is allocated).
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    def __init__(self, device_type: str = "cuda"):
        super().__init__()
        self.device_type = device_type
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        n = self.live.pop(key, 0)
        self.current -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == self.device_type:
                storage = t.untyped_storage()
                key = id(storage)
                if key in self.live:
                    continue
                n = storage.nbytes()
                self.live[key] = n
                self.current += n
                weakref.finalize(storage, self._free, key)
                self.peak = max(self.peak, self.current)
        return out
