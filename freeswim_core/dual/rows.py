"""Which rows of a model call get a full-attention twin, and where the twins go.

ComfyUI (and diffusers pipelines with CFG) put several conditioning chunks in one
batch; the dual path appends one twin row per eligible row, after the caller's
rows, so the caller's rows keep their positions and the twins are cut off the
output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

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
        # row slices, not an index tensor: no host-to-device copy (and no sync) per call
        return torch.cat([t, *(t[i:i + 1] for i in self.twin_sources)], dim=0)


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


