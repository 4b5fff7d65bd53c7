"""Stand-ins for running the shared workflows without real weights (tests and `make demo`).

The text encoder (UMT5-XXL) and CLIP vision cannot be stood in at their real size
on a CPU, so their nodes are swapped for the test-only nodes in
harness/host_nodes/freeswim_test_nodes; every other node runs as the workflow says,
on small random-weight models saved under the file names the workflow expects.
Sizes, frame counts and steps are reduced so a CPU finishes in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    native: tuple[int, int] = (128, 96)        # width, height of the native pass (and of the window)
    frames: int = 5
    target: tuple[int, int] = (192, 160)
    native_steps: int = 2
    refine_steps: int = 8          # 4 run: with two experts, a guide and a reuse step after the switch
    refine_strength: float = 0.5


def stand_ins(api: dict, sizes: Sizes = Sizes()) -> dict:
    """Swap encoders for test nodes and shrink sizes; returns a new API prompt."""
    out = {}
    for nid, node in api.items():
        kind, inp = node["class_type"], dict(node["inputs"])
        if kind in ("CLIPLoader", "CLIPVisionLoader"):
            continue
        if kind == "CLIPTextEncode":
            kind, inp = "FreeSwimTestTextConditioning", {"text": inp["text"], "seed": int(nid), "tokens": 512,
                                                          "dim": 4096}
        elif kind == "CLIPVisionEncode":
            kind, inp = "FreeSwimTestClipVision", {"seed": int(nid)}
        elif kind in ("EmptyHunyuanLatentVideo", "WanImageToVideo"):
            inp.update(width=sizes.native[0], height=sizes.native[1], length=sizes.frames)
        elif kind == "KSampler":
            inp.update(steps=sizes.native_steps)
        elif kind == "KSamplerAdvanced":         # keep the split at the same fraction of the steps
            total, n = inp["steps"], 2 * sizes.native_steps
            inp.update(steps=n, start_at_step=round(inp["start_at_step"] * n / total),
                       end_at_step=round(min(inp["end_at_step"], total) * n / total))
        elif kind == "FreeSwimWindowAttentionPatch":
            # the stand-in model's "native size" is the stand-in native pass
            inp.update(native_size="custom", custom_width=sizes.native[0], custom_height=sizes.native[1])
        elif kind == "FreeSwimLatentUpscaleRefine":
            inp.update(width=sizes.target[0], height=sizes.target[1], steps=sizes.refine_steps,
                       strength=sizes.refine_strength)
        out[nid] = {"class_type": kind, "inputs": inp}
    return out


STAND_IN_UNETS = {
    # file name the workflows use -> kind of tiny model standing in for it
    "wan2.1_t2v_1.3B_fp16.safetensors": "t2v",
    "wan2.1_t2v_14B_fp16.safetensors": "t2v",
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": "t2v",
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": "t2v_low",
    "wan2.1_i2v_720p_14B_fp16.safetensors": "i2v",
    "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": "i2v22",
    "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors": "i2v22_low",
}


def install_stand_in_models(base, comfyui) -> None:
    """Tiny Wan models and a tiny Wan VAE under the workflows' file names, plus a start frame."""
    import random
    from pathlib import Path

    from PIL import Image

    from harness.tiny_wan import save_tiny_wan, save_tiny_wan_vae
    base = Path(base)
    unets = base / "models" / "diffusion_models"
    (base / "models" / "vae").mkdir(parents=True, exist_ok=True)
    unets.mkdir(parents=True, exist_ok=True)
    files = {
        "t2v": save_tiny_wan(unets / "tiny_t2v.safetensors", comfyui, seed=51),
        "t2v_low": save_tiny_wan(unets / "tiny_t2v_low.safetensors", comfyui, seed=53),
        "i2v": save_tiny_wan(unets / "tiny_i2v.safetensors", comfyui, seed=52, i2v=True, in_dim=36),
        # Wan2.2's I2V experts: 36 input channels, no CLIP image layers
        "i2v22": save_tiny_wan(unets / "tiny_i2v22.safetensors", comfyui, seed=55, in_dim=36),
        "i2v22_low": save_tiny_wan(unets / "tiny_i2v22_low.safetensors", comfyui, seed=56, in_dim=36),
    }
    for name, kind in STAND_IN_UNETS.items():
        link = unets / name
        if not link.exists():
            link.symlink_to(files[kind])
    save_tiny_wan_vae(base / "models" / "vae" / "wan_2.1_vae.safetensors", comfyui, dim=8, seed=54)
    start = base / "input" / "freeswim_start_frame.png"
    if not start.exists():
        rng = random.Random(0)
        img = Image.new("RGB", (128, 96))
        img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(128 * 96)])
        img.save(start)
