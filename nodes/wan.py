"""What the FreeSwim nodes need to know about a loaded ComfyUI Wan model.

Only reads attributes of ComfyUI's own classes (``comfy.ldm.wan.model``), so a
model that is not a Wan DiT is recognised before sampling starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import comfy.latent_formats
from comfy.ldm.wan.model import WanModel, WanSelfAttention

from ..freeswim_core import Window, native_window
from .errors import InvalidInput, NotAWanModel

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


@dataclass(frozen=True)
class WanInfo:
    patch_size: tuple[int, int, int]
    vae_factor: int
    dim: int
    heads: int
    layers: int
    native_px: tuple[int, int]      # (width, height) detected for "auto"
    native_label: str

    @property
    def px_per_token(self) -> int:
        return self.vae_factor * self.patch_size[1]


def diffusion_model_of(model):
    """The torch module behind a ComfyUI MODEL (a ModelPatcher)."""
    base = getattr(model, "model", None)
    return getattr(base, "diffusion_model", None)


def wan_info(model, node_name: str) -> WanInfo:
    """Inspect a MODEL; raise :class:`NotAWanModel` naming ``node_name`` when it is not a Wan DiT."""
    dm = diffusion_model_of(model)
    if not isinstance(dm, WanModel) or not any(isinstance(m, WanSelfAttention) for m in dm.modules()):
        kind = type(dm).__name__ if dm is not None else type(model).__name__
        raise NotAWanModel(
            f"{node_name}: the connected model is a {kind}, not a Wan 2.1/2.2 video model. "
            "Connect the MODEL output of a Wan loader (e.g. Load Diffusion Model with a "
            "wan2.1_* or wan2.2_* file); other model families are not supported yet.")
    latent_format = getattr(model.model, "latent_format", None)
    vae_factor = 16 if isinstance(latent_format, comfy.latent_formats.Wan22) else 8
    default = DEFAULT_NATIVE_16X if vae_factor == 16 else DEFAULT_NATIVE_8X
    native_px, label = NATIVE_BY_DIM.get(dm.dim, default)
    if dm.dim == 3072 and vae_factor != 16:
        native_px, label = DEFAULT_NATIVE_8X
    return WanInfo(patch_size=tuple(dm.patch_size), vae_factor=vae_factor, dim=dm.dim,
                   heads=dm.num_heads, layers=len(dm.blocks), native_px=native_px,
                   native_label=label)


def resolve_native_px(info: WanInfo, native_size: str, custom_width: int, custom_height: int,
                      grid_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """Native (width, height) in pixels for the node's ``native_size`` choice.

    ``auto`` follows the orientation of the video being sampled: a portrait
    grid gets the portrait version of the model's native size.
    """
    if native_size == "auto":
        w, h = info.native_px
        if grid_hw is not None and grid_hw[0] > grid_hw[1] and w > h:
            w, h = h, w
        return w, h
    if native_size == "custom":
        return int(custom_width), int(custom_height)
    if native_size in NATIVE_PRESETS:
        return NATIVE_PRESETS[native_size]
    raise InvalidInput(f"unknown native size {native_size!r}; choose one of {', '.join(NATIVE_SIZE_OPTIONS)}")


def native_window_for(info: WanInfo, native_px: tuple[int, int]) -> Window:
    return native_window(native_px[0], native_px[1], info.px_per_token)


def native_tokens_per_frame(info: WanInfo, native_px: tuple[int, int]) -> int:
    return (native_px[0] // info.px_per_token) * (native_px[1] // info.px_per_token)
