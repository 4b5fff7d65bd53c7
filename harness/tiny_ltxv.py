"""Small random-weight LTX-Video checkpoints (and an LTX VAE) for the tests, the demo and the workflows.

The state dict comes from ComfyUI's own ``LTXVModel`` (every key and shape as a released
LTXV file has them), filled from a seeded generator as :mod:`harness.tiny_wan` fills Wan's:
matrices N(0, 1/fan_in), biases N(0, 0.02^2), AdaLN tables N(0, 0.1^2), norm weights 1.
ComfyUI's model detection reads 32 heads and the head width from ``attn2.to_k``, so
``dim`` is 32 x the head width; the caption projection keeps T5's 4096 inputs, as ComfyUI
assumes for LTXV files.

The VAE is ComfyUI's ``VideoVAE`` with a small configuration (32x spatial, 8x temporal,
128 latent channels, as the released one) given in the file's metadata, which ComfyUI's
VAE loader reads for LTX VAEs.

Usage: python -m harness.tiny_ltxv --comfyui .host/ComfyUI OUT.safetensors [--vae]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from harness.tiny_wan import _comfy_in_cpu_mode_unless_loaded, _save

HEADS = 32          # what ComfyUI's detection assumes for LTXV

VAE_CONFIG = {"dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
              "blocks": [["res_x", 1], ["compress_all", 1], ["compress_all", 1], ["compress_all", 1], ["res_x", 1]],
              "patch_size": 4, "norm_layer": "pixel_norm", "latent_log_var": "uniform", "causal_decoder": False,
              "encoder_base_channels": 16, "decoder_base_channels": 16}


def tiny_ltxv_state_dict(dim: int = 128, layers: int = 2, seed: int = 0, device="cpu",
                         dtype=torch.float32, **config) -> dict[str, torch.Tensor]:
    """Needs ComfyUI importable. ``device="meta"`` gives shapes only (memory traces). ``config``:
    further ``LTXVModel`` arguments (``cross_attention_adaln=True`` on ComfyUI 0.33: pass the same
    as the file's metadata config when loading)."""
    _comfy_in_cpu_mode_unless_loaded()
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel
    if dim % HEADS:
        raise ValueError(f"dim must be a multiple of {HEADS} (ComfyUI reads LTXV as 32 heads), got {dim}")
    model = LTXVModel(in_channels=128, cross_attention_dim=dim, attention_head_dim=dim // HEADS,
                      num_attention_heads=HEADS, caption_channels=4096, num_layers=layers,
                      dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init, **config)
    if str(device) == "meta":
        return {name: torch.empty(p.shape, device="meta", dtype=dtype) for name, p in model.state_dict().items()}
    gen = torch.Generator(device=device).manual_seed(seed)
    sd = {}
    for name, p in sorted(model.state_dict().items()):
        if "norm" in name and p.dim() == 1:
            t = torch.ones(p.shape, device=device)
        elif "scale_shift_table" in name:
            t = torch.randn(p.shape, generator=gen, device=device) * 0.1
        elif p.dim() >= 2:
            t = torch.randn(p.shape, generator=gen, device=device) / p.shape[1] ** 0.5
        else:
            t = torch.randn(p.shape, generator=gen, device=device) * 0.02
        sd[name] = t.to(dtype).cpu().contiguous()
    return sd


def tiny_ltxv_vae_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """An LTX VideoVAE of :data:`VAE_CONFIG` (pass :func:`vae_metadata` to ComfyUI's VAE with it)."""
    _comfy_in_cpu_mode_unless_loaded()
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
    model = VideoVAE(config=dict(VAE_CONFIG))
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in sorted(model.state_dict().items()):
        if "std-of-means" in name or "mean-of-stds" in name:
            t = torch.ones(p.shape)
        elif "mean-of-means" in name or name.endswith("channel"):
            t = torch.zeros(p.shape)
        elif p.dim() >= 2:
            t = torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5
        else:
            t = torch.zeros(p.shape)
        sd[name] = t.to(torch.float32).contiguous()
    return sd


def vae_metadata() -> dict[str, str]:
    return {"config": json.dumps({"vae": VAE_CONFIG})}


def save_tiny_ltxv(path: Path, comfyui: Path, **kwargs) -> Path:
    return _save(path, comfyui, lambda: tiny_ltxv_state_dict(**kwargs))


def save_tiny_ltxv_vae(path: Path, comfyui: Path, **kwargs) -> Path:
    return _save(path, comfyui, lambda: tiny_ltxv_vae_state_dict(**kwargs), metadata=vae_metadata())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--comfyui", type=Path, default=Path(".host/ComfyUI"))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae", action="store_true", help="write the tiny LTX VAE instead")
    a = ap.parse_args()
    if a.vae:
        save_tiny_ltxv_vae(a.out, a.comfyui.resolve(), seed=a.seed)
    else:
        save_tiny_ltxv(a.out, a.comfyui.resolve(), dim=a.dim, layers=a.layers, seed=a.seed)
