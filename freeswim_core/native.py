"""The native size of a model: the receptive field FreeSwim's window reproduces.

The window is the token footprint of the size the model was trained at, so the
native size decides the window. Released checkpoints are recognised by the registry
(:func:`freeswim_core.families.detected_native`); a user may name a preset or a custom size.
"""
from __future__ import annotations

from typing import Optional



def _presets() -> dict[str, tuple[int, int]]:
    """Every released variant's native size, landscape and portrait, smallest first."""
    from .families import VARIANTS
    sizes = sorted({tuple(v.arch.native) for v in VARIANTS}, key=lambda s: (s[0] * s[1], s))
    out = {}
    for w, h in sizes:
        out[f"{w}x{h}"], out[f"{h}x{w}"] = (w, h), (h, w)
    return out


NATIVE_PRESETS = _presets()
NATIVE_SIZE_OPTIONS = ["auto", *NATIVE_PRESETS, "custom"]


def resolve_native(native_size: str, detected_px: tuple[int, int], custom_width: int, custom_height: int,
                   grid_hw: Optional[tuple[int, int]] = None) -> tuple[int, int]:
    """Native (width, height) in pixels for a ``native_size`` choice (see
    :data:`NATIVE_SIZE_OPTIONS`). ``auto`` is the detected size, turned to the orientation of the
    video being sampled: a portrait grid (``grid_hw`` = (rows, columns)) gets the portrait
    version of the model's native size. Raises ValueError naming the choices."""
    if native_size == "auto":
        w, h = detected_px
        if grid_hw is not None and grid_hw[0] > grid_hw[1] and w > h:
            w, h = h, w
        return w, h
    if native_size == "custom":
        return int(custom_width), int(custom_height)
    if native_size in NATIVE_PRESETS:
        return NATIVE_PRESETS[native_size]
    raise ValueError(f"unknown native size {native_size!r}; choose one of {', '.join(NATIVE_SIZE_OPTIONS)}")


def native_tokens_per_frame(native_px: tuple[int, int], px_per_token: int) -> int:
    """Tokens in one frame at the native size (what the ``native`` attention scale reads)."""
    return (native_px[0] // px_per_token) * (native_px[1] // px_per_token)
