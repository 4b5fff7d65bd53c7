"""Peak GPU memory of one model call at real sizes (Wan, LTX-Video), traced on a CPU (nothing is allocated).

  python benchmarks/memory.py --model 14b --width 3840 --height 2160 --mode dual --weight-dtype fp8
  python benchmarks/memory.py --model 1.3b --width 1920 --height 1088 --mode cache --json
  python benchmarks/memory.py --model ltxv-13b --width 3840 --height 2176 --frames 97 --mode dual
  python benchmarks/memory.py --table --host 0.3.75   # the table in docs/benchmarks.md, one host a run
  python benchmarks/memory.py --table --family ltxv --host 0.3.75   # its LTX-Video rows only
  python benchmarks/memory.py --ulysses --model 14b --width 3840 --height 2176   # per rank, N = 1, 2, 4, 8
  python benchmarks/memory.py --backends --host 0.33.0   # 4K: the flex window beside NATTEN's (needs NATTEN)

The trace runs ComfyUI's real model (WanModel, LTXVModel) under FakeTensorMode on a fake CUDA device
with the FreeSwim nodes applied (harness/memory_trace.py says what is counted and
how). The peak is the whole model's weights plus the traced activations of one
conditional call: with the dual path, that call carries the window row and its
full-attention twin.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.hosts import discover, newest  # noqa: E402
from freeswim_core.families import shorts, variant  # noqa: E402
from harness.memory_trace import GB, MODES, trace  # noqa: E402
from freeswim_core.memory import HostTraits, plan_memory  # noqa: E402

TABLE_SIZES = [(832, 480), (1280, 720), (1920, 1088), (2560, 1440), (3840, 2160)]
# LTX-Video's sizes are multiples of 32 pixels (its VAE): 4K is 3840x2176
LTXV_SIZES = [(1920, 1088), (2560, 1440), (3840, 2176)]
TABLE_CASES = [("1.3b", "bf16"), ("14b", "fp8"), ("5b", "bf16"), ("ltxv-2b", "bf16"), ("ltxv-13b", "fp8")]
FRAMES = {"wan": 81, "ltxv": 97}      # a family's default clip (LTX-Video: 8k + 1 frames, its nodes' 97)


def table_sizes(model: str) -> list[tuple[int, int]]:
    return LTXV_SIZES if variant(model).family == "ltxv" else TABLE_SIZES


def default_frames(model: str) -> int:
    return FRAMES[variant(model).family]


def host_by_version(version: str | None):
    if version is None:
        return newest()
    hosts, skipped = discover()
    for h in hosts:
        if h.version == version:
            return h
    raise SystemExit(f"no built host {version}: " + "; ".join(skipped))


def traced_and_planned(model, width, height, frames, mode, execution, weight_dtype, budget=None, backend="flex"):
    """The trace of one call and the planner's answer for the same call on the same host."""
    r = trace(model, width, height, frames, mode, execution=execution, weight_dtype=weight_dtype, backend=backend)
    p = plan_memory(model, width, height, frames, mode=mode, execution=execution, weight_dtype=weight_dtype,
                    host=HostTraits(**r.host_traits), vram_bytes=budget, window_backend=backend)
    return r, p


def one(a) -> int:
    budget = int(a.vram_gb * GB) if a.vram_gb else None
    a.frames = a.frames or default_frames(a.model)
    r, p = traced_and_planned(a.model, a.width, a.height, a.frames, a.mode, a.execution, a.weight_dtype, budget,
                              a.backend)
    out = {"model": a.model, "width": a.width, "height": a.height, "frames": a.frames, "mode": a.mode,
           "execution": r.execution, "weight_dtype": a.weight_dtype, "tokens": r.tokens, "rows": r.rows,
           "peak_bytes_traced": r.peak_bytes, "peak_bytes_planned": p.peak_bytes, "budget_bytes": budget,
           "fits": p.fits, "needed_bytes_planned": p.needed_bytes,
           "phases": {"weights": r.weights_bytes, "activations": r.activation_peak_bytes, **r.phases},
           "phases_planned": p.phases, "host_traits": r.host_traits}
    if a.json:
        print(json.dumps(out))
        return 0
    print(f"{variant(a.model).label} {a.width}x{a.height}x{a.frames} ({r.tokens:,} tokens), mode {a.mode}, "
          f"{r.rows} row(s) per call, weights {a.weight_dtype}")
    print(f"  traced peak {r.peak_bytes / GB:.2f} GB = weights {r.weights_bytes / GB:.2f} + activations "
          f"{r.activation_peak_bytes / GB:.2f}; planned {p.peak_bytes / GB:.2f} GB "
          f"({p.peak_bytes / r.peak_bytes - 1:+.1%}, peak phase {p.peak_phase})")
    for kind, b in r.phases.items():
        print(f"  at the peak of {kind}: traced {b / GB:.2f} GB, planned {p.phases[kind] / GB:.2f} GB")
    if budget:
        print(f"  budget {a.vram_gb:g} GB with {p.needed_bytes / p.peak_bytes - 1:.0%} allocator headroom: "
              f"{'fits' if p.fits else 'does not fit'} (needs {p.needed_bytes / GB:.2f} GB)")
    return 0


