"""Latent Upscale Refine: FreeSwim's coarse-to-fine pass in one node.

Native-size latent -> upscale (pixel space through the VAE, the reference path,
or directly in latent space) -> re-noise to ``strength`` -> denoise the last
``round(steps * strength)`` steps of a ``steps``-step schedule with the (normally
FreeSwim-patched) model under flow shift ``shift``. Reference recipe: 50 steps x
0.7 = 35 steps run, shift 9.0, cfg 5.0, bilinear pixel upscale. ``shift`` 0 is the
model family's own: Wan the reference's 9.0, LTX-Video the model's own sampling
(``Family.refine_sampling``). A latent's noise mask (LTX image-to-video frames,
SetLatentNoiseMask) goes through resized, as LatentUpscale and KSampler carry it.

Wan2.2 A14B is a pair of experts: with ``model_high_noise`` connected, the steps
whose sigma is at or above ``boundary`` run the high-noise expert and the rest the
low-noise one (``model``), on one schedule, exactly as two chained
KSamplerAdvanced nodes run them: the first with the noise and leftover noise
returned, the second with no noise added, each a sampling run of its own (a
multi-step sampler starts its history again at the switch, as there; FreeSwim's
per-run state, its cache included, starts again too, so the first step after the
switch is a guide step).
"""
from __future__ import annotations

import logging
import time

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..freeswim_core.settings import RefineOptions
from . import vae_tiles
from .checks import check_choice, check_number
from .errors import InvalidInput
from .families import ModelInfo, family_of, model_info
from .options import REFINE_NODE as NODE_NAME
from .options import options_of
UPSCALE_PATHS = ("pixel", "latent")
RESIZE_METHODS = ("bilinear", "bicubic", "lanczos")
# Conditioning entries that carry latents at the native size (I2V / FLF image latents, Fun reference).
SPATIAL_CONDITIONING = ("concat_latent_image", "concat_mask", "reference_latents")

log = logging.getLogger("freeswim")
_RECIPE = RefineOptions()
# Where Wan2.2's own code hands a sampling run from the high-noise expert to the low-noise one: the
# sigma (timestep / 1000) at and above which a step belongs to the high-noise expert, by model type.
EXPERT_BOUNDARIES = {"t2v": 0.875, "i2v": 0.9}


def expert_boundary(info: ModelInfo, boundary: float) -> float:
    """The switch sigma: ``boundary``, or (0, auto) Wan2.2's own for the model type."""
    if boundary > 0:
        return boundary
    return EXPERT_BOUNDARIES["i2v" if info.image_to_video else "t2v"]


def high_noise_steps(sigmas: list[float], boundary: float) -> int:
    """How many of the schedule's steps (each starting at ``sigmas[i]``, the last sigma ends the
    schedule) start at or above ``boundary``: the high-noise expert's, at the front of a falling
    schedule."""
    count = 0
    for sigma in sigmas[:-1]:
        if sigma < boundary:
            break
        count += 1
    return count


def check_experts(low: ModelInfo, high: ModelInfo) -> None:
    """The two experts of a pair share one architecture; anything else is a wiring mistake."""
    def describe(i: ModelInfo) -> str:
        return (f"{i.model_type}, dim {i.dim}, {i.layers} blocks, {i.in_dim} input channels, "
                f"{'Wan2.2 VAE' if i.vae_factor == 16 else 'Wan2.1 VAE'}")
    if describe(low) != describe(high) or low.patch_size != high.patch_size:
        raise InvalidInput(
            f"{NODE_NAME}: model_high_noise ({describe(high)}) and model ({describe(low)}) are not the two "
            "experts of one Wan2.2 A14B pair, which share one architecture. Connect the high-noise file to "
            "model_high_noise and the low-noise file of the same pair (T2V with T2V, I2V with I2V) to model, "
            "or leave model_high_noise unconnected to refine with one model.")


