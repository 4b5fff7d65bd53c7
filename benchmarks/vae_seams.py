"""Spatial seam error of the Wan VAE's tiled decode: ComfyUI's default tiles against the plan's.

  python benchmarks/vae_seams.py [--host 0.33.0] [--width 1920 --height 1088 --frames 5 --vram-gb 12]

ComfyUI's real Wan 2.1 VAE class with small random weights (16 base channels), every frame
at once. A latent is decoded untiled (the reference), with ComfyUI's default `VAE Decode
(Tiled)` spatial settings (512 px tiles, 64 px overlap) and with the tiles the VAE memory
plan picks for an 81-frame clip of this size on a GPU of --vram-gb. For each seam (the centre
of an overlap, vertical or horizontal) the error against the reference is measured in the
overlap band: mean and max per seam, and over the whole frame. Random weights make every
error larger than a trained VAE's; the comparison between settings is the point.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seam_positions(size: int, tile: int, overlap: int) -> list[int]:
    """Pixel positions of the seams ComfyUI's tiler makes along one axis (centres of overlaps)."""
    if size <= tile:
        return []
    starts = [max(0, min(size - overlap, p)) for p in range(0, size - overlap, tile - overlap)]
    return sorted({s + overlap // 2 for s in starts[1:]})


def seam_errors(diff, tile_w: int, tile_h: int, overlap: int) -> list[dict]:
    """Mean and max of ``diff`` ([frames, H, W, C]) in the band of each seam."""
    import torch
    H, W = diff.shape[1:3]
    out = []
    for x in seam_positions(W, tile_w, overlap):
        band = diff[:, :, max(0, x - overlap // 2):x + overlap // 2]
        out.append({"axis": "x", "at": x, "mean": band.mean().item(), "max": band.max().item()})
    for y in seam_positions(H, tile_h, overlap):
        band = diff[:, max(0, y - overlap // 2):y + overlap // 2]
        out.append({"axis": "y", "at": y, "mean": band.mean().item(), "max": band.max().item()})
    return out


def measure(vae, latent, tile_w: int, tile_h: int, overlap: int, ref):
    """Decode ``latent`` in spatial tiles (every frame at once); per-seam and whole-frame errors."""
    import torch
    t = latent.shape[2]
    with torch.inference_mode():
        out = vae.decode_tiled(latent, tile_x=tile_h // 8, tile_y=tile_w // 8, overlap=overlap // 8,
                               tile_t=t, overlap_t=1)
    diff = (out.float() - ref.float()).abs().reshape(-1, *ref.shape[-3:])
    seams = seam_errors(diff, tile_w, tile_h, overlap)
    return {"tile": [tile_w, tile_h], "overlap": overlap, "seams": seams,
            "seam_mean": sum(s["mean"] for s in seams) / max(1, len(seams)),
            "seam_max": max((s["max"] for s in seams), default=0.0),
            "frame_mean": diff.mean().item(), "frame_max": diff.max().item()}


def compare(vae, width: int, height: int, frames: int, vram_gb: float, seed: int = 0) -> dict:
    import torch
    from freeswim_core.memory.vae import plan_vae
    latent = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8,
                         generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = vae.decode(latent)
    plan = plan_vae("decode", width, height, 81, int(vram_gb * 1e9))
    tile = plan.tile or (width, height)
    return {"default": measure(vae, latent, 512, 512, 64, ref),
            "plan": measure(vae, latent, tile[0], tile[1], plan.overlap or 64, ref),
            "plan_for": f"81 frames on {vram_gb:g} GB"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default=None)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1088)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--vram-gb", type=float, default=12)
    ap.add_argument("--dim", type=int, default=16, help="the VAE's base channels (released: 96)")
    a = ap.parse_args()
    from benchmarks.memory import host_by_version
    import harness.inprocess as inprocess
    inprocess.comfy_ready(host_by_version(a.host))
    import comfy.sd
    from harness.tiny_wan import tiny_wan_vae_state_dict
    vae = comfy.sd.VAE(sd=tiny_wan_vae_state_dict(dim=a.dim, seed=5))
    r = compare(vae, a.width, a.height, a.frames, a.vram_gb)
    print(f"Wan 2.1 VAE class, {a.dim} base channels, random weights; {a.width}x{a.height}, {a.frames} frames at once")
    print("| settings | tile (px) | overlap (px) | seams | mean per seam | max per seam | mean over frame | max over frame |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in (("VAE Decode (Tiled) default", r["default"]), (f"plan ({r['plan_for']})", r["plan"])):
        print(f"| {name} | {m['tile'][0]}x{m['tile'][1]} | {m['overlap']} | {len(m['seams'])} | {m['seam_mean']:.4f} | "
              f"{m['seam_max']:.4f} | {m['frame_mean']:.5f} | {m['frame_max']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