TABLE_MODES = [("plain", "sequential"), ("window", "sequential"), ("dual", "batched"), ("dual", "sequential"),
               ("cache", "sequential")]


def table(host, json_path=None, family=None) -> int:
    """Traced (planned) peaks over sizes and modes on ``host`` (one host per process: --host picks
    another), of every case or ``family``'s; with ``json_path``, every row is also appended there as JSON."""
    heads = [m if m in ("plain", "window") else f"{m} {e}" for m, e in TABLE_MODES]
    print("| host | model (weights) | size | " + " | ".join(heads) + " |")
    print("|---|---|---|" + "---|" * len(TABLE_MODES))
    sink = open(json_path, "a") if json_path else None
    for model, wdt in TABLE_CASES:
        if family is not None and variant(model).family != family:
            continue
        frames = default_frames(model)
        for w, hgt in table_sizes(model):
            cells = []
            for mode, execution in TABLE_MODES:
                r, p = traced_and_planned(model, w, hgt, frames, mode, execution, wdt)
                cells.append(f"{r.peak_bytes / GB:.1f} ({p.peak_bytes / GB:.1f})")
                if sink:
                    sink.write(json.dumps({"host": host.id, "model": model, "weight_dtype": wdt, "width": w,
                                           "height": hgt, "frames": frames, "mode": mode, "execution": execution,
                                           "peak_bytes_traced": r.peak_bytes,
                                           "peak_bytes_planned": p.peak_bytes}) + "\n")
            print(f"| {host.id} | {model} ({wdt}) | {w}x{hgt}x{frames} | " + " | ".join(cells) + " |", flush=True)
    if sink:
        sink.close()
    return 0


BACKEND_MODES = [("window", "sequential"), ("dual", "sequential"), ("dual", "batched")]


def backends_table(host) -> int:
    """At each case's 4K size: the traced (planned) peak with the flex window and with NATTEN's fused kernels
    (NATTEN's own forward, its kernel stood in), and NATTEN traced in one call over every head (what
    the natten backend's head groups avoid)."""
    import harness.inprocess as inprocess
    natten = inprocess.pack_module("freeswim_core.attention.natten_backend")
    heads = [f"{m} {e}: flex | natten | natten, one call" for m, e in BACKEND_MODES]
    print("| host | model (weights) | size | " + " | ".join(heads) + " |")
    print("|---|---|---|" + "---|---|---|" * len(BACKEND_MODES))
    for model, wdt in TABLE_CASES:
        w, hgt = table_sizes(model)[-1]
        frames = default_frames(model)
        cells = []
        for mode, execution in BACKEND_MODES:
            for backend in ("flex", "natten"):
                r, p = traced_and_planned(model, w, hgt, frames, mode, execution, wdt, backend=backend)
                cells.append(f"{r.peak_bytes / GB:.1f} ({p.peak_bytes / GB:.1f})")
            budget, natten.COPY_BUDGET = natten.COPY_BUDGET, 1 << 62
            try:
                r = trace(model, w, hgt, frames, mode, execution=execution, weight_dtype=wdt, backend="natten")
            finally:
                natten.COPY_BUDGET = budget
            cells.append(f"{r.peak_bytes / GB:.1f}")
        print(f"| {host.id} | {model} ({wdt}) | {w}x{hgt}x{frames} | " + " | ".join(cells) + " |", flush=True)
    return 0


VAE_SIZES = [(1920, 1088), (2560, 1440), (3840, 2160)]


