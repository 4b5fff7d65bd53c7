"""Small random-weight Wan checkpoints for the demo and the tests.

The state dict is produced by instantiating ComfyUI's own ``WanModel`` (so every
key and shape is the one real Wan files have) and filling it from a seeded
generator: matrices N(0, 1/fan_in), biases N(0, 0.02^2), modulations
N(0, 0.1^2), norm weights 1. ComfyUI detects the result as a Wan model from its
keys, exactly as it does a downloaded file.

Usage: python -m harness.tiny_wan --comfyui .host/ComfyUI OUT.safetensors
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def _comfy_in_cpu_mode_unless_loaded():
    """Put ComfyUI in CPU mode before its model code is first imported (tests, this script);
    a host that already started keeps its own device."""
    if "comfy.model_management" not in sys.modules:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True


def tiny_wan_state_dict(dim=256, layers=2, ffn_dim=512, in_dim=16, out_dim=16, text_dim=4096,
                        i2v=False, ref_conv_dim=None, vace_layers=None, seed=0, device="cpu",
                        dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Needs ComfyUI importable (``comfy`` on sys.path). The module is built on the meta device
    (no memory); values are drawn on ``device`` (a GPU makes real-size models quick) and
    returned on the CPU in ``dtype``."""
    _comfy_in_cpu_mode_unless_loaded()
    import comfy.ops
    from comfy.ldm.wan.model import VaceWanModel, WanModel
    common = dict(dim=dim, ffn_dim=ffn_dim, num_layers=layers, num_heads=dim // 128, in_dim=in_dim,
                  out_dim=out_dim, text_dim=text_dim, operations=comfy.ops.disable_weight_init,
                  device="meta", dtype=torch.float32)
    if vace_layers:
        model = VaceWanModel(vace_layers=vace_layers, vace_in_dim=96, **common)
    else:
        model = WanModel(model_type="i2v" if i2v else "t2v", in_dim_ref_conv=ref_conv_dim, **common)
    if str(device) == "meta":       # shapes only (model detection, memory traces)
        return {name: torch.empty(p.shape, device="meta", dtype=dtype) for name, p in model.state_dict().items()}
    gen = torch.Generator(device=device).manual_seed(seed)
    sd = {}
    for name, p in sorted(model.state_dict().items()):
        if "norm" in name and name.endswith("weight") and p.dim() == 1:
            t = torch.ones(p.shape, device=device)
        elif "modulation" in name or "emb_pos" in name:
            t = torch.randn(p.shape, generator=gen, device=device) * 0.1
        elif p.dim() >= 2:
            t = torch.randn(p.shape, generator=gen, device=device) / p[0].numel() ** 0.5
        else:
            t = torch.randn(p.shape, generator=gen, device=device) * 0.02
        sd[name] = t.to(dtype).cpu().contiguous()
    return sd


def _seeded_fill(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in sorted(module.state_dict().items()):
        if ("norm" in name or "gamma" in name) and p.dim() <= 1 or name.endswith("gamma"):
            t = torch.ones_like(p)
        elif p.dim() >= 2:
            t = torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5
        else:
            t = torch.randn(p.shape, generator=gen) * 0.02
        sd[name] = t.to(torch.float32).contiguous()
    return sd


def tiny_wan_vae_state_dict(dim: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A Wan 2.1 VAE (8x spatial, 4x temporal, 16 latent channels) with ``dim`` base channels
    instead of 96; ComfyUI reads ``dim`` from the weights, so it loads as a Wan VAE."""
    _comfy_in_cpu_mode_unless_loaded()
    from comfy.ldm.wan.vae import WanVAE
    vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    return _seeded_fill(vae, seed)


def _save(path: Path, comfyui: Path, make_state_dict, metadata: dict | None = None) -> Path:
    """Write ``make_state_dict()`` to ``path`` as safetensors (with ``metadata``), unless the file exists."""
    path = Path(path)
    if path.exists():
        return path
    loaded = sys.modules.get("comfy")
    if loaded is not None:
        # One process holds one ComfyUI: building from another host's classes would be silent.
        where = Path(next(iter(loaded.__path__))).resolve().parent
        if where != Path(comfyui).resolve():
            raise RuntimeError(f"this process imported ComfyUI from {where}, not {comfyui}")
    elif str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(make_state_dict(), str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def save_tiny_wan(path: Path, comfyui: Path, **kwargs) -> Path:
    """Write a tiny Wan checkpoint to ``path`` (skipped when it already exists)."""
    return _save(path, comfyui, lambda: tiny_wan_state_dict(**kwargs))


def save_tiny_wan_vae(path: Path, comfyui: Path, **kwargs) -> Path:
    """Write a tiny Wan 2.1 VAE to ``path`` (skipped when it already exists)."""
    return _save(path, comfyui, lambda: tiny_wan_vae_state_dict(**kwargs))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--comfyui", type=Path, default=Path(".host/ComfyUI"))
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    save_tiny_wan(a.out, a.comfyui.resolve(), dim=a.dim, layers=a.layers, seed=a.seed)