def nearest_sizes(value: int, multiple: int) -> tuple[int, int]:
    low = max(multiple, value // multiple * multiple)
    return low, low + multiple


def resolve_target(width: int, height: int, scale_by: float, in_w: int, in_h: int, multiple: int):
    """Target (width, height) in pixels; reject sizes the VAE and patch grid cannot represent."""
    if scale_by > 0:
        width, height = round(in_w * scale_by), round(in_h * scale_by)
    bad = [(name, v) for name, v in (("width", width), ("height", height)) if v % multiple]
    if bad:
        hints = ", ".join(f"{name} {v} -> {' or '.join(map(str, nearest_sizes(v, multiple)))}" for name, v in bad)
        src = f"scale_by {scale_by} of {in_w}x{in_h}" if scale_by > 0 else f"{width}x{height}"
        raise InvalidInput(f"{NODE_NAME}: target {src} gives {width}x{height}, which is not a multiple of "
                         f"{multiple} px (VAE factor x patch size for this model). Nearest valid: {hints}.")
    return width, height


def _upscale_latent_space(samples, w_lat, h_lat, method):
    return comfy.utils.common_upscale(samples, w_lat, h_lat, method, "disabled")


def _upscale_pixel_space(vae, samples, width, height, method, pbar) -> tuple[torch.Tensor, list]:
    """Decode each video of the batch, resize its frames, encode it again: every frame at once
    (Wan's VAE is causal in time), in spatial tiles only where the memory plan needs them.
    Returns the latent and the VAE plans."""
    out, plans = [], []
    for row in samples.split(1, dim=0):
        comfy.model_management.throw_exception_if_processing_interrupted()
        frames, plan = vae_tiles.decode(vae, row, NODE_NAME)
        plans.append(plan.as_dict())
        frames = frames.reshape(-1, *frames.shape[-3:])            # [frames, H, W, 3]
        pbar.update(1)
        comfy.model_management.throw_exception_if_processing_interrupted()
        frames = comfy.utils.common_upscale(frames.movedim(-1, 1), width, height, method,
                                            "disabled").movedim(1, -1)
        latent, plan = vae_tiles.encode(vae, frames[..., :3], NODE_NAME)
        plans.append(plan.as_dict())
        out.append(latent)
        pbar.update(1)
    return torch.cat(out, dim=0), plans


def check_vae(vae, samples: torch.Tensor, info: ModelInfo) -> None:
    """The pixel path's VAE must be the model's: its latent channels and spatial factor (a Wan VAE on
    an LTX-Video latent would fail deep inside a convolution)."""
    channels = getattr(vae, "latent_channels", samples.shape[1])
    factor = vae.spacial_compression_decode() if hasattr(vae, "spacial_compression_decode") else info.vae_factor
    if channels != samples.shape[1] or factor != info.vae_factor:
        raise InvalidInput(f"{NODE_NAME}: the VAE makes {channels}-channel latents at {factor}x, but the model "
                           f"({info.native_label}) and the latent use {samples.shape[1]} channels at "
                           f"{info.vae_factor}x. Connect the model's own VAE (the one its native pass decodes "
                           "with).")


def _resize_mask(mask, w_lat: int, h_lat: int):
    """A latent's noise mask at the target size: one value per frame (``[B, 1, T, 1, 1]``, LTX's
    image-to-video) stays as it is; a spatial one is resized as LatentUpscale's sampler sees it."""
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape[-2:]) in ((1, 1), (h_lat, w_lat)):
        return mask
    return comfy.utils.common_upscale(mask, w_lat, h_lat, "bilinear", "disabled")


