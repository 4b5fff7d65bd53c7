"""The GPU benchmark suite: what a session with a lent H100/H200 measures, in three short commands.

  python benchmarks/gpu_suite.py --part kernels   # window attention kernels at 1080p and 4K
  python benchmarks/gpu_suite.py --part memory    # max_memory_allocated of real model calls vs the trace
  python benchmarks/gpu_suite.py --part step      # one denoising step per mode, 1.3B at 1920x1088x81
  python benchmarks/gpu_suite.py --smoke          # all three on the CPU at tiny sizes (CI runs this)

Each part is one command meant to finish in under 8 minutes on an H100. Every case is
appended to ``--out`` (JSON lines, default ``out/gpu_suite.jsonl``) as soon as it is measured,
so a command cut off keeps what it measured. Compiled kernels are cached inside the
repository (``.cache/inductor``, ``.cache/triton``), so a later command does not compile
again. Inputs are random, made on the device; everything runs in inference mode; each case
has a warm-up call, synchronised timing and its own peak-memory reset.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))
os.environ.setdefault("TRITON_CACHE_DIR", str(ROOT / ".cache" / "triton"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

KERNEL_CASES = {
    # (label, grid, window, heads)
    "gpu": [("1088x1920x81, 1.3B", (21, 68, 120), (31, 53), 12), ("1088x1920x81, 14B", (21, 68, 120), (45, 81), 40),
            ("2160x3840x81, 1.3B", (21, 135, 240), (31, 53), 12), ("2160x3840x81, 14B", (21, 135, 240), (45, 81), 40)],
    "smoke": [("tiny 3x12x20", (3, 12, 20), (7, 11), 2)],
}
KERNEL_BACKENDS = {"gpu": ("flex", "reference", "dense", "chunked"), "smoke": ("chunked", "dense")}
MEMORY_CASES = {
    # (label, dims, blocks, latent [C, T, H, W], native px): one model call, dual path sequential
    "gpu": [("1.3B 1920x1088x81, whole model", dict(dim=1536, ffn=8960), 30, (16, 21, 136, 240), (832, 480)),
            ("1.3B 3840x2160x81, one block", dict(dim=1536, ffn=8960), 1, (16, 21, 270, 480), (832, 480))],
    "smoke": [("tiny, 2 blocks", dict(dim=256, ffn=512), 2, (16, 3, 24, 40), (128, 96))],
}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def emit(out: Path, record: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"device": device_name(), "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              **record}
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def kernels(out: Path, mode: str) -> None:
    """Window attention: flex, the reference-style implementation, dense SDPA and chunked; time,
    useful TFLOP/s, peak memory; flex checked against chunked on 2 heads."""
    from benchmarks.window_attention import bench_case
    dev = device()
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    for label, grid, window, heads in KERNEL_CASES[mode]:
        for backend in KERNEL_BACKENDS[mode]:
            r = bench_case(label, grid, window, heads, backend, dev, dtype, repeat=3)
            emit(out, {"part": "kernels", **r})
        if "flex" in KERNEL_BACKENDS[mode]:
            r = bench_case(label + ", 2-head check", grid, window, 2, "flex", dev, dtype, repeat=1, verify=True)
            emit(out, {"part": "kernels", "check": "flex vs chunked", **r})


def memory(out: Path, mode: str) -> None:
    """One real model call (window + dual path, sequential) of a random-weight Wan in ComfyUI:
    the device's peak beside the trace of the same call (harness/memory_trace.py)."""
    import harness.inprocess as comfy
    if torch.cuda.is_available():
        os.environ.setdefault("FREESWIM_COMFY_CPU", "0")
    comfy.comfy_ready()
    import comfy.model_management as mm
    from comfy.sd import load_diffusion_model_state_dict
    from harness.tiny_wan import tiny_wan_state_dict
    dev = device()
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    for label, dims, blocks, latent, native in MEMORY_CASES[mode]:
        sd = tiny_wan_state_dict(dim=dims["dim"], layers=blocks, ffn_dim=dims["ffn"], device=dev, dtype=dtype)
        model = load_diffusion_model_state_dict(sd)
        del sd
        (m,) = comfy.run_node("FreeSwimWindowAttentionPatch", model=model, native_size="custom",
                              custom_width=native[0], custom_height=native[1], inward=True,
                              attention_scale="reference", backend="auto")
        (m,) = comfy.run_node("FreeSwimDualPathOverride", model=m, passes="cond", override_image_cross=False,
                              start_percent=0.0, end_percent=1.0, execution="sequential")
        mm.load_models_gpu([m])
        dm = m.model.diffusion_model
        to = comfy.sampling_options(m, cond_or_uncond=[0], uuids=["cond"], sigma=0.9, sample_sigmas=[0.9, 0.0])
        x = torch.randn(1, *latent, device=dev, dtype=dtype)
        t = torch.full((1,), 900.0, device=dev)
        ctx = torch.randn(1, 512, 4096, device=dev, dtype=dtype)
        weights = sum(p.numel() * p.element_size() for p in dm.parameters())
        before = 0
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        started = time.perf_counter()
        with torch.inference_mode():
            dm(x, t, ctx, transformer_options=to)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
        traced = None
        if mode == "gpu":        # the same call traced: its activations (weights differ by block count)
            from harness.memory_trace import trace
            traced = trace("1.3b", latent[3] * 8, latent[2] * 8, (latent[1] - 1) * 4 + 1, "dual",
                           execution="sequential").activation_peak_bytes
        emit(out, {"part": "memory", "label": label, "blocks": blocks, "latent": list(latent),
                   "weights_bytes": weights, "max_memory_allocated": peak,
                   "activations_measured": None if peak is None else peak - before,
                   "activations_traced": traced, "seconds": seconds})
        del m, model, dm
        mm.unload_all_models()


def step(out: Path, mode: str) -> None:
    """benchmarks/step.py: one denoising step per mode (full, window, dual, cache 2 and 5)."""
    args = (["--preset", "1.3b"] if mode == "gpu" else ["--preset", "cpu", "--steps", "1", "--modes", "full,window",
                                                         "--latent", "16,3,24,40"])
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step.py"), *args, "--json", str(out)], check=True)


PARTS = {"kernels": kernels, "memory": memory, "step": step}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=sorted(PARTS), action="append")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device, every part")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "gpu_suite.jsonl")
    a = ap.parse_args()
    mode = "smoke" if a.smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke, or on a GPU machine", file=sys.stderr)
        return 2
    for part in (a.part or (sorted(PARTS) if a.smoke else [])) or ["kernels"]:
        PARTS[part](a.out, mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