def vae_table(host) -> int:
    """The Wan 2.1 VAE's decode and encode of 81 frames: the whole frame traced (planned), and the
    spatial tiles the plan picks for 24/48/80 GB GPUs (every frame at once)."""
    from comfy.ldm.wan.vae import Decoder3d
    from freeswim_core.memory.vae import plan_vae, vae_call_bytes
    from harness.vae_trace import trace_vae
    streamed = hasattr(Decoder3d, "run_up")
    print("| host | VAE call | size | whole frame: traced (planned) GB | 12 GB: tile, tiles, GB | 24 GB | "
          "48 GB | 80 GB |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("decode", "encode"):
        for w, h in VAE_SIZES:
            r = trace_vae(kind, w, h, 81)
            planned = vae_call_bytes(kind, w, h, 81, streamed)
            cells = []
            for card in (12, 24, 48, 80):
                p = plan_vae(kind, w, h, 81, card * 10**9, streamed)
                cells.append("whole frame" if p.tile is None else
                             f"{p.tile[0]}x{p.tile[1]}, {p.tiles}, {p.peak_bytes / GB:.1f}")
            print(f"| {host.id} | {kind} | {w}x{h}x81 | {r.peak_bytes / GB:.1f} ({planned / GB:.1f}) | "
                  + " | ".join(cells) + " |", flush=True)
    return 0


CARDS = (12, 24, 48, 80)


def fits_table(json_path, host_id) -> int:
    """Per model and size, the smallest of 12/24/48/80 GB GPUs each mode fits (traced peak + 10%
    allocator headroom), from the rows ``--table --table-json`` wrote for ``host_id``."""
    from freeswim_core.memory import HEADROOM
    rows = [json.loads(line) for line in open(json_path) if line.strip()]
    rows = [r for r in rows if r["host"] == host_id]
    cols = [("window", "sequential", "window only"), ("dual", "sequential", "full method, sequential"),
            ("dual", "batched", "full method, batched")]
    print("| model (weights) | size | " + " | ".join(c[2] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    keys = []
    for r in rows:
        if (r["model"], r["weight_dtype"], r["width"], r["height"], r["frames"]) not in keys:
            keys.append((r["model"], r["weight_dtype"], r["width"], r["height"], r["frames"]))
    for model, wdt, w, h, frames in keys:
        cells = []
        for mode, execution, _ in cols:
            (r,) = [x for x in rows if (x["model"], x["weight_dtype"], x["width"], x["height"], x["mode"],
                                        x["execution"]) == (model, wdt, w, h, mode, execution)]
            need = r["peak_bytes_traced"] * HEADROOM / GB
            card = next((c for c in CARDS if need <= c), None)
            cells.append(f"{card} GB ({need:.1f})" if card else f"over 80 ({need:.1f})")
        print(f"| {model} ({wdt}) | {w}x{h}x{frames} | " + " | ".join(cells) + " |")
    return 0


def ulysses_table(model: str, width: int, height: int, frames: int, degrees=(1, 2, 4, 8)) -> int:
    """One rank's peak in the diffusers adapter under Ulysses: the planner (freeswim_core.memory.ulysses)
    beside a trace of diffusers' real model on a fake process group (harness/ulysses_memory.py)."""
    from freeswim_core.memory.ulysses import plan_rank
    from harness.ulysses_memory import trace_rank
    arch = variant(model).arch
    print(f"{arch.label}, {width}x{height}x{frames}, bf16 weights ({arch.weights_bytes('bf16') / GB:.1f} GB on "
          f"every rank); one conditional call, one rank of N (GB)")
    print("| mode | N | tokens per rank | planned peak | traced peak | planned - traced | fits |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("window", "dual"):
        for n in degrees:
            if arch.heads % n:
                continue
            p = plan_rank(arch, width, height, frames, degree=n, mode=mode)
            r = trace_rank(model, width, height, frames, mode=mode, degree=n)
            fits = next((f"{c} GB" for c in CARDS if p.peak_bytes * 1.1 <= c * GB), "over 80 GB")
            print(f"| {mode} | {n} | {p.rank_tokens} | {p.peak_bytes / GB:.1f} | {r.peak_bytes / GB:.1f} | "
                  f"{(p.peak_bytes - r.peak_bytes) / 1e6:+.0f} MB | {fits} |", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=shorts(), default="1.3b")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1088)
    ap.add_argument("--frames", type=int, default=None, help="default: the family's clip (Wan 81, LTX-Video 97)")
    ap.add_argument("--mode", choices=MODES, default="dual")
    ap.add_argument("--execution", choices=("batched", "sequential"), default="sequential")
    ap.add_argument("--weight-dtype", choices=("bf16", "fp16", "fp8"), default="bf16")
    ap.add_argument("--vram-gb", type=float, default=None)
    ap.add_argument("--host", default=None, help="ComfyUI version to trace (default: the newest built)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--table", action="store_true", help="peaks over sizes and modes (GB) on the host")
    ap.add_argument("--table-json", default=None, help="with --table: also append each row to this JSON-lines file")
    ap.add_argument("--family", choices=("wan", "ltxv"), default=None, help="with --table: only this family's rows")
    ap.add_argument("--vae", action="store_true", help="the VAE's decode and encode table on the host")
    ap.add_argument("--backends", action="store_true",
                    help="at 4K: the flex window's peaks beside NATTEN's, traced (planned), on the host")
    ap.add_argument("--backend", choices=("flex", "natten"), default="flex",
                    help="the window kernel of a one-call trace (natten: NATTEN's fused kernels; needs NATTEN)")
    ap.add_argument("--ulysses", action="store_true",
                    help="the diffusers adapter's peak per rank under Ulysses (N = 1, 2, 4, 8): planned and traced")
    ap.add_argument("--fits", default=None, metavar="TABLE_JSON",
                    help="print which GPU size each mode fits, from a --table-json file (with --host)")
    a = ap.parse_args()
    if a.ulysses:
        return ulysses_table(a.model, a.width, a.height, a.frames or default_frames(a.model))
    if a.fits:
        return fits_table(a.fits, f"comfyui-{a.host}" if a.host else newest().id)
    import harness.inprocess as inprocess
    host = inprocess.comfy_ready(host_by_version(a.host))
    if a.vae:
        return vae_table(host)
    if a.backends:
        return backends_table(host)
    return table(host, a.table_json, a.family) if a.table else one(a)


if __name__ == "__main__":
    sys.exit(main())
