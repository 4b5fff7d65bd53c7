"""FreeSwim's settings and their defaults, for every host.

The ComfyUI nodes and the diffusers adapter offer the same choices with the same
defaults, all from here: the reference recipe's values (window at the native
size, shifted inward; the reference attention scale; the full branch for the
conditional pass; guide every 2 steps; a 0.7-strength refine of 50 steps under
flow shift 9 and cfg 5).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WindowOptions:
    """Window attention: the window is the native size's token footprint."""

    native_size: str = "auto"            # "auto", a preset of native.NATIVE_PRESETS, or "custom"
    custom_width: int = 832
    custom_height: int = 480
    inward: bool = True                  # shift windows inward at borders (paper) instead of truncating
    scale_mode: str = "reference"        # scale.SCALE_MODES
    backend: str = "auto"                # attention.BACKENDS


@dataclass(frozen=True)
class DualOptions:
    """Dual path: a full-attention twin whose cross-attention output replaces the window row's."""

    passes: str = "cond"                 # "cond" or "cond_and_uncond"
    override_image_cross: bool = False   # also replace I2V image cross-attention
    start_percent: float = 0.0
    end_percent: float = 1.0
    execution: str = "auto"              # "batched" | "sequential" (per block: twins, then window rows) | "auto"


@dataclass(frozen=True)
class CacheOptions:
    """Cross-attention cache: the twins run on guide steps only, their features are reused between."""

    interval: int = 2
    storage: str = "auto"                # dual.STORAGE_MODES
    precision: str = "model"             # dual.PRECISIONS


@dataclass(frozen=True)
class RefineOptions:
    """The coarse-to-fine pass: upscale the native result, re-noise, denoise the schedule's tail."""

    upscale: str = "pixel"               # through the VAE (reference) or "latent"
    method: str = "bilinear"
    strength: float = 0.7
    steps: int = 50
    shift: float = 9.0
    cfg: float = 5.0
