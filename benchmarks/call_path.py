"""Which of this pack's files one ComfyUI sampling call runs through.

A tiny random-weight Wan with window attention, the dual path and the cross-attention
cache is sampled through ComfyUI's own KSampler (3 steps, cfg 5: on the CPU ComfyUI
batches cond and uncond, so one model call per step: guide, reuse, guide) in the newest
built host; a profile hook records every function of this repository that runs. The table
lists the files and how many of their functions ran in the whole sampling run, and in its
model calls after the first (whose one-time work, the model's facts, the window and the
memory plan, the store's opening, is the run's): the measure of how far one call's logic
is spread.

  python benchmarks/call_path.py [--host comfyui-0.33.0]
"""
from __future__ import annotations

import argparse
import sys
import threading
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRODUCT = ("freeswim_core", "nodes", "web")


def product_file(filename: str):
    """The repository-relative path of a product file (the pack as ComfyUI loaded it), else None."""
    for marker in ("comfyui-freeswim/", str(REPO) + "/"):
        if marker in filename:
            rel = filename.split(marker, 1)[1]
            return rel if rel.split("/", 1)[0] in PRODUCT else None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=None, help="host id (default: the newest built)")
    ap.add_argument("--verbose", action="store_true", help="also list the files of each model call")
    a = ap.parse_args()
    import torch

    import harness.inprocess as comfy
    from harness.hosts import discover
    hosts = {h.id: h for h in discover()[0]}
    comfy.comfy_ready(hosts[a.host] if a.host else None)
    model = comfy.load_tiny_wan(seed=3)
    for name, inputs in (("FreeSwimWindowAttentionPatch", dict(native_size="custom", custom_width=128,
                                                               custom_height=96, inward=True,
                                                               attention_scale="reference", backend="chunked")),
                         ("FreeSwimDualPathOverride", dict(passes="cond", override_image_cross=False,
                                                           start_percent=0.0, end_percent=1.0,
                                                           execution="batched")),
                         ("FreeSwimCrossAttnCache", dict(guide_interval=2, storage="auto", precision="model"))):
        (model,) = comfy.run_node(name, model=model, **inputs)
    latent = torch.zeros(1, 16, 3, 24, 40)
    comfy.ksample(model, latent, steps=1)             # warm: imports and first-call work out of the count
    seen: Counter = Counter()
    calls: list[set] = []          # product files per model call (from one DIFFUSION_MODEL wrapper to the next)

    def profile(frame, event, arg):
        if event == "call":
            rel = product_file(frame.f_code.co_filename)
            if rel is not None:
                seen[(rel, frame.f_code.co_name)] += 1
                if frame.f_code.co_name == "diffusion_model_wrapper":
                    calls.append(set())
                if calls:
                    calls[-1].add(rel)

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        comfy.ksample(model, latent, steps=3)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    files = Counter()
    for (rel, _), _n in seen.items():
        files[rel] += 1
    print(f"| file | functions run |\n|---|---|")
    for rel in sorted(files):
        print(f"| {rel} | {files[rel]} |")
    later = set().union(*calls[1:]) if len(calls) > 1 else set()
    if a.verbose:
        for i, c in enumerate(calls):
            print(f"model call {i}: " + ", ".join(sorted(c)))
    print(f"\n{len(files)} product files in one sampling call with window + dual path + cache "
          f"({comfy.loaded.id}); {len(later)} in its model calls after the first "
          f"({', '.join(str(len(c)) for c in calls)} per model call).")


if __name__ == "__main__":
    main()
