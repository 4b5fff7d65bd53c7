"""Memory of the Wan 2.1 VAE's decode and encode, and the spatial tiles that fit a budget.

The Wan VAE is causal in time: it runs its frames in chunks with a feature cache, so a
clip decoded in one temporal piece has no seams in time, and the activations of one
chunk are at the tile's full spatial size. Tiling in time restarts that cache (a visible
jump at the tile boundary), so FreeSwim tiles only in space and takes every frame at once.

One call of the VAE on a ``w x h`` tile of ``f`` frames peaks at
``weights + w*h * (per_px + per_px_frame * f) + constant`` device bytes: ``per_px`` is one
chunk's activations at full resolution, ``per_px_frame`` the tile's output (decode: 3
channels in bf16, 6 bytes a frame) or input (encode: kept in float32 alongside, 12 bytes)
held for the whole clip. The coefficients were read off the trace of ComfyUI's real VAE
class at 96 base channels (``harness/vae_trace.py``, bf16, 512x512 and 1024x1024 tiles, 81
and 161 frames) and hold for 9 frames and more; ``tests/test_vae_tiles.py`` checks them
against traces at other sizes. They depend on the host: ComfyUI 0.5+ streams the decoder's
upsampling stages (``Decoder3d.run_up``), 0.3.x does not.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

KINDS = ("decode", "encode")
WEIGHTS_BYTES = 253_785_062                 # 126.9M parameters in bf16, 96 base channels
BASE_DIM = 96                               # the released VAE's base channels: activations scale with it
# (per pixel, per pixel and frame, constant) bytes of one VAE call, by host generation
COSTS = {
    "streamed": {"decode": (6756.75, 6.25, 138_878_982), "encode": (4402.75, 12.25, 101_416_960)},
    "whole": {"decode": (8572.75, 6.25, 1_634_752), "encode": (6651.75, 12.25, 1_589_952)},
}
MIN_TILE = 256          # pixels: smaller tiles cost more in seams than they save
TILE_STEP = 64          # pixels: tiles are multiples of this (8x VAE, whole latent tokens)
MIN_OVERLAP = 64        # pixels: ComfyUI's default VAEDecodeTiled overlap


@dataclass
class VaePlan:
    kind: str
    width: int
    height: int
    frames: int
    tile: Optional[tuple]         # (width, height) pixels of a spatial tile; None: the whole frame
    overlap: int                  # pixels between spatial tiles (0 untiled)
    tiles: int
    peak_bytes: int               # one VAE call, weights included
    budget_bytes: Optional[int]
    fits: Optional[bool]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tile"] = list(self.tile) if self.tile else None
        return d


def vae_call_bytes(kind: str, width: int, height: int, frames: int, streamed: bool = True,
                   dim: int = BASE_DIM, weights_bytes: Optional[int] = None) -> int:
    """Peak device bytes of one Wan 2.1 VAE call on a ``width x height`` tile of ``frames`` frames.
    ``dim``: the VAE's base channels (its activations scale with them); ``weights_bytes``: the
    loaded VAE's own, when known."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
    per_px, per_px_frame, constant = COSTS["streamed" if streamed else "whole"][kind]
    scale = dim / BASE_DIM
    weights = WEIGHTS_BYTES if weights_bytes is None else weights_bytes
    return int(weights + width * height * (per_px * scale + per_px_frame * frames) + constant * scale)


def _count(size: int, tile: int, overlap: int) -> int:
    if size <= tile:
        return 1
    return -(-(size - overlap) // (tile - overlap))


def plan_vae(kind: str, width: int, height: int, frames: int = 81, budget_bytes: Optional[int] = None,
             streamed: bool = True, headroom: float = 1.10, dim: int = BASE_DIM,
             weights_bytes: Optional[int] = None) -> VaePlan:
    """The Wan 2.1 VAE's plan (see :func:`plan_tiles`)."""
    def cost(w, h):
        return vae_call_bytes(kind, w, h, frames, streamed, dim, weights_bytes)
    return plan_tiles(kind, width, height, frames, cost, budget_bytes, headroom)


def plan_tiles(kind: str, width: int, height: int, frames: int, cost: Callable[[int, int], int],
               budget_bytes: Optional[int] = None, headroom: float = 1.10) -> VaePlan:
    """The whole frame when it fits ``budget_bytes`` (with ``headroom``), else the largest square-ish
    spatial tile that does (fewer tiles: fewer seams), every frame in one piece. ``cost(w, h)``: the
    device bytes of one VAE call on a ``w x h`` tile of every frame (the Wan VAE's traced
    coefficients, or a host's own estimate for another VAE)."""
    whole = cost(width, height)
    if budget_bytes is None or whole * headroom <= budget_bytes:
        return VaePlan(kind, width, height, frames, None, 0, 1, whole, budget_bytes,
                       None if budget_bytes is None else True)
    best = None
    side = min(max(width, height), 4096) // TILE_STEP * TILE_STEP
    while side >= MIN_TILE:
        tw, th = min(side, width), min(side, height)
        bytes_ = cost(tw, th)
        if bytes_ * headroom <= budget_bytes:
            best = (tw, th, bytes_)
            break
        side -= TILE_STEP
    if best is None:
        tw, th = min(MIN_TILE, width), min(MIN_TILE, height)
        best = (tw, th, cost(tw, th))
    tw, th, bytes_ = best
    overlap = max(MIN_OVERLAP, min(tw, th) // 8 // 8 * 8)
    tiles = _count(width, tw, overlap) * _count(height, th, overlap)
    return VaePlan(kind, width, height, frames, (tw, th), overlap, tiles, bytes_, budget_bytes,
                   bytes_ * headroom <= budget_bytes)
