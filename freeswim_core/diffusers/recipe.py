"""FreeSwim's coarse-to-fine recipe with diffusers' Wan pipelines.

1. A native-size clip from ``WanPipeline`` (the model as trained: no FreeSwim).
2. Its frames resized to the target size in pixel space.
3. ``WanVideoToVideoPipeline`` on the same components with FreeSwim installed:
   re-noised to ``strength`` and denoised over the schedule's tail under flow
   shift ``shift`` with guidance ``cfg`` (the nodes' Latent Upscale Refine defaults:
   :class:`freeswim_core.settings.RefineOptions`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..dual import dual_sigma_range
from ..log import logger
from ..settings import CacheOptions, DualOptions, RefineOptions, WindowOptions

RESAMPLING = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "lanczos": "LANCZOS"}


@dataclass
class GenerateRequest:
    """One clip: the prompt, the native and target sizes, and the settings of each pass."""

    prompt: str
    negative_prompt: str = ""
    native: tuple[int, int] = (832, 480)          # (width, height) of the first pass
    target: tuple[int, int] = (1920, 1088)        # (width, height) of the refined clip
    frames: int = 81
    native_steps: int = 50
    native_cfg: float = 5.0
    seed: int = 0
    refine: RefineOptions = field(default_factory=RefineOptions)
    window: WindowOptions = field(default_factory=WindowOptions)
    dual: Optional[DualOptions] = field(default_factory=DualOptions)
    cache: Optional[CacheOptions] = field(default_factory=CacheOptions)

    def check(self, spatial_multiple: int, temporal_factor: int) -> None:
        """Sizes and frame counts the VAE and the patch grid can represent, said in terms of the fix."""
        for name, (w, h) in (("native", self.native), ("target", self.target)):
            bad = [f"{axis} {v}" for axis, v in (("width", w), ("height", h)) if v % spatial_multiple or v <= 0]
            if bad:
                raise ValueError(f"{name} size {w}x{h}: {', '.join(bad)} is not a positive multiple of "
                                 f"{spatial_multiple} px (VAE factor x patch size); e.g. 1920x1088, not 1920x1080")
        if self.frames < 1 or (self.frames - 1) % temporal_factor:
            raise ValueError(f"frames {self.frames}: must be {temporal_factor}k+1 (e.g. 81, 49, 17)")
        if not 0.0 < self.refine.strength <= 1.0:
            raise ValueError(f"strength {self.refine.strength}: must be in (0, 1]")
        if self.refine.method not in RESAMPLING:
            raise ValueError(f"resize method {self.refine.method!r}: choose one of {', '.join(RESAMPLING)}")
        if self.dual is not None:
            try:
                dual_sigma_range(self.dual.start_percent, self.dual.end_percent, self.refine.shift)
            except ValueError as exc:
                raise ValueError(f"dual path: {exc}") from None
        if self.refine.upscale != "pixel":
            raise ValueError("the diffusers recipe upscales in pixel space (the reference path) only")


def load_pipeline(model: str, device: str, dtype: torch.dtype):
    """``WanPipeline`` from a local diffusers Wan folder, the VAE in float32 (as Wan's own
    examples load it)."""
    from diffusers import AutoencoderKLWan, WanPipeline
    vae = AutoencoderKLWan.from_pretrained(model, subfolder="vae", dtype=torch.float32)
    pipe = WanPipeline.from_pretrained(model, vae=vae, dtype=dtype)
    return pipe.to(device)


def upscale_frames(frames, size: tuple[int, int], method: str) -> list:
    """Every frame resized to ``size`` (width, height) in pixel space."""
    from PIL import Image
    resample = getattr(Image.Resampling, RESAMPLING[method])
    return [frame.resize(size, resample) for frame in frames]


def generate(request: GenerateRequest, pipe) -> np.ndarray:
    """The refined clip, ``[frames, height, width, 3]`` floats in [0, 1], from a loaded ``WanPipeline``."""
    from diffusers import UniPCMultistepScheduler, WanVideoToVideoPipeline

    from .install import FreeSwim
    patch = pipe.transformer.config.patch_size
    request.check(pipe.vae_scale_factor_spatial * patch[1], pipe.vae_scale_factor_temporal)
    device = pipe._execution_device
    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    started = time.perf_counter()
    # the prompt is encoded once, for both passes (diffusers' video-to-video pipeline would clean the
    # text with ftfy unconditionally; the text-to-video pipeline's encoder does it where available)
    cfg = max(request.native_cfg, request.refine.cfg) > 1.0
    prompt, negative = pipe.encode_prompt(request.prompt, negative_prompt=request.negative_prompt,
                                          do_classifier_free_guidance=cfg, max_sequence_length=512, device=device)
    logger.info("FreeSwim: native pass, %dx%d x %d frames, %d steps.", *request.native, request.frames,
                request.native_steps)
    native = pipe(prompt_embeds=prompt, negative_prompt_embeds=negative, width=request.native[0],
                  height=request.native[1], num_frames=request.frames, num_inference_steps=request.native_steps,
                  guidance_scale=request.native_cfg, generator=generator, output_type="pil").frames[0]
    video = upscale_frames(native, request.target, request.refine.method)
    r = request.refine
    refine = WanVideoToVideoPipeline(**{k: v for k, v in pipe.components.items()
                                        if k in ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")})
    refine.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=r.shift)
    refine.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    fs = FreeSwim(refine.transformer, window=request.window, dual=request.dual, cache=request.cache,
                  vae_scale_factor=pipe.vae_scale_factor_spatial, scheduler=refine.scheduler,
                  guidance_scale=r.cfg)
    logger.info("FreeSwim: refine pass at %dx%d, strength %.2f of %d steps, shift %.1f, cfg %.1f.",
                *request.target, r.strength, r.steps, r.shift, r.cfg)
    try:
        out = refine(video=video, prompt_embeds=prompt, negative_prompt_embeds=negative, width=request.target[0],
                     height=request.target[1], num_inference_steps=r.steps, strength=r.strength, guidance_scale=r.cfg, generator=generator, output_type="np").frames[0]
    finally:
        fs.remove()
    logger.log(logging.INFO, "FreeSwim: %d model calls (%d guide, %d reuse, %d dual), backends %s; %.1f s in all.",
               fs.report.model_calls, fs.report.guide_calls, fs.report.reuse_calls, fs.report.dual_calls,
               ", ".join(fs.report.backends) or "none", time.perf_counter() - started)
    return np.asarray(out)
