"""Stand-ins for running the shared workflows without real weights (tests and `make demo`).

The text encoders (Wan's UMT5-XXL, LTX-Video's T5-XXL) and CLIP vision cannot be stood
in at their real size on a CPU (ComfyUI builds them at their fixed real size whatever
the file holds), so their nodes are swapped for the test-only nodes in
harness/host_nodes/freeswim_test_nodes, which give conditioning of the encoder's shape;
every other node runs as the workflow says, on small random-weight models saved under
the file names the workflow expects. Sizes, frame counts and steps are reduced so a
CPU finishes in seconds.

One more swap, on hosts that need it: the tiny LTX VAE carries its (small)
configuration in its file's metadata, which ComfyUI's Load VAE reads on newer hosts
(0.33.0) but not on 0.3.75, which builds an LTX VAE of a released size from the
weights' shapes (as it loads a real LTX VAE file). There the VAE output of a Load
Checkpoint of a tiny LTXV checkpoint holding the same VAE (that loader reads the
metadata on every host) stands in for Load VAE (:func:`vae_loader_reads_metadata`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sizes:
    native: tuple[int, int] = (128, 96)        # width, height of the native pass (and of the window)
    frames: int = 5
    target: tuple[int, int] = (192, 160)
    native_steps: int = 2
    refine_steps: int = 8          # 4 run: with two experts, a guide and a reuse step after the switch
    refine_strength: float = 0.5

    @property
    def ltxv_frames(self) -> int:
        """LTX-Video's frame count (8n+1, the LTX VAE's 8x in time) at least ``frames``: 5 -> 9, 17 -> 17."""
        return 8 * math.ceil((self.frames - 1) / 8) + 1


# The test text node's settings per CLIPLoader type (default: Wan's UMT5, 512 tokens of 4096, no mask).
# ComfyUI's LTXV T5 pads to at least 128 tokens and hands LTX-Video the text's attention mask, which
# the model's call requires (the test node's attention_mask input: 1 for the prompt's tokens, 0 after).
TEXT_ENCODERS = {"ltxv": {"tokens": 128, "attention_mask": True}}


def stand_ins(api: dict, sizes: Sizes = Sizes(), *, comfyui: Path | None = None) -> dict:
    """Swap encoders for test nodes and shrink sizes; returns a new API prompt.

    ``comfyui``: the host the prompt runs on; its Load VAE keeps loading the LTX VAE stand-in
    when it reads the file's metadata. Without it, the LTX VAE comes from Load Checkpoint
    (which works on every host)."""
    clip_types = {nid: node["inputs"].get("type") for nid, node in api.items() if node["class_type"] == "CLIPLoader"}
    swap_vae = comfyui is None or not vae_loader_reads_metadata(comfyui)
    ltx_vaes = {nid for nid, node in api.items() if swap_vae and node["class_type"] == "VAELoader"
                and node["inputs"].get("vae_name") in STAND_IN_LTXV_VAES}
    out = {}
    for nid, node in api.items():
        kind, inp = node["class_type"], dict(node["inputs"])
        for name, value in inp.items():                      # the checkpoint's VAE is its third output
            if isinstance(value, list) and len(value) == 2 and value[0] in ltx_vaes and value[1] == 0:
                inp[name] = [value[0], 2]
        if kind in ("CLIPLoader", "CLIPVisionLoader"):
            continue
        if kind == "CLIPTextEncode":
            clip = inp.get("clip")
            encoder = TEXT_ENCODERS.get(clip_types.get(clip[0]) if isinstance(clip, list) else None, {})
            kind, inp = "FreeSwimTestTextConditioning", {"text": inp["text"], "seed": int(nid), "tokens": 512,
                                                          "dim": 4096, **encoder}
        elif kind == "CLIPVisionEncode":
            kind, inp = "FreeSwimTestClipVision", {"seed": int(nid)}
        elif kind in ("EmptyHunyuanLatentVideo", "WanImageToVideo"):
            inp.update(width=sizes.native[0], height=sizes.native[1], length=sizes.frames)
        elif kind == "EmptyLTXVLatentVideo":
            inp.update(width=sizes.native[0], height=sizes.native[1], length=sizes.ltxv_frames)
        elif nid in ltx_vaes:
            kind, inp = "CheckpointLoaderSimple", {"ckpt_name": LTXV_VAE_CHECKPOINT}
        elif kind == "KSampler":
            inp.update(steps=sizes.native_steps)
        elif kind == "LTXVScheduler":                 # the sigmas of a SamplerCustom native pass
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
    # Lightricks' checkpoint (transformer and VAE): Load Diffusion Model reads its transformer
    "ltxv-2b-0.9.6-dev-04-25.safetensors": "ltxv",
}
# LTX-Video VAE files the workflows load with Load VAE
STAND_IN_LTXV_VAES = ("LTX-Video-0.9.6-VAE-BF16.safetensors",)
# models/checkpoints/: the tiny LTXV checkpoint whose VAE stands in where Load VAE reads no metadata
LTXV_VAE_CHECKPOINT = "freeswim_stand_in_ltxv.safetensors"


def vae_loader_reads_metadata(comfyui: Path) -> bool:
    """Whether this host's Load VAE passes the file's metadata to the VAE (0.33.0 does, 0.3.75 not;
    an LTX VAE's configuration can be given there). Read off the host's own ``VAELoader`` source."""
    text = (Path(comfyui) / "nodes.py").read_text()
    start = text.find("class VAELoader")
    end = text.find("\nclass ", start + 1)
    return start >= 0 and "metadata" in text[start:end]


def save_tiny_ltxv_checkpoint(path: Path, comfyui: Path, *, seed: int = 61, vae_seed: int = 62) -> Path:
    """A tiny LTXV checkpoint as Lightricks ships one: the transformer under ``model.diffusion_model.``,
    the VAE under ``vae.``, the VAE's configuration in the metadata."""
    from harness.tiny_ltxv import tiny_ltxv_state_dict, tiny_ltxv_vae_state_dict, vae_metadata
    from harness.tiny_wan import _save

    def state_dict():
        sd = {f"model.diffusion_model.{k}": v for k, v in tiny_ltxv_state_dict(seed=seed).items()}
        sd.update({f"vae.{k}": v for k, v in tiny_ltxv_vae_state_dict(seed=vae_seed).items()})
        return sd
    return _save(path, comfyui, state_dict, metadata=vae_metadata())


def install_stand_in_models(base, comfyui) -> None:
    """Tiny Wan and LTXV models and their tiny VAEs under the workflows' file names, plus a start frame."""
    import random

    from PIL import Image

    from harness.tiny_ltxv import save_tiny_ltxv_vae
    from harness.tiny_wan import save_tiny_wan, save_tiny_wan_vae
    base = Path(base)
    unets = base / "models" / "diffusion_models"
    checkpoints = base / "models" / "checkpoints"
    for folder in (unets, base / "models" / "vae", checkpoints):
        folder.mkdir(parents=True, exist_ok=True)
    files = {
        "t2v": save_tiny_wan(unets / "tiny_t2v.safetensors", comfyui, seed=51),
        "t2v_low": save_tiny_wan(unets / "tiny_t2v_low.safetensors", comfyui, seed=53),
        "i2v": save_tiny_wan(unets / "tiny_i2v.safetensors", comfyui, seed=52, i2v=True, in_dim=36),
        # Wan2.2's I2V experts: 36 input channels, no CLIP image layers
        "i2v22": save_tiny_wan(unets / "tiny_i2v22.safetensors", comfyui, seed=55, in_dim=36),
        "i2v22_low": save_tiny_wan(unets / "tiny_i2v22_low.safetensors", comfyui, seed=56, in_dim=36),
        # LTX-Video 2B's layout at 32 heads x 4 (dim 128), 2 blocks, with a tiny LTX VAE inside
        "ltxv": save_tiny_ltxv_checkpoint(unets / "tiny_ltxv.safetensors", comfyui),
    }
    for name, kind in STAND_IN_UNETS.items():
        link = unets / name
        if not link.exists():
            link.symlink_to(files[kind])
    save_tiny_wan_vae(base / "models" / "vae" / "wan_2.1_vae.safetensors", comfyui, dim=8, seed=54)
    for name in STAND_IN_LTXV_VAES:          # the same tiny VAE as the checkpoint's (same seed)
        save_tiny_ltxv_vae(base / "models" / "vae" / name, comfyui, seed=62)
    link = checkpoints / LTXV_VAE_CHECKPOINT
    if not link.exists():
        link.symlink_to(files["ltxv"])
    start = base / "input" / "freeswim_start_frame.png"
    if not start.exists():
        rng = random.Random(0)
        img = Image.new("RGB", (128, 96))
        img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(128 * 96)])
        img.save(start)
