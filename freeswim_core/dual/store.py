"""The per-run feature store of the cross-attention cache."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from ..log import logger
from .storage import chunk_tokens

FP8_MAX = 448.0        # largest finite float8 e4m3 value


@dataclass
class _Entry:
    chunks: list            # [(first token, stored tensor)], tokens in order
    scale: Optional[torch.Tensor]    # fp8: float32 [tokens, 1]
    shape: tuple
    dtype: torch.dtype      # the features' own dtype, restored on read
    written: object = None  # CUDA event: its copies to host memory are done (None: nothing pending)

    def nbytes(self) -> int:
        total = sum(c.numel() * c.element_size() for _, c in self.chunks)
        return total + (self.scale.numel() * self.scale.element_size() if self.scale is not None else 0)


class _Transfers:
    """Copies between the device and host memory that run beside the computation: on CUDA on a side
    stream, ordered after the work queued so far (the destination may be memory that work frees, the
    source what it computes), with an event the other side's stream waits on (the host never waits);
    elsewhere inline, in order."""

    def __init__(self, device: torch.device):
        self.device = device
        # no stream where no CUDA runtime runs (a fake device, as the memory trace uses): copies inline
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" and torch.cuda.is_available() else None

    def copies(self):
        if self.stream is None:
            return contextlib.nullcontext()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        return torch.cuda.stream(self.stream)

    def done(self):
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def wait(self, event) -> None:
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)

    def keep(self, t: torch.Tensor) -> None:
        """``t`` (computed on the compute stream) is read by the side stream: its memory must not be
        reused before the side stream's copies are done."""
        if self.stream is not None and t.is_cuda:
            t.record_stream(self.stream)


@dataclass
class _Upload:
    """One block's stored features, on the device ahead of their read."""

    stored: torch.Tensor              # [tokens, dim] in the stored dtype
    scale: Optional[torch.Tensor]     # fp8: float32 [tokens, 1]
    ready: object                     # event the reader waits on, or None


