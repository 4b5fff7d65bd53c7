"""Regenerate workflows/*.json (UI format) from the definitions below.

Runs a headless ComfyUI (the embedded host) to read ``object_info``, so widget
order and defaults follow the real node definitions.

  .venv/bin/python -m scripts.make_workflows
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.comfy_server import ComfyServer, prepare_base  # noqa: E402
from harness.workflow_format import UIGraph  # noqa: E402

TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
CLIP_VISION = "clip_vision_h.safetensors"
NEGATIVE = ("bright colors, overexposed, static, blurred details, subtitles, worst quality, low quality, "
            "JPEG artifacts, ugly, deformed, extra fingers, poorly drawn hands, poorly drawn face, "
            "repeated subjects, duplicated objects")


def freeswim_chain(g: UIGraph, model, *, interval, storage="auto", precision="model", execution="auto",
                   column=2):
    w = g.add("FreeSwimWindowAttentionPatch", {"native_size": "auto"}, {"model": model}, column=column)
    d = g.add("FreeSwimDualPathOverride", {"passes": "cond", "execution": execution}, {"model": (w, 0)},
              column=column)
    c = g.add("FreeSwimCrossAttnCache", {"guide_interval": interval, "storage": storage, "precision": precision},
              {"model": (d, 0)}, column=column)
    return (c, 0)


def text(g: UIGraph, prompt: str):
    clip = g.add("CLIPLoader", {"clip_name": TEXT_ENCODER, "type": "wan"})
    pos = g.add("CLIPTextEncode", {"text": prompt}, {"clip": (clip, 0)}, title="Positive prompt")
    neg = g.add("CLIPTextEncode", {"text": NEGATIVE}, {"clip": (clip, 0)}, title="Negative prompt")
    return (pos, 0), (neg, 0)


# The final decode takes every frame at once: Wan's VAE is causal in time, and a temporal tile restarts
# its frame cache (the clip jumps at the tile boundary). Space is tiled, with bigger tiles (fewer
# seams) where the workflow's GPU has room (VAE plan: a 1024 px tile of 81 frames peaks at 7.9 GB).
def refine_and_save(g: UIGraph, model, pos, neg, latent, vae, *, width, height, prefix, fps=15, high_noise=None):
    links = {"model": model, "positive": pos, "negative": neg, "latent": latent, "vae": vae}
    if high_noise is not None:
        links["model_high_noise"] = high_noise
    r = g.add("FreeSwimLatentUpscaleRefine",
              {"width": width, "height": height, "upscale_path": "pixel", "resize_method": "bilinear",
               "strength": 0.7, "steps": 50, "cfg": 5.0, "sampler_name": "uni_pc", "scheduler": "simple",
               "shift": 9.0, "seed": 42, "boundary": 0.0},
              links, column=3)
    tile = 1024 if width * height > 1920 * 1088 else 512
    dec = g.add("VAEDecodeTiled", {"tile_size": tile, "overlap": tile // 8, "temporal_size": 4096,
                                   "temporal_overlap": 4},
                {"samples": (r, 0), "vae": vae}, column=3)
    vid = g.add("CreateVideo", {"fps": fps}, {"images": (dec, 0)}, column=3)
    g.add("SaveVideo", {"filename_prefix": prefix}, {"video": (vid, 0)}, column=3)


def t2v(info, *, unet, width, height, target, interval, note, prefix, storage="auto", precision="model",
        execution="auto", weight_dtype="default"):
    g = UIGraph(info)
    g.note(note, column=1)
    unet_node = g.add("UNETLoader", {"unet_name": unet, "weight_dtype": weight_dtype})
    base = g.add("ModelSamplingSD3", {"shift": 8.0}, {"model": (unet_node, 0)}, column=1)
    pos, neg = text(g, "A lighthouse on a rocky cliff at dawn, waves crashing below, seabirds circling, "
                       "cinematic drone shot, golden light")
    vae = g.add("VAELoader", {"vae_name": VAE})
    empty = g.add("EmptyHunyuanLatentVideo", {"width": width, "height": height, "length": 81, "batch_size": 1},
                  column=1)
    native = g.add("KSampler", {"seed": 42, "steps": 30, "cfg": 5.0, "sampler_name": "uni_pc",
                                "scheduler": "simple", "denoise": 1.0},
                   {"model": (base, 0), "positive": pos, "negative": neg, "latent_image": (empty, 0)},
                   column=1, title="Native-size pass")
    fs = freeswim_chain(g, (unet_node, 0), interval=interval, storage=storage, precision=precision,
                        execution=execution)
    refine_and_save(g, fs, pos, neg, (native, 0), (vae, 0), width=target[0], height=target[1], prefix=prefix)
    return g.to_json()


def i2v(info):
    g = UIGraph(info)
    g.note(I2V_NOTE, column=1)
    unet_node = g.add("UNETLoader", {"unet_name": "wan2.1_i2v_720p_14B_fp16.safetensors",
                                     "weight_dtype": "fp8_e4m3fn"})
    base = g.add("ModelSamplingSD3", {"shift": 8.0}, {"model": (unet_node, 0)}, column=1)
    pos, neg = text(g, "The woman turns towards the camera and smiles, hair moving in the wind, soft evening light")
    vae = g.add("VAELoader", {"vae_name": VAE})
    cv = g.add("CLIPVisionLoader", {"clip_name": CLIP_VISION})
    image = g.add("LoadImage", {"image": "freeswim_start_frame.png"})
    cve = g.add("CLIPVisionEncode", {"crop": "none"}, {"clip_vision": (cv, 0), "image": (image, 0)})
    cond = g.add("WanImageToVideo", {"width": 1280, "height": 720, "length": 81, "batch_size": 1},
                 {"positive": pos, "negative": neg, "vae": (vae, 0), "clip_vision_output": (cve, 0),
                  "start_image": (image, 0)}, column=1)
    native = g.add("KSampler", {"seed": 42, "steps": 30, "cfg": 5.0, "sampler_name": "uni_pc",
                                "scheduler": "simple", "denoise": 1.0},
                   {"model": (base, 0), "positive": (cond, 0), "negative": (cond, 1), "latent_image": (cond, 2)},
                   column=1, title="Native-size pass")
    fs = freeswim_chain(g, (unet_node, 0), interval=2, storage="cpu", precision="bf16", execution="sequential")
    refine_and_save(g, fs, (cond, 0), (cond, 1), (native, 0), (vae, 0), width=2560, height=1440,
                    prefix="freeswim/wan_i2v_1440p")
    return g.to_json()


def a14b(info, *, kind="t2v"):
    """Wan2.2 A14B: the usual two-expert native pass, then the refine with FreeSwim on both experts."""
    g = UIGraph(info)
    g.note(A14B_NOTE if kind == "t2v" else A14B_I2V_NOTE, column=1)
    high = g.add("UNETLoader", {"unet_name": f"wan2.2_{kind}_high_noise_14B_fp8_scaled.safetensors",
                                "weight_dtype": "default"}, title="High-noise model")
    low = g.add("UNETLoader", {"unet_name": f"wan2.2_{kind}_low_noise_14B_fp8_scaled.safetensors",
                               "weight_dtype": "default"}, title="Low-noise model")
    high_s = g.add("ModelSamplingSD3", {"shift": 8.0}, {"model": (high, 0)}, column=1)
    low_s = g.add("ModelSamplingSD3", {"shift": 8.0}, {"model": (low, 0)}, column=1)
    vae = g.add("VAELoader", {"vae_name": VAE})
    if kind == "t2v":
        pos, neg = text(g, "A red vintage car drives along a coastal road at sunset, long tracking shot")
        empty = g.add("EmptyHunyuanLatentVideo", {"width": 1280, "height": 720, "length": 81, "batch_size": 1},
                      column=1)
        latent, prefix = (empty, 0), "freeswim/wan22_a14b_1088p"
    else:
        pos, neg = text(g, "The woman turns towards the camera and smiles, hair moving in the wind, soft "
                           "evening light")
        image = g.add("LoadImage", {"image": "freeswim_start_frame.png"})
        cond = g.add("WanImageToVideo", {"width": 1280, "height": 720, "length": 81, "batch_size": 1},
                     {"positive": pos, "negative": neg, "vae": (vae, 0), "start_image": (image, 0)}, column=1)
        pos, neg, latent, prefix = (cond, 0), (cond, 1), (cond, 2), "freeswim/wan22_a14b_i2v_1088p"
    adv = dict(cfg=3.5, sampler_name="euler", scheduler="simple", noise_seed=42, steps=20)
    first = g.add("KSamplerAdvanced", {**adv, "add_noise": "enable", "start_at_step": 0, "end_at_step": 10,
                                       "return_with_leftover_noise": "enable"},
                  {"model": (high_s, 0), "positive": pos, "negative": neg, "latent_image": latent},
                  column=1, title="Native pass: high-noise steps 0-10")
    second = g.add("KSamplerAdvanced", {**adv, "add_noise": "disable", "start_at_step": 10, "end_at_step": 20,
                                        "return_with_leftover_noise": "disable"},
                   {"model": (low_s, 0), "positive": pos, "negative": neg, "latent_image": (first, 0)},
                   column=1, title="Native pass: low-noise steps 10-20")
    fs_high = freeswim_chain(g, (high, 0), interval=2)
    fs_low = freeswim_chain(g, (low, 0), interval=2)
    refine_and_save(g, fs_low, pos, neg, (second, 0), (vae, 0), width=1920, height=1088, prefix=prefix, fps=16,
                    high_noise=fs_high)
    return g.to_json()


T2V_13B_NOTE = """FreeSwim: Wan2.1 T2V 1.3B, 832x480 -> 1920x1088 (the reference recipe)

