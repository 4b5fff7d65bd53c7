"""Cache sizes, and where a cache of that size can live."""
from __future__ import annotations

from typing import Optional

import torch


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


