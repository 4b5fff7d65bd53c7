"""Dual path and cross-attention cache: which rows run which branch, and when.

FreeSwim's conditional pass runs two rows from one latent: a WINDOW row (window
self-attention) and a FULL row (ordinary full self-attention). In every block the
text cross-attention output computed from the FULL row's queries replaces the
WINDOW row's own. Only the window row's prediction is kept; the full row is
rebuilt from the window latent at every call, so it has no trajectory of its own.

With the cache, the full row runs only on *guide* steps; its per-block
cross-attention outputs (before the output projection) are stored and reused by
the window row on the other steps, where neither the full row nor the text
cross-attention of that row is computed.

Host-agnostic: a host describes a model call as a list of row kinds and keys,
and gets back a :class:`DualLayout` saying which rows get a full-attention twin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

import torch

PASSES = ("cond", "cond_and_uncond")


@dataclass(frozen=True)
class DualLayout:
    """Rows of one model call after twins are appended.

    Rows ``0 .. rows-1`` are the caller's rows (window branch); row ``rows + j`` is
    the full-attention twin of row ``twin_sources[j]``.
    """

    rows: int
    twin_sources: tuple[int, ...]

    @property
    def total_rows(self) -> int:
        return self.rows + len(self.twin_sources)

    def twin_of(self) -> dict[int, int]:
        """window row -> its twin row"""
        return {src: self.rows + j for j, src in enumerate(self.twin_sources)}

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        """Append the twin rows (copies of their sources) along dim 0."""
        if not self.twin_sources:
            return t
        idx = torch.tensor(self.twin_sources, device=t.device)
        return torch.cat([t, t.index_select(0, idx)], dim=0)


def row_kinds(cond_or_uncond: Sequence[int], batch_rows: int) -> list[int]:
    """Per-row 0 (conditional) / 1 (unconditional) from ComfyUI's per-chunk list.

    ComfyUI concatenates equally sized chunks, one per entry of ``cond_or_uncond``
    (unconditional first when both are batched).
    """
    chunks = len(cond_or_uncond)
    if chunks == 0 or batch_rows % chunks:
        raise ValueError(f"cannot split {batch_rows} rows into {chunks} conditioning chunks")
    per = batch_rows // chunks
    return [int(c) for c in cond_or_uncond for _ in range(per)]


def row_keys(uuids: Sequence[Hashable], batch_rows: int) -> list[tuple]:
    """A cache key per row: (chunk uuid, row within chunk)."""
    chunks = len(uuids)
    per = batch_rows // max(1, chunks)
    return [(u, i) for u in uuids for i in range(per)]


def twin_rows(kinds: Sequence[int], passes: str) -> tuple[int, ...]:
    """Rows that get a full-attention twin: conditional rows, or every row."""
    if passes not in PASSES:
        raise ValueError(f"unknown dual-path passes {passes!r}; choose one of {', '.join(PASSES)}")
    return tuple(i for i, k in enumerate(kinds) if k == 0 or passes == "cond_and_uncond")


def step_index(sigma: float, sample_sigmas: Optional[Sequence[float]], rel_tol: float = 1e-5) -> Optional[int]:
    """Index of ``sigma`` in the run's schedule, or None when it is not a scheduled sigma
    (the extra evaluations of multi-evaluation samplers)."""
    if sample_sigmas is None:
        return None
    for i, s in enumerate(sample_sigmas):
        s = float(s)
        if math.isclose(s, sigma, rel_tol=rel_tol, abs_tol=1e-9):
            return i
    return None


def is_guide_step(step: Optional[int], interval: int) -> bool:
    """Guide steps are every ``interval`` scheduled steps counted from the run's first
    step (a sliced schedule, as KSamplerAdvanced passes, starts its own count)."""
    return step is not None and step % max(1, interval) == 0


def cache_bytes(blocks: int, tokens: int, dim: int, rows: int, element_bytes: int) -> int:
    """Cache size: blocks x tokens x model dim x bytes, per cached row."""
    return blocks * tokens * dim * rows * element_bytes


STORAGE_MODES = ("auto", "gpu", "cpu")
PRECISIONS = ("model", "bf16", "fp8")


def element_bytes(precision: str, model_dtype: torch.dtype) -> int:
    if precision == "model":
        return torch.empty((), dtype=model_dtype).element_size()
    if precision == "bf16":
        return 2
    if precision == "fp8":
        return 1
    raise ValueError(f"unknown cache precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def choose_storage(mode: str, needed: int, free_accel: Optional[int], free_host: int,
                   headroom: float = 0.25) -> Optional[str]:
    """Where to keep the cache: "gpu", "cpu", or None (does not fit: run without cache).

    ``free_accel`` is None when the model runs on the CPU (then "gpu" means the
    model's own device). A store must leave ``headroom`` of that memory free for
    the sampling itself.
    """
    if mode not in STORAGE_MODES:
        raise ValueError(f"unknown cache storage {mode!r}; choose one of {', '.join(STORAGE_MODES)}")
    fits_accel = free_accel is not None and needed <= free_accel * (1 - headroom)
    fits_host = needed <= free_host * (1 - headroom)
    if mode == "gpu":
        return "gpu" if (fits_accel or free_accel is None and fits_host) else None
    if mode == "cpu":
        return "cpu" if fits_host else None
    if free_accel is None:
        return "gpu" if fits_host else None   # model on CPU: its device is host memory
    if fits_accel:
        return "gpu"
    return "cpu" if fits_host else None


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