1. Native pass: the model at its training size (832x480, 81 frames).
2. FreeSwim: window attention at the native receptive field (31x53 tokens, inward), dual-path
   cross-attention override, cross-attention cache (guide every 2 steps).
3. Latent Upscale Refine: decode, bilinear resize to 1920x1088, encode, re-noise to strength 0.7 and
   run 35 of 50 steps with shift 9, cfg 5.

Sizes must be multiples of 16 (1088, not 1080). The cache holds 15.8 GB of features at 1088p in bf16
(30 blocks x 171,360 tokens x 1536); storage auto keeps it on the GPU when it fits beside the planned
activations with 25% to spare, else in CPU RAM, else runs without it (logged). Dual-Path Override
execution auto runs both rows in one batch where FreeSwim's memory plan fits the free GPU memory (one
model call peaks at 9.7 GB, traced; 10.7 GB with allocator headroom: a 12 GB GPU), else one after the
other per block (7.9 GB). Lower strength keeps the subject closer to the
native pass. Files: models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors,
models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors, models/vae/wan_2.1_vae.safetensors.

VAE: Latent Upscale Refine and the final decode take every frame at once (Wan's VAE is causal in
time: tiling it in time makes the clip jump at the tile boundary); only space is tiled, and the
refine node picks its tiles from the GPU's memory (whole frames where they fit)."""