def _resize_conditioning(conditioning, w_lat, h_lat):
    """Resize the native-size latents a conditioning carries (I2V image, masks) to the target."""
    out = []
    for tensor, extra in conditioning:
        extra = dict(extra)
        for key in SPATIAL_CONDITIONING:
            value = extra.get(key)
            if isinstance(value, torch.Tensor) and value.dim() >= 4 and value.shape[-2:] != (h_lat, w_lat):
                mode = "nearest-exact" if key == "concat_mask" else "bilinear"
                extra[key] = comfy.utils.common_upscale(value, w_lat, h_lat, mode, "disabled")
            elif isinstance(value, list):
                extra[key] = [comfy.utils.common_upscale(v, w_lat, h_lat, "bilinear", "disabled")
                              if isinstance(v, torch.Tensor) and v.shape[-2:] != (h_lat, w_lat) else v
                              for v in value]
        out.append([tensor, extra])
    return out


class FreeSwimLatentUpscaleRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FreeSwimLatentUpscaleRefine",
            display_name=NODE_NAME,
            category="FreeSwim",
            description=(
                "FreeSwim's coarse-to-fine stage: upscale a native-size video latent to the target size "
                "and denoise the last part of the schedule with the (FreeSwim-patched) model. "
                "Reference: pixel path, bilinear, strength 0.7 of 50 steps, cfg 5, shift 9."),
            inputs=[
                io.Model.Input("model", tooltip="Normally patched by the other FreeSwim nodes."),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent", tooltip="The native-size video latent to refine."),
                io.Int.Input("width", default=1920, min=16, max=16384, step=16,
                             tooltip="Target width in pixels (multiple of 16; 32 for Wan2.2 TI2V-5B and LTX-Video)."),
                io.Int.Input("height", default=1088, min=16, max=16384, step=16,
                             tooltip="Target height in pixels (1088, not 1080)."),
                io.Float.Input("scale_by", default=0.0, min=0.0, max=8.0, step=0.05,
                               tooltip="When above 0, the target is the input size times this, and "
                                       "width/height are ignored."),
                io.Combo.Input("upscale_path", options=list(UPSCALE_PATHS), default=_RECIPE.upscale,
                               tooltip="pixel: decode, resize, encode (reference; needs the VAE). "
                                       "latent: interpolate the latent (no VAE, softer)."),
                io.Combo.Input("resize_method", options=list(RESIZE_METHODS), default=_RECIPE.method,
                               tooltip="lanczos is for the pixel path only."),
                io.Float.Input("strength", default=_RECIPE.strength, min=0.01, max=1.0, step=0.01,
                               tooltip="How much of the schedule is run again (reference 0.7; lower keeps "
                                       "the subject closer to the native result)."),
                io.Int.Input("steps", default=_RECIPE.steps, min=1, max=1000,
                             tooltip="Steps of the full schedule; round(steps x strength) of them run."),
                io.Float.Input("cfg", default=_RECIPE.cfg, min=0.0, max=100.0, step=0.1),
                io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler"),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="simple"),
                io.Float.Input("shift", default=0.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Flow shift of the refine's schedule (as ModelSamplingSD3). 0: auto, "
                                       "the model family's: Wan 9.0 (reference), LTX-Video the model's own "
                                       "sampling (flow shift 10.7 unless a ModelSamplingLTXV node set another)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Vae.Input("vae", optional=True, tooltip="Needed by the pixel path."),
                io.Model.Input("model_high_noise", optional=True,
                               tooltip="Wan2.2 A14B: the high-noise expert (FreeSwim-patched like model). Steps "
                                       "at or above the boundary run it, the rest run model (the low-noise "
                                       "expert), as two chained KSamplerAdvanced nodes would."),
                io.Float.Input("boundary", default=0.0, min=0.0, max=0.999, step=0.005, optional=True,
                               tooltip="The sigma where model_high_noise hands over to model. 0: auto, Wan2.2's "
                                       "own (0.875 for T2V, 0.9 for I2V)."),
            ],
            outputs=[io.Latent.Output(tooltip="The refined latent at the target size.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, width, height, scale_by, upscale_path,
                resize_method, strength, steps, cfg, sampler_name, scheduler, shift, seed,
                vae=None, model_high_noise=None, boundary=0.0) -> io.NodeOutput:
        family = family_of(model, NODE_NAME)
        info = family.info(model)
        boundary = check_number(NODE_NAME, "boundary", boundary, minimum=0.0, below=1.0,
                                why="It is the sigma where the high-noise expert hands over (0: auto, "
                                    "0.875 for T2V, 0.9 for I2V).")
        if model_high_noise is not None:
            check_experts(info, model_info(model_high_noise, NODE_NAME))
            boundary = expert_boundary(info, boundary)
            _warn_unpatched(model, model_high_noise)
        check_choice(NODE_NAME, "upscale_path", upscale_path, UPSCALE_PATHS)
        check_choice(NODE_NAME, "resize_method", resize_method, RESIZE_METHODS)
        # Everything is checked before the VAE or the sampler runs: a bad value costs no time.
        check_choice(NODE_NAME, "sampler_name", sampler_name, comfy.samplers.KSampler.SAMPLERS)
        check_choice(NODE_NAME, "scheduler", scheduler, comfy.samplers.KSampler.SCHEDULERS)
        width = check_number(NODE_NAME, "width", width, minimum=16, maximum=16384, integer=True)
        height = check_number(NODE_NAME, "height", height, minimum=16, maximum=16384, integer=True)
        scale_by = check_number(NODE_NAME, "scale_by", scale_by, minimum=0.0, maximum=8.0)
        strength = check_number(NODE_NAME, "strength", strength, above=0.0, maximum=1.0,
                                why="It is the part of the schedule run again (reference 0.7).")
        steps = check_number(NODE_NAME, "steps", steps, minimum=1, maximum=1000, integer=True)
        cfg = check_number(NODE_NAME, "cfg", cfg, minimum=0.0, maximum=100.0)
        shift = check_number(NODE_NAME, "shift", shift, minimum=0.0, maximum=100.0,
                             why="0 is auto (Wan 9.0, the reference; LTX-Video its own sampling).")
        seed = check_number(NODE_NAME, "seed", seed, minimum=0, maximum=0xFFFFFFFFFFFFFFFF, integer=True)
        samples = latent["samples"]
        if samples.dim() != 5:
            raise InvalidInput(f"{NODE_NAME}: expected a video latent [batch, channels, frames, height, width], "
                             f"got shape {tuple(samples.shape)}. Connect the LATENT of a video sampler.")
        vf = info.vae_factor
        in_h, in_w = samples.shape[-2] * vf, samples.shape[-1] * vf
        width, height = resolve_target(width, height, scale_by, in_w, in_h, info.px_per_token)
        w_lat, h_lat = width // vf, height // vf
        if upscale_path == "pixel":
            if vae is None:
                raise InvalidInput(f"{NODE_NAME}: the pixel upscale path decodes and re-encodes the video and "
                                   "needs a VAE. Connect the model's VAE to the vae input, or set upscale_path to "
                                   "latent.")
            check_vae(vae, samples, info)
        if any("keyframe_idxs" in extra for _, extra in (positive or []) + (negative or [])):
            raise InvalidInput(f"{NODE_NAME}: the conditioning carries LTX guide frames (LTXVAddGuide's "
                               "keyframe_idxs), whose positions are counted in native-size tokens and would land "
                               "on the wrong tokens of the upscaled latent. Put LTXVCropGuides between the native "
                               "pass and this node (its latent and conditioning), then add the guides again at the "
                               "target size if the refine should follow them.")
        if upscale_path == "latent" and resize_method == "lanczos":
            raise InvalidInput(f"{NODE_NAME}: lanczos resizes images; with upscale_path latent use bilinear "
                             "or bicubic.")
        run_steps = max(1, round(steps * strength))
        pbar = comfy.utils.ProgressBar(2 * samples.shape[0])    # decode + encode per video
        log.info("%s: %dx%d -> %dx%d px (%s, %s), %d of %d steps (strength %.2f), shift %s, cfg %.2f.",
                 NODE_NAME, in_w, in_h, width, height, upscale_path, resize_method, run_steps, steps,
                 strength, f"{shift:.2f}" if shift else f"auto ({family.refine_shift_auto})",
                 cfg)
        started = time.perf_counter()
        vae_plans = []
        if upscale_path == "pixel":
            up, vae_plans = _upscale_pixel_space(vae, samples, width, height, resize_method, pbar)
        else:
            up = _upscale_latent_space(samples, w_lat, h_lat, resize_method)
            pbar.update(2 * samples.shape[0])
        comfy.model_management.throw_exception_if_processing_interrupted()
        upscaled = time.perf_counter()

        shifted = family.refine_sampling(model, shift)
        up = comfy.sample.fix_empty_latent_channels(shifted, up)
        sigmas = comfy.samplers.KSampler(shifted, steps=steps, device=shifted.load_device,
                                         sampler=sampler_name, scheduler=scheduler, denoise=1.0,
                                         model_options=shifted.model_options).sigmas
        sigmas = sigmas[-(run_steps + 1):]
        noise = comfy.sample.prepare_noise(up, seed, latent.get("batch_index"))
        noise_mask = _resize_mask(latent.get("noise_mask"), w_lat, h_lat)
        stages = [(shifted, 0, run_steps)]                 # (model, first step, end step) of the run
        if model_high_noise is not None:
            shifted_high = family.refine_sampling(model_high_noise, shift)
            high = high_noise_steps([float(s) for s in sigmas], boundary)
            stages = [st for st in ((shifted_high, 0, high), (shifted, high, run_steps)) if st[2] > st[1]]
            log.info("%s: steps 1-%d with model_high_noise (sigma >= %.3f), %d-%d with model.", NODE_NAME, high,
                     boundary, high + 1, run_steps)
        pos, neg = _resize_conditioning(positive, w_lat, h_lat), _resize_conditioning(negative, w_lat, h_lat)
        out = up
        for i, (stage_model, first, end) in enumerate(stages):
            comfy.model_management.throw_exception_if_processing_interrupted()
            # after the first stage, no noise is added (KSamplerAdvanced's add_noise disable): the latent
            # carries the leftover noise of the schedule point where the stage starts
            stage_noise = noise if i == 0 else torch.zeros_like(noise)
            callback = latent_preview.prepare_callback(stage_model, end - first)   # progress + previews
            out = comfy.sample.sample_custom(
                stage_model, stage_noise, cfg, comfy.samplers.sampler_object(sampler_name), sigmas[first:end + 1],
                pos, neg, out, noise_mask=noise_mask, callback=callback,
                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        phases = {"upscale_path": upscale_path, "upscale_s": round(upscaled - started, 3),
                  "sampling_s": round(time.perf_counter() - upscaled, 3), "steps_run": run_steps,
                  "target_px": [width, height], "vae": vae_plans}
        if model_high_noise is not None:
            phases["experts"] = {"boundary": boundary, "high_noise_steps": high, "low_noise_steps": run_steps - high}
        log.info("%s: upscale (%s) %.2f s, sampling (%d steps) %.2f s.", NODE_NAME, upscale_path,
                 phases["upscale_s"], run_steps, phases["sampling_s"])
        # The phases also go to the prompt's history (outputs of this node id): a structured record
        # for the demo and for scripts, where log text is not an interface.
        result = {"samples": out} if noise_mask is None else {"samples": out, "noise_mask": noise_mask}
        return io.NodeOutput(result, ui={"freeswim_refine": [phases]})


def _warn_unpatched(model, model_high_noise) -> None:
    """One expert with FreeSwim and the other without is allowed, but rarely meant: say so."""
    patched = {name: options_of(m.model_options.get("transformer_options", {})) is not None
               for name, m in (("model", model), ("model_high_noise", model_high_noise))}
    if len(set(patched.values())) > 1:
        bare = next(name for name, on in patched.items() if not on)
        log.warning("%s: %s has no FreeSwim patch: its steps run with full attention at the target size. "
                    "Put the FreeSwim nodes on both experts.", NODE_NAME, bare)
