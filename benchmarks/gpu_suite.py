"""The GPU benchmark suite: one command that fits a short lease of an H100/H200.

  bash benchmarks/gpu_run.sh                      # on the GPU machine: the kit, then this suite
  python benchmarks/gpu_suite.py --budget-s 420   # the suite alone, where the host's packages are installed
  python benchmarks/gpu_suite.py --smoke          # every case on the CPU at tiny sizes (CI runs this)
  python benchmarks/gpu_suite.py --list           # the cases, in the order they run, with their estimates

Cases run in order of value (what proves the GPU path works first, then the measurements the
targets need, then the rest), each only if its estimated time (compilation included, on an
H100/H200) fits what is left of ``--budget-s``; a case that does not fit is skipped and said so,
in the output and as a JSON line. Every case is appended to ``--out`` (JSON lines) as soon as it
is measured, so a command cut off keeps what it measured. Inputs are drawn on the device, in
inference mode (as ComfyUI runs the model); each case has a warm-up call, synchronised timing and
its own peak-memory reset. An error in one case (out of memory included) is recorded for that
case and the suite goes on. ``python benchmarks/report_gpu_suite.py`` turns the lines into the
tables of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TRITON_CACHE_DIR", str(ROOT / ".cache" / "triton"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from freeswim_core.families import variant  # noqa: E402
from harness.inductor_cache import cache_for_threads  # noqa: E402

cache_for_threads()        # kernels compiled on the CPU are specialised for the thread count

A13B, A14B = variant("1.3b").arch, variant("14b").arch
# Kernel cases: (label, grid, window, heads), the models' native windows and heads from the registry
# (1.3B: 12 heads, window 31 x 53; 14B: 40 heads, window 45 x 81).
P1080_13B = ("1088x1920x81, 1.3B", (21, 68, 120), A13B.native_window(), A13B.heads)
P1080_14B = ("1088x1920x81, 14B", (21, 68, 120), A14B.native_window(), A14B.heads)
P4K_13B = ("2160x3840x81, 1.3B", (21, 135, 240), A13B.native_window(), A13B.heads)
P4K_14B = ("2160x3840x81, 14B", (21, 135, 240), A14B.native_window(), A14B.heads)
TINY = ("tiny 3x12x20", (3, 12, 20), (7, 11), 2)
# The correctness check's grid: 81 frames at 832x480, the 1.3B native grid (32,760 tokens), with a
# 240p window, small enough for a dense masked reference (a 1 GB mask).
CHECK = ("480p-grid 21x30x52, 240p window", (21, 30, 52), (15, 27), 2)
CHECK_SMOKE = ("tiny 3x12x20", (3, 12, 20), (7, 11), 2)

STEP_PRESET = {"gpu": "1.3b", "smoke": "cpu"}
STEP_SMOKE = dict(steps=1, latent=(16, 3, 24, 40))
MEMORY_CASES = {
    # (label, model of the trace, blocks, latent [C, T, H, W]): one model call of random weights at the
    # model's dimensions and native size
    "gpu": [("1.3B 1920x1088x81, whole model", "1.3b", A13B.blocks, (16, 21, 136, 240)),
            ("1.3B 3840x2160x81, one block", "1.3b", 1, (16, 21, 270, 480)),
            ("14B 3840x2160x81, one block", "14b", 1, (16, 21, 270, 480))],
    "smoke": [("tiny, 2 blocks", "tiny", 2, (16, 3, 24, 40))],
}
TINY_MODEL = dict(dim=256, ffn=512, native=(128, 96))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(dev: torch.device) -> torch.dtype:
    """bf16 on a GPU (as the models run there), float32 on the CPU (the smoke run)."""
    return torch.bfloat16 if dev.type == "cuda" else torch.float32


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def emit(out: Path, record: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"device": device_name(), "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              **record}
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


@dataclass
class Case:
    """One measurement: ``run`` returns its JSON records; ``estimate_s`` is its time on an
    H100/H200, compilation included (the budget's unit)."""

    part: str
    label: str
    estimate_s: float
    run: Callable[[], list[dict]]
    extra: dict = field(default_factory=dict)      # fields a skip or error record carries (backend, ...)
    id: str = ""                                   # short name for --cases

    def __post_init__(self):
        if not self.id:
            heads = self.extra.get("heads")
            self.id = "-".join(p for p in (self.part, _size_name(self.label), self.extra.get("backend"),
                                           heads and f"{heads}h") if p)


def _size_name(label: str) -> str:
    return "1080p" if "1088" in label else "4k" if "2160" in label else "tiny"


# --- kernels -----------------------------------------------------------------------------------

def kernel_case(spec, backend: str, estimate_s: float, repeat: int = 3) -> Case:
    label, grid, window, heads = spec

    def run():
        from benchmarks.window_attention import bench_case
        dev = device()
        dtype = compute_dtype(dev)
        return [{"part": "kernels", **bench_case(label, grid, window, heads, backend, dev, dtype, repeat=repeat)}]
    return Case("kernels", label, estimate_s, run, {"backend": backend, "heads": heads})


def flex_check_case(spec, estimate_s: float) -> Case:
    """flex against the exact chunked backend on 2 heads of a real-size grid (bf16)."""
    label, grid, window, _ = spec

    def run():
        from benchmarks.window_attention import bench_case
        dev = device()
        dtype = compute_dtype(dev)
        r = bench_case(label + ", 2-head check", grid, window, 2, "flex", dev, dtype, repeat=1, verify=True)
        return [{"part": "kernels", "check": "flex vs chunked", **r}]
    return Case("kernels", label + ", 2-head check", estimate_s, run, {"backend": "flex", "heads": 2,
                                                                       "check": "flex vs chunked"},
                id=f"check-flex-{_size_name(label)}")


def backends_check_case(spec, estimate_s: float) -> Case:
    """Every backend, through ``window_attention``, against a dense masked attention in float32 on
    the same bf16 inputs (drawn on the device): the first thing a GPU run proves."""
    label, grid, window, heads = spec

    def run():
        from benchmarks.window_attention import backends_check
        dev = device()
        dtype = compute_dtype(dev)
        return [{"part": "check", **r} for r in backends_check(label, grid, window, heads, dev, dtype)]
    return Case("check", label + ", backends vs dense", estimate_s, run, id="check-backends")


# --- the nodes on the device ------------------------------------------------------------------

_MODELS: dict = {}


def _host():
    import harness.inprocess as comfy
    if torch.cuda.is_available():
        os.environ.setdefault("FREESWIM_COMFY_CPU", "0")
    comfy.comfy_ready()
    return comfy


def storage_check_case(mode: str, estimate_s: float) -> Case:
    """A small random Wan sampled through ComfyUI's KSampler with window attention, the dual path
    and the cross-attention cache, the cache on the device and in pinned host memory (side-stream
    copies, blocks uploaded ahead): the same latent both ways (the streams' ordering at work)."""
    latent = (16, 21, 60, 104) if mode == "gpu" else (16, 3, 24, 40)
    native = (416, 240) if mode == "gpu" else (128, 96)
    label = f"cache storage gpu vs cpu, tiny Wan, latent {'x'.join(map(str, latent))}"

    def run():
        from benchmarks.step import patched
        comfy = _host()
        dev = device()
        model = comfy.load_tiny_wan(dim=256, layers=2, ffn_dim=1024, seed=3, device=dev,
                                    dtype=compute_dtype(dev))
        x = torch.zeros(1, *latent)
        outs, reports = {}, {}
        for storage in ("gpu", "cpu"):
            m = patched(comfy, model, "cache2", native, storage=storage)
            outs[storage] = comfy.ksample(m, x, seed=4, steps=4).float()
            reports[storage] = comfy.last_report()
        diff = (outs["gpu"] - outs["cpu"]).abs().max().item()
        return [{"part": "check", "label": label, "check": "cache storage", "max_err": diff,
                 "stored_on": {k: r.get("cache_storage") for k, r in reports.items()},
                 "prefetch": reports["cpu"].get("cache_prefetch"),
                 "reuse_calls": reports["cpu"].get("reuse_calls"), "backends": reports["cpu"].get("backends")}]
    return Case("check", label, estimate_s, run, id="check-cache-storage")


def step_case(mode: str, suite_mode: str, estimate_s: float, steps: int) -> Case:
    """One denoising step of the 1.3B architecture at 1920x1088x81 (benchmarks/step.py), one mode."""
    preset_name = STEP_PRESET[suite_mode]

    def run():
        from benchmarks import step
        comfy = _host()
        preset = step.PRESETS[preset_name]
        if preset_name not in _MODELS:
            _MODELS.clear()
            _MODELS[preset_name] = step.build(comfy, preset)
        latent = STEP_SMOKE["latent"] if suite_mode == "smoke" else preset["latent"]
        return [step.measure(comfy, _MODELS[preset_name], mode, preset_name, preset, latent, steps)]
    return Case("step", f"{preset_name} {mode}", estimate_s, run, {"mode": mode}, id=f"step-{mode}")


def _model(comfy, dims: dict, blocks: int):
    """A random-weight Wan of these dimensions, kept while the next case asks for the same one (one
    model at a time: the step cases' 1.3B is dropped when a memory case needs another)."""
    key = (dims["dim"], dims["ffn"], blocks)
    if key not in _MODELS:
        import comfy.model_management as mm
        _MODELS.clear()
        mm.unload_all_models()
        dev = device()
        _MODELS[key] = comfy.load_tiny_wan(dim=dims["dim"], layers=blocks, ffn_dim=dims["ffn"], device=dev,
                                           dtype=compute_dtype(dev))
    return _MODELS[key]


def memory_case(spec, mode: str, suite_mode: str, estimate_s: float, backend: str = "flex") -> Case:
    """One real model call (``mode``: window, or dual with sequential execution) of a random-weight
    Wan in ComfyUI, the window through ``backend`` (flex, or natten: NATTEN's fused kernels): the device's
    peak beside the trace of the same call (harness/memory_trace.py), inputs in the dtype ComfyUI chose
    for the model (it may load bf16 weights as fp16)."""
    label, model, blocks, latent = spec
    if model == "tiny":
        dims, native = TINY_MODEL, TINY_MODEL["native"]
    else:
        arch = variant(model).arch
        dims, native = dict(dim=arch.dim, ffn=arch.ffn_dim), arch.native
    label = f"{label}, {mode}" + (", natten" if backend == "natten" else "")

    def run():
        comfy = _host()
        import comfy.model_management as mm
        from benchmarks.step import patched
        dev = device()
        m = patched(comfy, _model(comfy, dims, blocks), mode, native, execution="sequential",
                    backend="auto" if backend == "flex" else backend)
        mm.load_models_gpu([m])
        base = m.model
        dm = base.diffusion_model
        dtype = base.manual_cast_dtype or base.get_dtype()
        to = comfy.sampling_options(m, cond_or_uncond=[0], uuids=["cond"], sigma=0.9, sample_sigmas=[0.9, 0.0])
        weights = sum(p.numel() * p.element_size() for p in dm.parameters())
        with torch.inference_mode():
            x = torch.randn(1, *latent, device=dev, dtype=dtype)
            t = torch.full((1,), 900.0, device=dev)
            ctx = torch.randn(1, 512, 4096, device=dev, dtype=dtype)
        before = 0
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        from harness.allocator_peak import device_events, peak_sites, record_history
        if dev.type == "cuda":          # who holds the bytes at the peak (costs some time: not a timing case)
            record_history(True)
        sites = None
        try:
            started = time.perf_counter()
            with torch.inference_mode():
                dm(x, t, ctx, transformer_options=to)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
            if dev.type == "cuda":
                _, sites = peak_sites(device_events())
        finally:                        # never left recording for the cases that follow
            if dev.type == "cuda":
                record_history(False)
        traced = None
        if suite_mode == "gpu":        # the same call traced: its activations (weights differ by block count)
            from harness.memory_trace import trace
            traced = trace(model, latent[3] * 8, latent[2] * 8, (latent[1] - 1) * 4 + 1, mode,
                           execution="sequential", backend=backend).activation_peak_bytes
        return [{"part": "memory", "label": label, "mode_of_call": mode, "blocks": blocks,
                 "latent": list(latent), "dtype": str(dtype).split(".")[-1], "weights_bytes": weights,
                 "window_backend": backend,
                 "max_memory_allocated": peak, "activations_measured": None if peak is None else peak - before,
                 "activations_traced": traced, "seconds": seconds, "allocator_peak_sites": sites}]
    return Case("memory", label, estimate_s, run,
                id=f"memory-{'' if model in ('1.3b', 'tiny') else model + '-'}{_size_name(label)}-{mode}"
                   + ("-natten" if backend == "natten" else ""))


# --- the plan ----------------------------------------------------------------------------------

def _natten_cases(*cases: Case) -> list[Case]:
    """NATTEN's kernel cases where NATTEN is installed (it is optional)."""
    from freeswim_core.attention.natten_backend import natten_module
    return list(cases) if natten_module() is not None else []


def plan(mode: str) -> list[Case]:
    """The cases in order of value. Estimates (seconds on an H200, compilation included, from the
    suite's own runs, rounded up) are what the budget is spent by; a case whose estimate does not
    fit what is left is skipped."""
    if mode == "smoke":
        return [backends_check_case(CHECK_SMOKE, 1), storage_check_case("smoke", 1),
                kernel_case(TINY, "chunked", 1), kernel_case(TINY, "dense", 1),
                *_natten_cases(kernel_case(TINY, "natten", 1)),
                step_case("full", "smoke", 1, STEP_SMOKE["steps"]),
                step_case("window", "smoke", 1, STEP_SMOKE["steps"]),
                memory_case(MEMORY_CASES["smoke"][0], "dual", "smoke", 1)]
    return [
        # 1. does the GPU path work: every backend against a dense reference; the nodes' cache
        #    in device and pinned host memory (side stream, uploads ahead)
        backends_check_case(CHECK, 15),
        storage_check_case("gpu", 10),
        # 2. the targets: flex vs the reference-style implementation at 1080p; flex at 4K vs peak
        kernel_case(P1080_13B, "flex", 10),
        kernel_case(P1080_13B, "reference", 15),
        kernel_case(P1080_13B, "dense", 5),
        kernel_case(P4K_13B, "flex", 10),
        kernel_case(P4K_13B, "dense", 25, repeat=2),
        # NATTEN's fused kernels where its compiled wheel is installed (else each case says why not)
        *_natten_cases(kernel_case(P1080_13B, "natten", 10), kernel_case(P4K_13B, "natten", 15),
                       kernel_case(P4K_14B, "natten", 25)),
        # 3. one denoising step of 1.3B at 1088p: the cache's saving against full attention
        step_case("window", "gpu", 65, 3),
        step_case("full", "gpu", 110, 2),
        step_case("cache5", "gpu", 115, 5),
        # 4. the memory planner's claims: real calls' peaks against their traces
        memory_case(MEMORY_CASES["gpu"][0], "dual", "gpu", 40),
        memory_case(MEMORY_CASES["gpu"][0], "window", "gpu", 25),
        memory_case(MEMORY_CASES["gpu"][1], "dual", "gpu", 30),
        *_natten_cases(memory_case(MEMORY_CASES["gpu"][1], "dual", "gpu", 30, backend="natten")),
        memory_case(MEMORY_CASES["gpu"][2], "dual", "gpu", 40),
        # 5. the fallback backend at real sizes, 14B's head count, the rest of the step modes
        kernel_case(P1080_13B, "chunked", 5, repeat=2),
        kernel_case(P4K_13B, "chunked", 20, repeat=2),
        flex_check_case(P4K_13B, 20),
        kernel_case(P1080_14B, "flex", 10),
        kernel_case(P4K_14B, "flex", 20),
        kernel_case(P1080_14B, "reference", 20),
        kernel_case(P1080_14B, "dense", 10),
        step_case("dual", "gpu", 95, 2),
        step_case("cache5-cpu", "gpu", 120, 5),
        step_case("cache2", "gpu", 110, 4),
    ]


def run_suite(cases: list[Case], out: Path, budget_s: float) -> dict:
    """Run ``cases`` in order within ``budget_s``; returns what ran, was skipped and failed."""
    started = time.monotonic()
    done, skipped, failed = [], [], []
    for case in cases:
        left = budget_s - (time.monotonic() - started)
        if case.estimate_s > left:
            skipped.append(case.label)
            emit(out, {"part": case.part, "label": case.label, **case.extra, "case": case.id,
                       "skipped": f"budget: about {case.estimate_s:.0f} s needed, {max(0.0, left):.0f} s left"})
            continue
        t0 = time.monotonic()
        try:
            records = case.run()
        except Exception as exc:        # one case's failure (out of memory too) is its result
            failed.append(case.label)
            tb = traceback.format_exc(limit=6)
            print(tb, file=sys.stderr, flush=True)
            records = [{"part": case.part, "label": case.label, **case.extra,
                        "error": f"{type(exc).__name__}: {str(exc)[:300]}"}]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        for r in records:
            emit(out, {**r, "case": case.id, "case_seconds": round(time.monotonic() - t0, 1)})
            if "error" in r and case.label not in failed:
                failed.append(case.label)
        done.append(case.label)
    summary = {"part": "summary", "ran": len(done), "skipped": skipped, "failed": failed,
               "seconds": round(time.monotonic() - started, 1), "budget_s": budget_s}
    emit(out, summary)
    return summary


def preflight() -> list[str]:
    """Import everything the suite will use, before any work: the problems found (empty: go)."""
    problems = []
    try:
        _host()
        import comfy.samplers  # noqa: F401
        import benchmarks.step  # noqa: F401
        import benchmarks.window_attention  # noqa: F401
        import harness.memory_trace  # noqa: F401
        from torch.distributed._tools.mem_tracker import MemTracker  # noqa: F401
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
        if torch.cuda.is_available():
            import triton  # noqa: F401
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device, every case")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="seconds the cases may take together (default 420); cases that do not fit are skipped")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "gpu_suite.jsonl")
    ap.add_argument("--list", action="store_true", help="print the cases and their estimates, run nothing")
    ap.add_argument("--cases", default=None, help="comma-separated case ids to run (see --list), in plan order")
    a = ap.parse_args()
    mode = "smoke" if a.smoke else "gpu"
    cases = plan(mode)
    if a.cases:
        wanted = set(a.cases.split(","))
        unknown = wanted - {c.id for c in cases}
        if unknown:
            print(f"unknown case ids: {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
            return 2
        cases = [c for c in cases if c.id in wanted]
    if a.list:
        for c in cases:
            print(f"{c.estimate_s:5.0f} s  {c.id:28s} {c.label}")
        print(f"{sum(c.estimate_s for c in cases):5.0f} s  in all")
        return 0
    if mode == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke, or on a GPU machine", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    problems = preflight()
    if problems:
        print("preflight failed (nothing was run): " + "; ".join(problems), file=sys.stderr)
        return 3
    print(f"preflight: imports and host ready in {time.monotonic() - t0:.1f} s; {device_name()}, torch "
          f"{torch.__version__}", flush=True)
    summary = run_suite(cases, a.out, a.budget_s)
    print(f"ran {summary['ran']} cases in {summary['seconds']} s; skipped {len(summary['skipped'])}: "
          f"{', '.join(summary['skipped']) or 'none'}; failed: {', '.join(summary['failed']) or 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