T2V_14B_NOTE = """FreeSwim: Wan 14B T2V, 1280x720 -> 3840x2160 (4K) on one 80 GB GPU

Native pass at 1280x720 (81 frames), then FreeSwim window attention (45x81 token window), dual path
and cache, and the refine pass at 3840x2160 (tiled VAE).

Memory: the weights load as fp8 e4m3 (Load Diffusion Model: weight_dtype fp8_e4m3fn, 14.3 GB; bf16
compute). At 4K one pass has 680,400 tokens; Dual-Path Override runs sequentially (full branch, then
window branch, per block: the same result), and one model call then peaks at 65 GB (traced on the
real model's architecture; 72 GB with allocator headroom). The cross-attention cache would be
279 GB in bf16 (40 blocks x 680,400 tokens x 5120), so this graph keeps it in CPU RAM in fp8 (140 GB);
with less RAM the cache switches itself off and the full branch runs every step (slower, no extra
memory). Works with wan2.1_t2v_14B or the Wan2.2 low-noise 14B file (swap the UNET file name).

VAE: Latent Upscale Refine and the final decode take every frame at once (Wan's VAE is causal in
time: tiling it in time makes the clip jump at the tile boundary); only space is tiled, and the
refine node picks its tiles from the GPU's memory (whole frames where they fit)."""

