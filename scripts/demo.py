"""`make demo`: the whole FreeSwim method through a real ComfyUI server.

Runs the shared workflow workflows/wan2.1_t2v_1.3B_freeswim_1088p.json (native
pass -> window attention + dual path + cross-attention cache -> Latent Upscale
Refine -> tiled VAE decode -> video) in a headless ComfyUI with an isolated base
directory under .cache/, and writes the video and a report (grid, window, cache
use, time per phase) into out/.

Default: small random-weight stand-ins for the Wan model and VAE, a test node in
place of the text encoder, and sizes reduced so a CPU finishes in about a
minute; the video is noise-like, what it shows is the method running end to end.
With MODELS=/path/to/ComfyUI/models (holding the workflow's Wan, UMT5 and VAE
files) the workflow runs unchanged, at full size, on real weights.
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
from freeswim_core.families import variant  # noqa: E402
from harness.comfy_server import ComfyServer, PromptRejected, prepare_base  # noqa: E402
from harness.graphs import TEST_NODES, TEST_NODES_NAME  # noqa: E402
from harness.model_files import missing_files_report  # noqa: E402
from harness.stand_ins import Sizes, install_stand_in_models, stand_ins  # noqa: E402
from harness.workflow_format import ui_to_api  # noqa: E402

WORKFLOW = REPO / "workflows" / "wan2.1_t2v_1.3B_freeswim_1088p.json"
# Demo sizes for the stand-in model: native 256x160 px, 17 frames, refined to 768x480 (3x).
DEMO = Sizes(native=(256, 160), frames=17, target=(768, 480), native_steps=4, refine_steps=8,
             refine_strength=0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", type=Path, default=REPO / ".host" / "ComfyUI")
    ap.add_argument("--python", default=sys.executable, help="python that runs that ComfyUI")
    ap.add_argument("--models", type=Path, default=None, help="a ComfyUI models folder with the real files")
    ap.add_argument("--out", type=Path, default=REPO / "out")
    ap.add_argument("--quick", action="store_true",
                    help="the test suite's sizes (seconds on a CPU) instead of the demo's")
    a = ap.parse_args()

    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    real = a.models is not None
    workflow = json.loads(WORKFLOW.read_text())
    if real:
        missing = missing_files_report(workflow, a.models.resolve(), f"workflows/{WORKFLOW.name}")
        if missing:
            print(f"[demo] {missing}", file=sys.stderr)
            return 2
    base = prepare_base(REPO / ".cache" / ("demo_real" if real else "demo_base") / a.comfyui.resolve().name,
                        {TEST_NODES_NAME: TEST_NODES})
    if real:
        models = base / "models"
        if models.is_symlink() or not models.exists():
            models.unlink(missing_ok=True)
        else:
            shutil.rmtree(models)
        models.symlink_to(a.models.resolve(), target_is_directory=True)
    else:
        install_stand_in_models(base, a.comfyui.resolve())

    t0 = time.time()
    with ComfyServer(a.comfyui, base, a.python, out / "comfyui.log") as server:
        started = time.time() - t0
        prompt = ui_to_api(workflow, server.get("/object_info"))
        if not real:
            prompt = stand_ins(prompt, Sizes() if a.quick else DEMO)
        try:
            entry, timings = server.run_prompt_timed(prompt, timeout=3600)
        except PromptRejected as refused:
            print(f"[demo] workflows/{WORKFLOW.name}: {refused.describe()}", file=sys.stderr)
            return 2
        runs = server.reports(entry["prompt_id"])
    status = entry.get("status", {})
    if status.get("status_str") != "success":
        print(f"[demo] the workflow failed: {json.dumps(status.get('messages'), indent=1)[-3000:]}")
        return 1

    videos = [item for o in entry["outputs"].values() for item in o.get("images", [])]
    video = base / "output" / videos[0].get("subfolder", "") / videos[0]["filename"]
    result = out / ("freeswim_demo" + video.suffix)
    shutil.copy2(video, result)

    refine = next(n for n in prompt.values() if n["class_type"] == "FreeSwimLatentUpscaleRefine")["inputs"]
    frames = next(n for n in prompt.values() if n["class_type"] == "EmptyHunyuanLatentVideo")["inputs"]["length"]
    arch = variant("1.3b").arch                       # the demo's graph: Wan2.1 T2V 1.3B
    px = arch.vae * arch.patch[1]
    grid = TokenGrid((frames - 1) // arch.vae_temporal + 1, refine["height"] // px, refine["width"] // px)
    window_node = next(n for n in prompt.values() if n["class_type"] == "FreeSwimWindowAttentionPatch")["inputs"]
    native = ((window_node["custom_width"], window_node["custom_height"]) if window_node["native_size"] == "custom"
              else arch.native)
    window = native_window(native[0], native[1], px)
    cost = attention_cost(grid, window, heads=arch.heads, head_dim=arch.head_dim)
    titles = {str(n["id"]): n.get("title", n["type"]) for n in workflow["nodes"]}
    nodes = [{"node": nid, "type": prompt[nid]["class_type"], "title": titles.get(nid, prompt[nid]["class_type"]),
              "seconds": round(sec, 2)} for nid, sec in timings if nid in prompt]
    refine_id = next(nid for nid, n in prompt.items() if n["class_type"] == "FreeSwimLatentUpscaleRefine")
    refine_phases = (entry["outputs"].get(refine_id, {}).get("freeswim_refine") or [None])[0]
    report = {
        "workflow": WORKFLOW.name, "models": str(a.models) if real else "random-weight stand-ins",
        "refine_target_px": [refine["width"], refine["height"]], "frames": frames,
        "token_grid": grid.as_tuple(), "window_tokens": [window.h, window.w],
        "window_fraction_of_full_attention": round(cost["fraction_of_full"], 4),
        "freeswim_runs": runs,       # the pack's run report of each sampling run, from the server
        "node_seconds": nodes, "refine_phases": refine_phases,
        "server_start_s": round(started, 1), "video": str(result),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))

    print(f"[demo] workflow {WORKFLOW.name} ({report['models']})")
    for r in runs:
        node = f"#{r['node_id']} {titles.get(r['node_id'], '')}".strip()
        cache = (f", cache {r['cache_bytes'] / 2**20:.1f} MB on {r['cache_storage']} ({r['cache_precision']})"
                 if r["cache_storage"] else "")
        print(f"[demo] sampling run {node}: grid {'x'.join(map(str, r['grids'][0])) if r['grids'] else '-'}, "
              f"window {'x'.join(map(str, r['window'])) if r['window'] else '-'}, backend {'/'.join(r['backends']) or '-'}, "
              f"{r['windowed_calls']} windowed calls, {r['guide_calls']} guide / {r['reuse_calls']} reuse{cache}")
    print(f"[demo] refine grid {grid.t}x{grid.h}x{grid.w} tokens, window {window.h}x{window.w}: "
          f"{100 * cost['fraction_of_full']:.1f}% of full self-attention work")
    print("[demo] time per node: " + ", ".join(f"#{n['node']} {n['title']} {n['seconds']:.1f}s" for n in nodes))
    if refine_phases:
        print(f"[demo] refine #{refine_id}: upscale ({refine_phases['upscale_path']}) {refine_phases['upscale_s']:.1f}s, "
              f"sampling ({refine_phases['steps_run']} steps) {refine_phases['sampling_s']:.1f}s")
    print(f"[demo] wrote {result.relative_to(REPO) if result.is_relative_to(REPO) else result} and "
          f"out/report.json")
    return 0 if any(r["windowed_calls"] and r["guide_calls"] and r["reuse_calls"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
