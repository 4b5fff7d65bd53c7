"""`make demo`: FreeSwim attention patches through a real ComfyUI server.

Starts ComfyUI headless in an isolated base directory under .cache/, builds a
small random-weight Wan checkpoint, queues a graph that samples a video latent
at 3x the (demo) native size with FreeSwim Window Attention Patch, Dual-Path
Override and Cross-Attn Cache, and writes the result and a short report into out/.

With random weights the latent is noise-like; what the demo shows is the
pipeline running in the host, the window geometry and the attention cost.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from freeswim_core import TokenGrid, attention_cost, native_window  # noqa: E402
from scripts.comfy_server import ComfyServer, prepare_base  # noqa: E402
from scripts.graphs import TEST_NODES_NAME, window_patch_graph  # noqa: E402
from scripts.tiny_wan import save_tiny_wan  # noqa: E402

# Demo geometry: "native" 256x160 px for the tiny model, sampled at 768x480 px, 17 frames.
NATIVE = (256, 160)
TARGET = (768, 480)
FRAMES = 17
STEPS = 4
DIM, HEADS, HEAD_DIM = 256, 2, 128
UNET = "freeswim_demo_wan.safetensors"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", type=Path, default=REPO / ".host" / "ComfyUI")
    ap.add_argument("--python", default=sys.executable, help="python that runs that ComfyUI")
    ap.add_argument("--out", type=Path, default=REPO / "out")
    a = ap.parse_args()

    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = prepare_base(REPO / ".cache" / "demo_base",
                        {TEST_NODES_NAME: REPO / "tests" / "host_nodes" / TEST_NODES_NAME})
    embedded = REPO / ".host" / "ComfyUI"
    model_path = save_tiny_wan(base / "models" / "diffusion_models" / UNET, embedded,
                               dim=DIM, layers=2, seed=2026)

    grid = TokenGrid((FRAMES - 1) // 4 + 1, TARGET[1] // 16, TARGET[0] // 16)
    window = native_window(NATIVE[0], NATIVE[1], 16)
    cost = attention_cost(grid, window, HEADS, HEAD_DIM)
    print(f"[demo] ComfyUI: {a.comfyui}  model: {model_path.name} (random weights, dim {DIM}, 2 blocks)")
    print(f"[demo] target {TARGET[0]}x{TARGET[1]}x{FRAMES} frames -> token grid {grid.t}x{grid.h}x{grid.w} "
          f"({grid.tokens} tokens); native {NATIVE[0]}x{NATIVE[1]} px -> window {window.h}x{window.w} tokens")

    graph = window_patch_graph(unet_name=UNET, width=TARGET[0], height=TARGET[1], length=FRAMES,
                               steps=STEPS, native_width=NATIVE[0], native_height=NATIVE[1], seed=7,
                               prefix="freeswim/demo", dual_path=True, guide_interval=2)
    t0 = time.time()
    with ComfyServer(a.comfyui, base, a.python, out / "comfyui.log") as server:
        started = time.time() - t0
        entry = server.run_prompt(graph, timeout=900)
        ran = time.time() - t0 - started
        log = server.log()
    status = entry.get("status", {})
    if status.get("status_str") != "success":
        print(f"[demo] the prompt failed: {json.dumps(status.get('messages'), indent=1)[-3000:]}")
        return 1
    latents = sorted((base / "output" / "freeswim").glob("demo_*.latent"), key=lambda p: p.stat().st_mtime)
    result = out / "freeswim_demo.latent"
    shutil.copy2(latents[-1], result)
    marker = "FreeSwim window attention:"
    plan = [line[line.index(marker):] for line in log.splitlines() if marker in line]
    cache_marker = "FreeSwim Cross-Attn Cache:"
    cache = [line[line.index(cache_marker):] for line in log.splitlines() if cache_marker in line]

    report = {
        "comfyui": str(a.comfyui),
        "target_px": TARGET, "frames": FRAMES, "native_px": NATIVE, "steps": STEPS,
        "token_grid": grid.as_tuple(), "window_tokens": (window.h, window.w),
        "keys_per_query_mean": cost["keys_per_query_mean"],
        "self_attention_flops_full": cost["full_flops"],
        "self_attention_flops_window": cost["window_flops"],
        "window_fraction_of_full": cost["fraction_of_full"],
        "server_start_s": round(started, 1), "prompt_s": round(ran, 1),
        "server_plan_line": plan[-1] if plan else None,
        "server_cache_lines": cache,
        "output": str(result),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"[demo] keys per query: {cost['keys_per_query_mean']:.0f} of {grid.tokens} "
          f"({100 * cost['fraction_of_full']:.1f}% of full self-attention FLOPs per layer: "
          f"{cost['window_flops'] / 1e9:.2f} vs {cost['full_flops'] / 1e9:.2f} GFLOP)")
    print(f"[demo] server log: {plan[-1] if plan else 'no FreeSwim plan line found'}")
    for line in cache:
        print(f"[demo] server log: {line}")
    print(f"[demo] server up in {started:.1f}s, prompt ran in {ran:.1f}s")
    print(f"[demo] wrote {result.relative_to(REPO) if result.is_relative_to(REPO) else result} and "
          f"{(out / 'report.json').relative_to(REPO) if out.is_relative_to(REPO) else out / 'report.json'}")
    return 0 if plan else 1


if __name__ == "__main__":
    sys.exit(main())