I2V_NOTE = """FreeSwim: Wan2.1 I2V 14B 720p, image -> 2560x1440

Weights load as fp8 e4m3 (weight_dtype fp8_e4m3fn); one 2560x1440 model call with the dual path run
sequentially peaks at 45 GB (traced; 50 GB with allocator headroom): an 80 GB GPU.
WanImageToVideo builds the native-size conditioning from the start image; Latent Upscale Refine resizes
that image latent to the target with the video, so the refine pass keeps the image conditioning.
The dual path overrides only the text cross-attention (like the reference); set override_image_cross
to also override the CLIP image branch. Cache: 1440p = 302,400 tokens x 40 blocks x 5120 = 124 GB in
bf16, kept in CPU RAM here; with less RAM the cache turns itself off (logged).
Files: wan2.1_i2v_720p_14B_fp16, umt5_xxl_fp8_e4m3fn_scaled, wan_2.1_vae, clip_vision_h; put the start
frame into ComfyUI/input as freeswim_start_frame.png or pick another image.

VAE: Latent Upscale Refine and the final decode take every frame at once (Wan's VAE is causal in
time: tiling it in time makes the clip jump at the tile boundary); only space is tiled, and the
refine node picks its tiles from the GPU's memory (whole frames where they fit)."""

A14B_NOTE = """FreeSwim: Wan2.2 A14B (high/low-noise experts) 1280x720 -> 1920x1088

Native pass: the usual two-expert split (high-noise model for steps 0-10, low-noise model for 10-20).
Refine pass: both experts, each with FreeSwim (window attention, dual path, cache). Latent Upscale Refine
runs the refine's steps whose noise level (sigma) is at or above its boundary with model_high_noise and the
rest with model, on one schedule, as two chained KSamplerAdvanced nodes would; boundary 0 is Wan2.2's own
(0.875 for T2V). At strength 0.7 with shift 9 the refine starts near sigma 0.95: its first steps belong
to the high-noise expert. Each expert's steps are a sampling run of their own, so the cache starts again
(with a guide step) when the low-noise expert takes over.
Cache at 1088p for 14B: 70 GB in bf16 (auto picks GPU, CPU or none). Memory: the fp8 weights take
14.3 GB per expert; one model call at 1920x1088 peaks at 33.9 GB with the dual path batched (traced; 37.3 GB
with allocator headroom: a 40 GB GPU) and 27.8 GB sequential, which execution auto picks when the batch
does not fit. ComfyUI keeps the idle expert on the GPU while both fit beside the running one's work and
unloads it when the running expert needs the room, so a GPU that fits one expert's call fits the refine.

VAE: Latent Upscale Refine and the final decode take every frame at once (Wan's VAE is causal in
time: tiling it in time makes the clip jump at the tile boundary); only space is tiled, and the
refine node picks its tiles from the GPU's memory (whole frames where they fit)."""

A14B_I2V_NOTE = """FreeSwim: Wan2.2 A14B image-to-video (high/low-noise experts), start image -> 1920x1088

Native pass: WanImageToVideo at 1280x720, then the two-expert split (high-noise model for steps 0-10,
low-noise model for 10-20). Refine pass: both experts with FreeSwim; Latent Upscale Refine resizes the
start image's latent with the video and hands over from model_high_noise to model at Wan2.2's I2V boundary
(boundary 0: auto, sigma 0.9 for I2V experts, later than T2V's 0.875). Each expert's steps are a sampling
run of their own: the cache starts again with a guide step at the switch.
Files: ComfyUI's repackaged wan2.2_i2v_high_noise_14B_fp8_scaled and wan2.2_i2v_low_noise_14B_fp8_scaled,
umt5_xxl_fp8_e4m3fn_scaled, wan_2.1_vae. Memory as in the T2V A14B workflow: 14.3 GB of fp8 weights per
expert, one model call at 1920x1088 about 34 GB batched, 28 GB sequential (execution auto picks); ComfyUI
unloads the idle expert when the running one needs the room.

VAE: every frame at once (Wan's VAE is causal in time); only space is tiled."""


