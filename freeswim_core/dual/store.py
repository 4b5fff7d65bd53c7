"""The per-run feature store of the cross-attention cache."""
from __future__ import annotations

from typing import Optional

import torch


class FeatureStore:
    """Per-run cross-attention features: one tensor [tokens, dim] per (row key, block).

    ``cpu`` storage keeps pinned host copies (when CUDA is present) and streams
    each block back to the compute device when that block needs it. ``fp8``
    stores float8 (e4m3) with a per-token scale.
    """

    def __init__(self, storage: str, precision: str, compute_device: torch.device):
        self.storage = storage
        self.precision = precision
        self.device = torch.device(compute_device)
        self.entries: dict[tuple, dict[int, tuple]] = {}
        self.sigma: dict[tuple, float] = {}
        self.signature: dict[tuple, tuple] = {}
        self.hits = 0
        self.writes = 0

    def _home(self) -> torch.device:
        return torch.device("cpu") if self.storage == "cpu" else self.device

    def put(self, key: tuple, block: int, value: torch.Tensor) -> None:
        scale = None
        if self.precision == "bf16":
            stored = value.to(torch.bfloat16)
        elif self.precision == "fp8":
            amax = value.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
            scale = amax / 448.0
            stored = (value.float() / scale).to(torch.float8_e4m3fn)
        else:
            stored = value
        home = self._home()
        if stored.device != home:
            pin = home.type == "cpu" and torch.cuda.is_available()
            buf = torch.empty(stored.shape, dtype=stored.dtype, device=home, pin_memory=pin)
            buf.copy_(stored, non_blocking=pin)
            stored = buf
            if scale is not None:
                scale = scale.to(home)
        else:
            stored = stored.clone() if stored is value else stored
        self.entries.setdefault(key, {})[block] = (stored, scale, value.dtype)
        self.writes += 1

    def get(self, key: tuple, block: int) -> Optional[torch.Tensor]:
        item = self.entries.get(key, {}).get(block)
        if item is None:
            return None
        stored, scale, dtype = item
        x = stored.to(self.device, non_blocking=True)
        if scale is not None:
            x = x.float() * scale.to(self.device, non_blocking=True)
        self.hits += 1
        return x.to(dtype)

    def mark(self, key: tuple, sigma: float, signature: tuple) -> None:
        self.sigma[key] = sigma
        self.signature[key] = signature

    def valid_for(self, key: tuple, signature: tuple) -> bool:
        return key in self.entries and self.signature.get(key) == signature

    def computed_at(self, key: tuple) -> Optional[float]:
        return self.sigma.get(key)

    def nbytes(self) -> int:
        total = 0
        for blocks in self.entries.values():
            for stored, scale, _ in blocks.values():
                total += stored.numel() * stored.element_size()
                if scale is not None:
                    total += scale.numel() * scale.element_size()
        return total

    def clear(self) -> None:
        self.entries.clear()
        self.sigma.clear()
        self.signature.clear()
