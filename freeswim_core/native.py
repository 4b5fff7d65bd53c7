"""The native size of a Wan model: the receptive field FreeSwim's window reproduces.

The window is the token footprint of the size the model was trained at, so the
native size decides the window. Released checkpoints are recognised by their
transformer width (and VAE factor); a user may name a preset or a custom size.
"""
from __future__ import annotations

from typing import Optional

# Native training sizes (width, height) of the released Wan checkpoints, keyed by width of the DiT.
NATIVE_BY_DIM = {
    1536: ((832, 480), "Wan2.1 T2V 1.3B"),
    3072: ((1280, 704), "Wan2.2 TI2V 5B"),
    5120: ((1280, 720), "Wan 14B"),
}
DEFAULT_NATIVE_8X = ((832, 480), "an unrecognised Wan size; assuming the 1.3B native 832x480")
DEFAULT_NATIVE_16X = ((1280, 704), "an unrecognised Wan2.2 size; assuming the TI2V-5B native 1280x704")

NATIVE_PRESETS = {
    "832x480": (832, 480),
    "480x832": (480, 832),
    "1280x720": (1280, 720),
    "720x1280": (720, 1280),
    "1280x704": (1280, 704),
    "704x1280": (704, 1280),
}
NATIVE_SIZE_OPTIONS = ["auto", *NATIVE_PRESETS, "custom"]


def detected_native(dim: int, vae_factor: int) -> tuple[tuple[int, int], str]:
    """(native (width, height), description) of a Wan transformer of width ``dim`` whose VAE
    compresses space by ``vae_factor`` (8: Wan 2.1 and the 2.2 14B models, 16: Wan2.2 TI2V-5B)."""
    default = DEFAULT_NATIVE_16X if vae_factor == 16 else DEFAULT_NATIVE_8X
    native_px, label = NATIVE_BY_DIM.get(dim, default)
    if dim == 3072 and vae_factor != 16:
        native_px, label = DEFAULT_NATIVE_8X
    return native_px, label


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