LTXV_UNET = "ltxv-2b-0.9.6-dev-04-25.safetensors"
LTXV_TEXT_ENCODER = "t5xxl_fp16.safetensors"
LTXV_VAE = "LTX-Video-0.9.6-VAE-BF16.safetensors"
LTXV_PROMPT = ("A lighthouse on a rocky cliff at dawn. Waves crash against the rocks below and burst into white spray "
          "while seabirds circle the tower. The camera glides slowly towards the cliff from the sea, low over the "
          "water. Warm golden light from the rising sun catches the spray and the wet stone; thin clouds drift "
          "across a pale sky. Cinematic, natural colors, realistic detail.")
LTXV_NEGATIVE = ("low quality, worst quality, deformed, distorted, disfigured, motion smear, motion artifacts, "
            "fused fingers, bad anatomy, weird hand, ugly, blurry, static, watermark, subtitles, repeated objects")

LTXV_NOTE = """FreeSwim: LTX-Video 2B (0.9.6 dev), 768x512 -> 3840x2176 (4K), 97 frames at 25 fps

1. Native pass at the model's training size: Empty LTXV Latent Video 768x512, 97 frames; LTXV
   Conditioning frame_rate 25; SamplerCustom cfg 3, euler, LTXVScheduler 30 steps (max_shift 2.05,
   base_shift 0.95, stretch, terminal 0.1), seed 42.
2. FreeSwim on the model: window attention at the native receptive field (native_size auto: 768x512
   for LTXV 2B, a 17x25 token window, inward, reference scale), dual-path cross-attention override
   (cond pass, execution auto), cross-attention cache (guide every 2 steps, storage auto).
3. Latent Upscale Refine to 3840x2176: pixel path with the LTX VAE (decode, bilinear resize, encode),
   re-noise to strength 0.7 and run 21 of 30 steps, cfg 3, euler / simple, shift 0 (auto: the LTX
   model's own sampling), seed 42.
4. VAE Decode (Tiled): 768 px tiles with 128 px overlap in space; temporal_size 4096 (above the 97
   frames) so time is never tiled (a tile boundary in time shows as a jump). Create Video 25 fps.

LTX sizes are multiples of 32 px (2176, not 2160) and frame counts 8n+1 (97).

Memory (traced: ComfyUI's own LTXVModel with the FreeSwim nodes under FakeTensorMode,
harness/memory_trace.py): the bf16 weights take 3.8 GB; one model call at 3840x2176x97 (106,080
tokens) with the dual path peaks at 11.8 GB batched and 10.9 GB sequential on ComfyUI 0.3.75 and
0.33 (weights included; planned within 1% of the trace). Execution auto runs both rows in one batch where
FreeSwim's memory plan fits the free GPU memory, else one after the other per block. The cache holds
12.2 GB of features in bf16 (28 blocks x 106,080 tokens x 2048); storage auto keeps it on the GPU
when it fits beside the activations, else in CPU RAM, else runs without it (logged).

Files: models/diffusion_models/ltxv-2b-0.9.6-dev-04-25.safetensors (Lightricks/LTX-Video; Load
Diffusion Model reads its transformer), models/text_encoders/t5xxl_fp16.safetensors (CLIP type ltxv),
models/vae/LTX-Video-0.9.6-VAE-BF16.safetensors (the 0.9.6 VAE on its own, from
city96/LTX-Video-0.9.6-dev-gguf)."""


