"""Average denoising-step time (cond + uncond, CFG) of a random-weight Wan in ComfyUI.

Modes
  full          unpatched model: direct full attention at the target size
  window        FreeSwim Window Attention Patch
  dual          + Dual-Path Override (conditional pass), no cache: full branch every step
  cache2/cache5 + Cross-Attn Cache with guide interval 2 / 5
  cache5-cpu    the same, the features kept in (pinned) host memory

Each mode samples ``--steps`` steps with ComfyUI's own KSampler (euler) and reports
the average time per step, so cache modes are averaged over a schedule of guide
and reuse steps. Peak GPU memory and the cache's storage choice are reported on CUDA.

  python benchmarks/step.py                 # CPU: a small Wan at a small size
  python benchmarks/step.py --preset 1.3b   # GPU: 1.3B architecture at 1088x1920x81
  python benchmarks/step.py --preset 14b    # GPU: 14B architecture at 2160x3840x81
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from freeswim_core.families import variant  # noqa: E402


def _released(name: str, latent: tuple) -> dict:
    """A released model's sizes and native size (the registry's) at a latent [C, T, H, W]."""
    a = variant(name).arch
    return dict(dim=a.dim, layers=a.blocks, ffn=a.ffn_dim, latent=latent, native=tuple(a.native), steps=10)


PRESETS = {
    # name: model dims, latent [C, T, H, W], native px (w, h), steps
    "cpu": dict(dim=256, layers=4, ffn=1024, latent=(16, 5, 48, 80), native=(256, 160), steps=6),
    "1.3b": _released("1.3b", (16, 21, 136, 240)),        # 1920x1088x81
    "14b": _released("14b", (16, 21, 270, 480)),          # 3840x2160x81
}
MODES = ("full", "window", "dual", "cache2", "cache5")


def build(comfy, preset):
    from comfy.sd import load_diffusion_model_state_dict
    from harness.tiny_wan import tiny_wan_state_dict
    cuda = torch.cuda.is_available()
    sd = tiny_wan_state_dict(dim=preset["dim"], layers=preset["layers"], ffn_dim=preset["ffn"], seed=0,
                             device="cuda" if cuda else "cpu", dtype=torch.bfloat16 if cuda else torch.float32)
    model = load_diffusion_model_state_dict(sd)
    del sd
    return model


def patched(comfy, model, mode, native, *, storage="auto", execution="auto", backend="auto"):
    """``model`` with the FreeSwim nodes of ``mode`` (full: none; window; dual; cacheN: guide
    interval N; cacheN-cpu: the same with the features in host memory) applied as a graph would,
    the window through ``backend``."""
    if mode == "full":
        return model
    (m,) = comfy.run_node("FreeSwimWindowAttentionPatch", model=model, native_size="custom",
                          custom_width=native[0], custom_height=native[1], inward=True,
                          attention_scale="reference", backend=backend)
    if mode == "window":
        return m
    (m,) = comfy.run_node("FreeSwimDualPathOverride", model=m, passes="cond", override_image_cross=False,
                          start_percent=0.0, end_percent=1.0, execution=execution)
    if mode == "dual":
        return m
    interval, _, where = mode[5:].partition("-")        # cacheN, or cacheN-cpu: the features in host memory
    (m,) = comfy.run_node("FreeSwimCrossAttnCache", model=m, guide_interval=int(interval), storage=where or storage,
                          precision="model")
    return m


def device_label() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def measure(comfy, model, mode, preset_name, preset, shape, steps) -> dict:
    """Average seconds per step of ``steps`` euler steps (cfg 5) in ``mode``, after a one-step
    warm-up (weights loaded, kernels compiled); the run report of FreeSwim modes."""
    m = patched(comfy, model, mode, preset["native"])
    latent = torch.zeros(1, *shape)
    T, H, W = shape[1], shape[2] // 2, shape[3] // 2
    comfy.ksample(m, latent, seed=0, steps=1)          # warm-up: loads weights, compiles
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    comfy.ksample(m, latent, seed=0, steps=steps)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / steps
    report = comfy.last_report() if mode != "full" else {}
    return dict(device=device_label(), preset=preset_name, tokens=T * H * W, latent=list(shape), mode=mode,
                seconds=per_step, steps=steps,
                peak_gb=torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None,
                freeswim=report or None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--latent", default=None, help="override the latent size: C,T,H,W")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON record per mode to this file")
    a = ap.parse_args()
    preset = PRESETS[a.preset]
    steps = a.steps or preset["steps"]
    import harness.inprocess as comfy
    from harness.inductor_cache import cache_for_threads
    cache_for_threads()
    if torch.cuda.is_available():
        os.environ.setdefault("FREESWIM_COMFY_CPU", "0")
    comfy.comfy_ready()
    model = build(comfy, preset)
    shape = tuple(int(v) for v in a.latent.split(",")) if a.latent else preset["latent"]
    T, H, W = shape[1], shape[2] // 2, shape[3] // 2
    print(f"device: {device_label()}; torch {torch.__version__}; "
          f"Wan dim {preset['dim']}, {preset['layers']} blocks; latent {[1, *shape]} -> tokens "
          f"{T}x{H}x{W} = {T * H * W:,}; native {preset['native'][0]}x{preset['native'][1]} px; "
          f"{steps} euler steps, cfg 5")
    print("| mode | s / step | vs full | peak GPU (GB) | cache |")
    print("|---|---|---|---|---|")
    base = None
    for mode in a.modes.split(","):
        r = measure(comfy, model, mode, a.preset, preset, shape, steps)
        report = r["freeswim"] or {}
        base = base or (r["seconds"] if mode == "full" else None)
        peak = "" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        cache = (f"{report['guide_calls']} guide / {report['reuse_calls']} reuse calls, "
                 f"{report['cache_bytes'] / 2**20:.1f} MB on {report['cache_storage']}"
                 if report.get("cache_storage") else report.get("cache_off_reason") or "")
        ratio = f"{r['seconds'] / base:.2f}x" if base else ""
        print(f"| {mode} | {r['seconds']:.3f} | {ratio} | {peak} | {cache} |", flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
