"""Cache sizes, and where a cache of that size can live."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


def cached_rows(eligible: int, kinds_in_call: int, passes: str, entries_per_block: int = 1) -> int:
    """Rows' worth of features a run stores per block, seen from its first call: the call's rows
    that get a twin; twice that where both passes get twins but the call holds one (the other pass
    comes in calls of its own, with as many rows); times the entries a block stores (2 where the
    I2V image cross-attention is overridden too)."""
    both_apart = passes == "cond_and_uncond" and kinds_in_call == 1
    return eligible * (2 if both_apart else 1) * entries_per_block


def cache_bytes(blocks: int, tokens: int, dim: int, rows: int, element_bytes: int) -> int:
    """Cache size: blocks x tokens x model dim x bytes, per cached row."""
    return blocks * tokens * dim * rows * element_bytes


def pinned_bytes(nbytes: int) -> int:
    """What one pinned host allocation of ``nbytes`` takes: PyTorch's CUDA caching host
    allocator rounds every pinned allocation up to a power of two."""
    return 1 << max(0, int(nbytes) - 1).bit_length() if nbytes > 0 else 0


# The feature store keeps each block's features in chunks of at most this many bytes: a power of
# two, so that pinning a full chunk wastes at most one token's row to the allocator's rounding
# (one 3.48 GB allocation would pin 4.29 GB). Quantisation runs one chunk at a time too.
CHUNK_BYTES = 64 << 20


def chunk_tokens(dim: int, element_bytes: int) -> int:
    """Tokens per stored chunk of ``dim``-wide features."""
    return max(1, CHUNK_BYTES // (dim * element_bytes))


def host_cache_bytes(blocks: int, tokens: int, dim: int, rows: int, element_bytes: int,
                     pinned: bool) -> int:
    """Host RAM the feature store really takes: per (row, block), ``tokens x dim x element_bytes``
    in chunks of :data:`CHUNK_BYTES` (fp8 adds a float32 scale per token, one allocation), each
    allocation rounded up to a power of two when pinned."""
    step = chunk_tokens(dim, element_bytes)
    full, last = divmod(tokens, step)
    chunks = [step * dim * element_bytes] * full + ([last * dim * element_bytes] if last else [])
    scale = tokens * 4 if element_bytes == 1 else 0
    if pinned:
        chunks, scale = [pinned_bytes(c) for c in chunks], pinned_bytes(scale)
    return blocks * rows * (sum(chunks) + scale)


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
                   headroom: float = 0.25, needed_host: Optional[int] = None) -> Optional[str]:
    """Where to keep the cache: "gpu", "cpu", or None (does not fit: run without cache).

    ``free_accel`` is None when the model runs on the CPU (then "gpu" means the
    model's own device). ``needed_host`` is what the cache takes in host RAM, when
    that differs from ``needed`` (pinned allocations: :func:`host_cache_bytes`). A store
    must leave ``headroom`` of that memory free for the sampling itself.
    """
    if mode not in STORAGE_MODES:
        raise ValueError(f"unknown cache storage {mode!r}; choose one of {', '.join(STORAGE_MODES)}")
    needed_host = needed if needed_host is None else needed_host
    fits_accel = free_accel is not None and needed <= free_accel * (1 - headroom)
    fits_host = needed_host <= free_host * (1 - headroom)
    if mode == "gpu":
        return "gpu" if (fits_accel or free_accel is None and fits_host) else None
    if mode == "cpu":
        return "cpu" if fits_host else None
    if free_accel is None:
        return "gpu" if fits_host else None   # model on CPU: its device is host memory
    if fits_accel:
        return "gpu"
    return "cpu" if fits_host else None


def prefetch_fits(where: Optional[str], free_accel: Optional[int], tokens: int, dim: int, rows: int,
                  stored_bytes: int, headroom: float = 0.25) -> bool:
    """May a host-stored cache upload each row's next block ahead of its read? Only from host
    memory to an accelerator (``free_accel`` known: bytes free beside the model calls' own
    activations) with room for one block of stored features per row, ``headroom`` kept free."""
    if where != "cpu" or free_accel is None:
        return False
    return rows * tokens * dim * stored_bytes <= free_accel * (1 - headroom)


@dataclass(frozen=True)
class StorePlan:
    """Where a run's features go: ``where`` is "gpu", "cpu" or None (they do not fit: no cache)."""

    where: Optional[str]
    needed: int                 # bytes of features
    on_host: int                # what they take in host RAM (pinned chunks rounded)
    prefetch: bool              # host-stored blocks uploaded ahead of their read
    element_bytes: int


def plan_store(storage: str, precision: str, blocks: int, tokens: int, dim: int, rows: int,
               model_dtype: torch.dtype, device: torch.device, free_accel: Optional[int],
               free_host: int) -> StorePlan:
    """The feature store of a run with ``rows`` cached rows of ``blocks`` blocks of ``tokens`` x
    ``dim`` features, on a model running on ``device``. ``free_accel``: device bytes free beside
    the model calls' own needs (None on the CPU); ``free_host``: available host RAM."""
    elem = element_bytes(precision, model_dtype)
    needed = cache_bytes(blocks, tokens, dim, rows, elem)
    # the store pins its host copies when the model runs on CUDA (FeatureStore.put): count the rounding
    on_host = host_cache_bytes(blocks, tokens, dim, rows, elem, pinned=torch.device(device).type == "cuda")
    where = choose_storage(storage, needed, free_accel, free_host, needed_host=on_host)
    if where is not None and torch.device(device).type == "cpu":
        where = "cpu"             # the model runs on the CPU: its device is host memory
    prefetch = prefetch_fits(where, free_accel, tokens, dim, rows, elem)
    return StorePlan(where, needed, on_host, prefetch, elem)
