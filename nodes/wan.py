"""What the FreeSwim nodes need to know about a loaded ComfyUI Wan model.

Only reads attributes of ComfyUI's own classes (``comfy.ldm.wan.model``), so a
model that is not a Wan DiT is recognised before sampling starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import comfy.latent_formats
from comfy.ldm.wan.model import WanModel, WanSelfAttention

from ..freeswim_core.native import (NATIVE_PRESETS, NATIVE_SIZE_OPTIONS, detected_native,  # noqa: F401
                                    resolve_native)
from .errors import InvalidInput, NotAWanModel

@dataclass(frozen=True)
class WanInfo:
    patch_size: tuple[int, int, int]
    vae_factor: int
    dim: int
    heads: int
    layers: int
    native_px: tuple[int, int]      # (width, height) detected for "auto"
    native_label: str
    model_type: str = "t2v"         # ComfyUI's Wan variant: t2v, i2v, vace, camera, s2v, ...
    in_dim: int = 16                # latent channels the patch embedding takes (16 T2V, 36 I2V, 48 TI2V-5B)

    @property
    def px_per_token(self) -> int:
        return self.vae_factor * self.patch_size[1]

    @property
    def image_to_video(self) -> bool:
        """Takes a start image: Wan2.1 I2V ("i2v", CLIP image tokens) or Wan2.2 I2V A14B, which ComfyUI
        builds as "t2v" with 36 input channels (16 noise, 4 mask, 16 image latent)."""
        return self.model_type == "i2v" or (self.vae_factor == 8 and self.in_dim == 36)


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
    native_px, label = detected_native(dm.dim, vae_factor)
    return WanInfo(patch_size=tuple(dm.patch_size), vae_factor=vae_factor, dim=dm.dim,
                   heads=dm.num_heads, layers=len(dm.blocks), native_px=native_px,
                   native_label=label, model_type=str(getattr(dm, "model_type", "t2v")),
                   in_dim=int(getattr(dm.patch_embedding, "in_channels", 0)))


def resolve_native_px(info: WanInfo, native_size: str, custom_width: int, custom_height: int,
                      grid_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """Native (width, height) in pixels for the node's ``native_size`` choice.

    ``auto`` follows the orientation of the video being sampled (see
    :func:`freeswim_core.native.resolve_native`).
    """
    try:
        return resolve_native(native_size, info.native_px, custom_width, custom_height, grid_hw)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None

