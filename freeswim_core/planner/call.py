"""The plan of one model call: decided before it runs, read by the blocks and attention calls."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from ..dual import DualLayout, FeatureStore
from ..geometry import TokenGrid
from ..window_plan import WindowPlan
from .facts import ModelFacts


class Mode(enum.Enum):
    OFF = "off"          # window attention only (or nothing)
    DUAL = "dual"        # twins every call (no cache)
    GUIDE = "guide"      # twins; their features are handed over and stored
    REUSE = "reuse"      # no twins; stored features are handed over


@dataclass(frozen=True)
class CallPlan:
    window: Optional[WindowPlan]
    model: Optional[ModelFacts] = None
    mode: Mode = Mode.OFF
    layout: Optional[DualLayout] = None      # DUAL/GUIDE: twin rows appended to the caller's
    keys: tuple = ()                         # cache key per caller row
    reuse_rows: tuple = ()                   # REUSE: rows that read stored features
    store: Optional[FeatureStore] = None     # GUIDE/REUSE
    execution: str = "batched"
    override_image: bool = False             # image cross-attention is overridden too
    ref_frames: int = 0                      # reference-latent frames before the host's grid

    @property
    def grid(self) -> Optional[TokenGrid]:
        return self.window.grid if self.window is not None else None

    @property
    def twins(self) -> bool:
        return self.layout is not None and bool(self.layout.twin_sources)

    @property
    def cross_per_block(self) -> int:
        return self.model.cross_per_block if self.model is not None else 1
