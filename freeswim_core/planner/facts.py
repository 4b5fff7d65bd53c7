"""What a host tells the planner: about the model, once per run, and about each model call.

A host (the ComfyUI nodes, the diffusers adapter) reads these off its own objects; the
planner (:mod:`.run`) decides everything else from them, the same way for every host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional

import torch

from ..geometry import TokenGrid


@dataclass(frozen=True)
class ModelFacts:
    """The model being sampled and how its host runs it, read once per run."""

    family: str
    blocks: int                          # blocks whose cross-attention features the cache stores
    dim: int
    heads: int
    head_dim: int
    px_per_token: int                    # VAE factor x patch size
    native_px: tuple[int, int]           # the detected native size ("auto")
    native_label: str
    cross_per_block: int = 1             # 2: an image cross-attention call before the text one (I2V)
    check_grid: bool = False             # the host's forward publishes its token grid: confirm FreeSwim's
    frees_queries: bool = False          # the host drops q after its last attention call of a block
    frees_block_inputs: bool = False     # the host drops a block's input once the block returns
    reference_tokens: Optional[int] = None   # the "reference" scale's token count (None: the official 1560)
    sequence_shards: int = 1             # ranks sharing each call's tokens (Ulysses): each holds and caches 1/N


@dataclass(frozen=True)
class CallFacts:
    """One model call: its token grid, its rows and their pass, where it is in the schedule."""

    grid: TokenGrid
    rows: int
    kinds: tuple[int, ...]               # per row: 0 conditional, 1 unconditional
    keys: tuple[Hashable, ...]           # per row: the cache key of its features
    sigma: Optional[float]
    step: Optional[int]                  # index of sigma in the run's schedule (None off the schedule)
    channels: int
    dtype: torch.dtype
    device: torch.device
    shape: tuple = ()                    # the latent's shape (the memory plan's size)
    ambiguous: bool = False              # the grid's token count equals a conditioning's (VACE): skip
    ref_frames: int = 0                  # reference frames before the host's own grid

    @property
    def signature(self) -> tuple:
        """Stored features fit only calls of this grid, channel count and dtype."""
        return (self.grid.as_tuple(), self.channels, str(self.dtype))