def release_pinned_host_memory(device: torch.device) -> None:
    """Give the page-locked host memory that PyTorch's caching host allocator keeps after its
    tensors are freed back to the system. Pinned blocks stay in that cache for reuse by default:
    after a 4K run with the cache in host RAM that is tens of GB, locked, and hidden from the
    next run's plan (which sees the host's available memory). The copies that used the blocks
    are waited for first; the allocator frees only blocks no pending copy holds."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)
    empty = getattr(torch._C, "_host_emptyCache", None)
    if empty is not None:
        empty()


class FeatureStore:
    """Per-run cross-attention features: one ``[tokens, dim]`` tensor per (row key, block).

    ``cpu`` storage keeps them in host memory, pinned where CUDA is present, and streams
    each block back to the compute device when that block needs it; on a GPU the copies to host
    memory run on a side stream, beside the blocks that follow. With ``prefetch``, reading
    a block starts the copy of the same key's next block (in the order they were stored, the
    blocks' order), so on a GPU the copy overlaps the rest of this block and the start of the
    next instead of stalling it; one block per key is held ahead. ``fp8`` stores
    float8 (e4m3) with a per-token scale. Features are written and read in chunks of
    at most ``CHUNK_BYTES``: pinned chunks waste nothing to the host allocator's
    power-of-two rounding, and quantising or dequantising needs one chunk's float32
    temporaries on the device, never a whole block's.
    """

    def __init__(self, storage: str, precision: str, compute_device: torch.device, prefetch: bool = False):
        self.storage = storage
        self.precision = precision
        self.device = torch.device(compute_device)
        self.prefetch = prefetch and storage == "cpu"          # a device store has nothing to upload
        streamed = storage == "cpu" and self.device.type == "cuda"
        self._uploads = _Transfers(self.device) if (self.prefetch or streamed) else None
        self._ahead: dict[tuple, tuple] = {}      # key -> (block, _Upload)
        self.prefetched = 0
        self.entries: dict[tuple, dict[int, _Entry]] = {}
        self.sigma: dict[tuple, float] = {}
        self.signature: dict[tuple, tuple] = {}
        self.hits = 0
        self.writes = 0
        self.pinned = False                       # some features were put in page-locked memory

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
        side = self._uploads if pin else None
        self.pinned |= pin
        chunks = []
        for start in range(0, tokens, step):
            part = flat[start:start + step]
            part_scale = None
            if fp8:
                part_scale = part.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
                part = (part.float() / part_scale).to(stored_dtype)
            if whole is not None:                # on the device (or the CPU model's own memory)
                whole[start:start + step] = part
                if fp8:
                    scale[start:start + step].copy_(part_scale)
                continue
            dest = torch.empty(part.shape, dtype=stored_dtype, device=home, pin_memory=pin)
            with side.copies() if side is not None else contextlib.nullcontext():
                dest.copy_(part, non_blocking=pin)
                if fp8:
                    scale[start:start + step].copy_(part_scale, non_blocking=pin)
            if side is not None:
                side.keep(part)
                if fp8:
                    side.keep(part_scale)
            chunks.append((start, dest))
        if whole is not None:
            chunks = [(0, whole)]
        written = side.done() if side is not None else None
        ahead = self._ahead.get(key)
        if ahead is not None and ahead[0] == block:      # uploaded ahead from the features replaced now
            self._uploads.wait(ahead[1].ready)
            del self._ahead[key]
        self.entries.setdefault(key, {})[block] = _Entry(chunks, scale, tuple(value.shape), value.dtype, written)
        self.writes += 1

    def get(self, key: tuple, block) -> Optional[torch.Tensor]:
        entry = self.entries.get(key, {}).get(block)
        if entry is None:
            return None
        self.hits += 1
        ahead = self._ahead.pop(key, None)
        upload = None
        if ahead is not None:
            # a block read out of order drops its upload, but only once the device has finished
            # writing it: its memory returns to the compute stream's pool when it is dropped
            self._uploads.wait(ahead[1].ready)
            if ahead[0] == block:
                upload = ahead[1]
                self.prefetched += 1
        if self.prefetch:
            self._start_next(key, block)
        if upload is not None:
            return self._restore(entry, [(0, upload.stored)], upload.scale)
        if self._uploads is not None:
            self._uploads.wait(entry.written)      # its copies to host memory ran on the side stream
        return self._restore(entry, entry.chunks, entry.scale)

    def _restore(self, entry: _Entry, chunks: list, scale: Optional[torch.Tensor]) -> torch.Tensor:
        """The features in their own dtype on the compute device, from ``chunks`` (stored dtype,
        on the host or already uploaded), one chunk's temporaries at a time."""
        only = chunks[0][1]
        if len(chunks) == 1 and scale is None and only.device == self.device and only.dtype == entry.dtype:
            return only.view(entry.shape)        # stored (or uploaded) as computed: no copy
        dim = entry.shape[-1]
        tokens = sum(c.shape[0] for _, c in chunks)
        out = torch.empty((tokens, dim), dtype=entry.dtype, device=self.device)
        step = chunk_tokens(dim, only.element_size())
        for first, chunk in chunks:
            for s in range(0, chunk.shape[0], step):
                start = first + s
                part = chunk[s:s + step].to(self.device, non_blocking=True)
                if scale is not None:
                    part = part.float() * scale[start:start + part.shape[0]].to(self.device, non_blocking=True)
                out[start:start + part.shape[0]] = part
        return out.view(entry.shape)

    def _start_next(self, key: tuple, block) -> None:
        """Upload the block stored after ``block`` for ``key`` (host storage only)."""
        blocks = self.entries.get(key, {})
        order = list(blocks)
        at = order.index(block)
        if at + 1 >= len(order):
            return
        entry = blocks[order[at + 1]]
        first = entry.chunks[0][1]
        dim = entry.shape[-1]
        tokens = sum(c.shape[0] for _, c in entry.chunks)
        stored = torch.empty((tokens, dim), dtype=first.dtype, device=self.device)
        scale = torch.empty(entry.scale.shape, dtype=entry.scale.dtype, device=self.device) \
            if entry.scale is not None else None
        with self._uploads.copies():
            for start, chunk in entry.chunks:
                stored[start:start + chunk.shape[0]].copy_(chunk, non_blocking=True)
            if scale is not None:
                scale.copy_(entry.scale, non_blocking=True)
            ready = self._uploads.done()
        self._ahead[key] = (order[at + 1], _Upload(stored, scale, ready))

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
        for _, upload in self._ahead.values():
            self._uploads.wait(upload.ready)
        self._ahead.clear()
        self.entries.clear()
        self.sigma.clear()
        self.signature.clear()
        if self.pinned:
            self.pinned = False
            try:
                release_pinned_host_memory(self.device)
            except RuntimeError as exc:      # a failed device (the run's own error is what matters)
                logger.warning("FreeSwim: the cache's pinned host memory was not given back (%s); it returns "
                               "to the system when the process ends.", exc)
