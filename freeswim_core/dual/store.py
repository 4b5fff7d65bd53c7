"""The per-run feature store of the cross-attention cache."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .storage import chunk_tokens

FP8_MAX = 448.0        # largest finite float8 e4m3 value


@dataclass
class _Entry:
    chunks: list            # [(first token, stored tensor)], tokens in order
    scale: Optional[torch.Tensor]    # fp8: float32 [tokens, 1]
    shape: tuple
    dtype: torch.dtype      # the features' own dtype, restored on read

    def nbytes(self) -> int:
        total = sum(c.numel() * c.element_size() for _, c in self.chunks)
        return total + (self.scale.numel() * self.scale.element_size() if self.scale is not None else 0)


class FeatureStore:
    """Per-run cross-attention features: one ``[tokens, dim]`` tensor per (row key, block).

    ``cpu`` storage keeps them in host memory, pinned where CUDA is present, and streams
    each block back to the compute device when that block needs it. ``fp8`` stores
    float8 (e4m3) with a per-token scale. Features are written and read in chunks of
    at most ``CHUNK_BYTES``: pinned chunks waste nothing to the host allocator's
    power-of-two rounding, and quantising or dequantising needs one chunk's float32
    temporaries on the device, never a whole block's.
    """

    def __init__(self, storage: str, precision: str, compute_device: torch.device):
        self.storage = storage
        self.precision = precision
        self.device = torch.device(compute_device)
        self.entries: dict[tuple, dict[int, _Entry]] = {}
        self.sigma: dict[tuple, float] = {}
        self.signature: dict[tuple, tuple] = {}
        self.hits = 0
        self.writes = 0

    def _home(self) -> torch.device:
        return torch.device("cpu") if self.storage == "cpu" else self.device

    def _stored_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}.get(self.precision, dtype)

    def put(self, key: tuple, block, value: torch.Tensor) -> None:
        home = self._home()
        pin = home.type == "cpu" and self.device.type == "cuda"
        flat = value.reshape(-1, value.shape[-1])
        tokens, dim = flat.shape
        stored_dtype = self._stored_dtype(value.dtype)
        step = chunk_tokens(dim, torch.empty((), dtype=stored_dtype).element_size())
        fp8 = self.precision == "fp8"
        scale = torch.empty((tokens, 1), dtype=torch.float32, device=home, pin_memory=pin) if fp8 else None
        whole = None if pin or home != self.device else torch.empty((tokens, dim), dtype=stored_dtype, device=home)
        chunks = []
        for start in range(0, tokens, step):
            part = flat[start:start + step]
            if fp8:
                part_scale = part.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
                part = (part.float() / part_scale).to(stored_dtype)
                scale[start:start + step].copy_(part_scale, non_blocking=pin)
            if whole is not None:                # on the device (or the CPU model's own memory)
                whole[start:start + step] = part
                continue
            dest = torch.empty(part.shape, dtype=stored_dtype, device=home, pin_memory=pin)
            dest.copy_(part, non_blocking=pin)
            chunks.append((start, dest))
        if whole is not None:
            chunks = [(0, whole)]
        self.entries.setdefault(key, {})[block] = _Entry(chunks, scale, tuple(value.shape), value.dtype)
        self.writes += 1

    def get(self, key: tuple, block) -> Optional[torch.Tensor]:
        entry = self.entries.get(key, {}).get(block)
        if entry is None:
            return None
        self.hits += 1
        only = entry.chunks[0][1]
        if len(entry.chunks) == 1 and entry.scale is None and only.device == self.device and only.dtype == entry.dtype:
            return only.view(entry.shape)        # stored as computed: no copy
        dim = entry.shape[-1]
        tokens = sum(c.shape[0] for _, c in entry.chunks)
        out = torch.empty((tokens, dim), dtype=entry.dtype, device=self.device)
        step = chunk_tokens(dim, only.element_size())
        for first, chunk in entry.chunks:
            for s in range(0, chunk.shape[0], step):     # one chunk's temporaries at a time
                start = first + s
                part = chunk[s:s + step].to(self.device, non_blocking=True)
                if entry.scale is not None:
                    part = part.float() * entry.scale[start:start + part.shape[0]].to(self.device, non_blocking=True)
                out[start:start + part.shape[0]] = part
        return out.view(entry.shape)

    def mark(self, key: tuple, sigma: float, signature: tuple) -> None:
        self.sigma[key] = sigma
        self.signature[key] = signature

    def valid_for(self, key: tuple, signature: tuple) -> bool:
        return key in self.entries and self.signature.get(key) == signature

    def computed_at(self, key: tuple) -> Optional[float]:
        return self.sigma.get(key)

    def nbytes(self) -> int:
        return sum(e.nbytes() for blocks in self.entries.values() for e in blocks.values())

    def clear(self) -> None:
        self.entries.clear()
        self.sigma.clear()
        self.signature.clear()
