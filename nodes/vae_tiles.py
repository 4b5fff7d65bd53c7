"""The refine node's VAE decode and encode: every frame in one piece, spatial tiles only when needed.

Wan's VAE is causal in time: a temporal tile restarts its frame cache and the clip
jumps at the tile boundary (LTX-Video's VAE packs 8 frames per latent frame, so a
temporal tile seam shows the same way). So the refine node never tiles in time; it
decodes or encodes the whole frame when the memory plan fits the device (Wan's:
``freeswim_core.memory.vae``, traced; any other VAE's: ComfyUI's own estimate for it),
else in the largest spatial tiles that fit, with at least ComfyUI's default 64 px overlap.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from ..freeswim_core.memory.vae import BASE_DIM, VaePlan, plan_tiles, plan_vae

log = logging.getLogger("freeswim")


def vae_traits(vae) -> dict:
    """What the VAE plan needs of a loaded ComfyUI VAE: its base channels, its weights' bytes,
    and whether the host's Wan decoder streams its upsampling stages (ComfyUI 0.5+)."""
    model = vae.first_stage_model
    decoder = getattr(model, "decoder", None)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return dict(dim=int(getattr(decoder, "dim", BASE_DIM)), weights_bytes=weights,
                streamed=hasattr(type(decoder), "run_up"))


def vae_budget_bytes(vae) -> Optional[int]:
    """Device bytes a VAE call may use: the device's memory less ComfyUI's inference reserve
    (ComfyUI unloads other models to make room when the VAE loads); host RAM on a CPU."""
    import comfy.model_management as mm
    device = torch.device(vae.device)
    if device.type == "cpu":
        import psutil
        return int(psutil.virtual_memory().available)
    return int(mm.get_total_memory(device) - mm.minimum_inference_memory())


def _is_wan_vae(vae) -> bool:
    return type(vae.first_stage_model).__module__.startswith("comfy.ldm.wan.")


def _host_estimate(vae, kind: str, frames: int):
    """Bytes of one call on a ``w x h`` tile by ComfyUI's own estimate for this VAE (what it loads
    the VAE against), plus its weights: the VAEs FreeSwim has no trace of (LTX-Video's)."""
    weights = sum(p.numel() * p.element_size() for p in vae.first_stage_model.parameters())
    factor = vae.spacial_compression_decode()
    if kind == "decode":
        t = vae.downscale_ratio[0](frames) if callable(vae.downscale_ratio[0]) else frames
        return lambda w, h: weights + int(vae.memory_used_decode((1, vae.latent_channels, t, h // factor, w // factor),
                                                                 vae.vae_dtype))
    return lambda w, h: weights + int(vae.memory_used_encode((1, 3, frames, h, w), vae.vae_dtype))


def _plan(vae, kind: str, width: int, height: int, frames: int) -> VaePlan:
    if _is_wan_vae(vae):
        return plan_vae(kind, width, height, frames, vae_budget_bytes(vae), **vae_traits(vae))
    return plan_tiles(kind, width, height, frames, _host_estimate(vae, kind, frames), vae_budget_bytes(vae))


def decode(vae, latent: torch.Tensor, node_name: str) -> tuple[torch.Tensor, VaePlan]:
    """Decode a video latent ``[1, C, T, h, w]``: all frames at once, tiled in space if needed."""
    _, _, t, h, w = latent.shape
    factor = vae.spacial_compression_decode()
    frames = vae.upscale_ratio[0](t) if callable(vae.upscale_ratio[0]) else t
    plan = _plan(vae, "decode", w * factor, h * factor, frames)
    _say(plan, node_name)
    if plan.tile is None:
        return vae.decode(latent), plan
    tw, th = plan.tile
    return vae.decode_tiled(latent, tile_x=th // factor, tile_y=tw // factor, overlap=plan.overlap // factor,
                            tile_t=t, overlap_t=1), plan


def encode(vae, frames: torch.Tensor, node_name: str) -> tuple[torch.Tensor, VaePlan]:
    """Encode video frames ``[T, H, W, 3]``: all frames at once, tiled in space if needed."""
    t, h, w = frames.shape[:3]
    plan = _plan(vae, "encode", w, h, t)
    _say(plan, node_name)
    if plan.tile is None:
        return vae.encode(frames), plan
    tw, th = plan.tile
    return vae.encode_tiled(frames, tile_x=th, tile_y=tw, overlap=plan.overlap, tile_t=t, overlap_t=8), plan


def _say(plan: VaePlan, node_name: str) -> None:
    budget = f"{plan.budget_bytes / 1e9:.1f} GB" if plan.budget_bytes else "no limit"
    if plan.tile is None:
        log.info("%s: VAE %s of %d frames at %dx%d in one piece (%.1f GB planned, %s).", node_name, plan.kind,
                 plan.frames, plan.width, plan.height, plan.peak_bytes / 1e9, budget)
        return
    level = logging.INFO if plan.fits else logging.WARNING
    log.log(level, "%s: VAE %s of %d frames at %dx%d in %d spatial tiles of %dx%d (overlap %d px), every frame "
            "at once (no seams in time); %.1f GB planned per tile, %s%s.", node_name, plan.kind, plan.frames,
            plan.width, plan.height, plan.tiles, plan.tile[0], plan.tile[1], plan.overlap, plan.peak_bytes / 1e9,
            budget, "" if plan.fits else ": the smallest tile does not fit, expect ComfyUI to offload or fail")