def ltxv_t2v(info):
    """LTX-Video 2B: native 768x512x97 pass, FreeSwim refine to 4K, spatial-only decode, video."""
    g = UIGraph(info)
    g.note(LTXV_NOTE, column=1)
    unet = g.add("UNETLoader", {"unet_name": LTXV_UNET, "weight_dtype": "default"})
    clip = g.add("CLIPLoader", {"clip_name": LTXV_TEXT_ENCODER, "type": "ltxv"})
    pos = g.add("CLIPTextEncode", {"text": LTXV_PROMPT}, {"clip": (clip, 0)}, title="Positive prompt")
    neg = g.add("CLIPTextEncode", {"text": LTXV_NEGATIVE}, {"clip": (clip, 0)}, title="Negative prompt")
    vae = g.add("VAELoader", {"vae_name": LTXV_VAE})
    cond = g.add("LTXVConditioning", {"frame_rate": 25.0}, {"positive": (pos, 0), "negative": (neg, 0)}, column=1)
    empty = g.add("EmptyLTXVLatentVideo", {"width": 768, "height": 512, "length": 97, "batch_size": 1}, column=1)
    sched = g.add("LTXVScheduler", {"steps": 30, "max_shift": 2.05, "base_shift": 0.95, "stretch": True,
                                    "terminal": 0.1}, {"latent": (empty, 0)}, column=1)
    sampler = g.add("KSamplerSelect", {"sampler_name": "euler"}, column=1)
    native = g.add("SamplerCustom", {"add_noise": True, "noise_seed": 42, "cfg": 3.0},
                   {"model": (unet, 0), "positive": (cond, 0), "negative": (cond, 1), "sampler": (sampler, 0),
                    "sigmas": (sched, 0), "latent_image": (empty, 0)}, column=1, title="Native-size pass")
    w = g.add("FreeSwimWindowAttentionPatch", {"native_size": "auto"}, {"model": (unet, 0)}, column=2)
    d = g.add("FreeSwimDualPathOverride", {"passes": "cond", "execution": "auto"}, {"model": (w, 0)}, column=2)
    c = g.add("FreeSwimCrossAttnCache", {"guide_interval": 2, "storage": "auto", "precision": "model"},
              {"model": (d, 0)}, column=2)
    r = g.add("FreeSwimLatentUpscaleRefine",
              {"width": 3840, "height": 2176, "upscale_path": "pixel", "resize_method": "bilinear",
               "strength": 0.7, "steps": 30, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
               "shift": 0.0, "seed": 42, "boundary": 0.0},
              {"model": (c, 0), "positive": (cond, 0), "negative": (cond, 1), "latent": (native, 0),
               "vae": (vae, 0)}, column=3)
    dec = g.add("VAEDecodeTiled", {"tile_size": 768, "overlap": 128, "temporal_size": 4096, "temporal_overlap": 4},
                {"samples": (r, 0), "vae": (vae, 0)}, column=3)
    vid = g.add("CreateVideo", {"fps": 25.0}, {"images": (dec, 0)}, column=3)
    g.add("SaveVideo", {"filename_prefix": "freeswim/ltxv_2b_4k"}, {"video": (vid, 0)}, column=3)
    return g.to_json()


def main():
    out = REPO / "workflows"
    out.mkdir(exist_ok=True)
    base = prepare_base(REPO / ".cache" / "workflow_base")
    with ComfyServer(REPO / ".host" / "ComfyUI", base, str(REPO / ".venv" / "bin" / "python"),
                     base / "server.log") as server:
        info = server.get("/object_info")
    graphs = {
        "wan2.1_t2v_1.3B_freeswim_1088p.json": t2v(
            info, unet="wan2.1_t2v_1.3B_fp16.safetensors", width=832, height=480, target=(1920, 1088),
            interval=2, note=T2V_13B_NOTE, prefix="freeswim/wan21_1.3B_1088p"),
        "wan_14B_t2v_freeswim_4k.json": t2v(
            info, unet="wan2.1_t2v_14B_fp16.safetensors", width=1280, height=720, target=(3840, 2160),
            interval=5, note=T2V_14B_NOTE, prefix="freeswim/wan_14B_4k", storage="cpu", precision="fp8",
            execution="sequential", weight_dtype="fp8_e4m3fn"),
        "wan2.1_i2v_14B_freeswim_1440p.json": i2v(info),
        "wan2.2_a14b_t2v_freeswim_1088p.json": a14b(info),
        "wan2.2_a14b_i2v_freeswim_1088p.json": a14b(info, kind="i2v"),
        "ltxv_t2v_freeswim_4k.json": ltxv_t2v(info),
    }
    for name, graph in graphs.items():
        (out / name).write_text(json.dumps(graph, indent=1) + "\n")
        print(f"wrote workflows/{name}")


if __name__ == "__main__":
    main()
