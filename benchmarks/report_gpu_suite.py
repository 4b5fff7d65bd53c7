"""The GPU suite's JSON lines as the tables of docs/benchmarks.md, the targets checked, and a PNG.

  python benchmarks/report_gpu_suite.py out/gpu_suite.jsonl --png docs/gpu_kernels.png

Prints Markdown (kernels, model-call memory, denoising step) for the device the lines name,
then each target of the suite with its measured value: flex at least 2x the reference-style
implementation at 1080p; at 4K with 12 heads at least half the dense bf16 peak in useful
FLOPs; a cache-interval-5 step at most 0.4x the full-attention step. The PNG draws kernel
times per case and backend on a log axis (Pillow, already a ComfyUI dependency).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

DENSE_BF16_TFLOPS = 989.0        # H100 / H200 SXM dense bf16 peak
BACKEND_COLORS = {"flex": (40, 120, 200), "reference": (200, 40, 40), "dense": (120, 120, 120),
                  "chunked": (40, 160, 80)}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def kernel_table(records: list[dict]) -> list[str]:
    rows = ["| case | backend | heads | tokens | ms | first call ms | useful TFLOP/s | % of dense peak "
            "| peak GB | max err |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r.get("part") != "kernels":
            continue
        if "error" in r:
            rows.append(f"| {r['label']} | {r['backend']} | | | {r['error']} | | | | | |")
            continue
        rows.append(f"| {r['label']} | {r['backend']} | {r['heads']} | {r['tokens']:,} | {r['ms']:.2f} "
                    f"| {_num(r.get('first_call_ms'), '.0f')} | {r['tflops']:.1f} "
                    f"| {100 * r['tflops'] / DENSE_BF16_TFLOPS:.1f} | {_num(r.get('peak_gb'), '.2f')} "
                    f"| {_num(r.get('max_err'), '.2e')} |")
    return rows


def memory_table(records: list[dict]) -> list[str]:
    rows = ["| call | weights GB | max_memory_allocated GB | activations measured GB | activations traced GB "
            "| s |", "|---|---|---|---|---|---|"]
    for r in records:
        if r.get("part") == "memory":
            gb = {k: None if r.get(k) is None else r[k] / 1e9
                  for k in ("weights_bytes", "max_memory_allocated", "activations_measured", "activations_traced")}
            rows.append(f"| {r['label']} | {_num(gb['weights_bytes'], '.2f')} "
                        f"| {_num(gb['max_memory_allocated'], '.2f')} | {_num(gb['activations_measured'], '.2f')} "
                        f"| {_num(gb['activations_traced'], '.2f')} | {r['seconds']:.2f} |")
    return rows


def step_table(records: list[dict]) -> list[str]:
    steps = [r for r in records if "mode" in r]
    full = next((r["seconds"] for r in steps if r["mode"] == "full"), None)
    rows = ["| mode | tokens | s / step | vs full |", "|---|---|---|---|"]
    for r in steps:
        ratio = f"{r['seconds'] / full:.2f}x" if full else ""
        rows.append(f"| {r['mode']} | {r['tokens']:,} | {r['seconds']:.3f} | {ratio} |")
    return rows


def _kernel(records, label_start: str, heads: int, backend: str):
    return next((r for r in records if r.get("part") == "kernels" and "error" not in r and "check" not in r
                 and r["label"].startswith(label_start) and r["heads"] == heads and r["backend"] == backend), None)


def targets(records: list[dict]) -> list[str]:
    """Each target with its measured value, or why it has none."""
    out = []
    for heads in (12, 40):
        flex, ref = _kernel(records, "1088x1920", heads, "flex"), _kernel(records, "1088x1920", heads, "reference")
        if flex and ref:
            speedup = ref["ms"] / flex["ms"]
            out.append(f"- flex vs reference-style at 1080p, {heads} heads: {speedup:.2f}x "
                       f"({'meets' if speedup >= 2 else 'misses'} the 2x target)")
        else:
            out.append(f"- flex vs reference-style at 1080p, {heads} heads: not measured")
    flex4k = _kernel(records, "2160x3840", 12, "flex")
    if flex4k:
        share = flex4k["tflops"] / DENSE_BF16_TFLOPS
        out.append(f"- flex at 4K, 12 heads: {flex4k['tflops']:.0f} useful TFLOP/s, {100 * share:.0f}% of the dense "
                   f"peak ({'meets' if share >= 0.5 else 'misses'} the 50% target)")
    else:
        out.append("- flex at 4K, 12 heads: not measured")
    steps = {r["mode"]: r["seconds"] for r in records if "mode" in r}
    if "full" in steps and "cache5" in steps:
        ratio = steps["cache5"] / steps["full"]
        out.append(f"- cache interval 5 vs full-attention step: {ratio:.2f}x "
                   f"({'meets' if ratio <= 0.4 else 'misses'} the 0.4x target)")
    else:
        out.append("- cache interval 5 vs full-attention step: not measured")
    return out


def plot(records: list[dict], out: Path, title: str) -> None:
    """Horizontal bars, one group per kernel case, one bar per backend, log-scaled milliseconds."""
    rows = [r for r in records if r.get("part") == "kernels" and "error" not in r and "check" not in r]
    if not rows:
        raise SystemExit("no kernel records to plot")
    cases = list(dict.fromkeys(r["label"] for r in rows))
    bar, gap, left, right, top = 16, 18, 230, 110, 60
    height = top + sum(gap + bar * sum(r["label"] == c for r in rows) for c in cases) + 50
    width = 1000
    lo = math.floor(math.log10(min(r["ms"] for r in rows)))
    hi = math.ceil(math.log10(max(r["ms"] for r in rows)))
    hi = max(hi, lo + 1)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)

    def x_of(ms: float) -> float:
        return left + (math.log10(ms) - lo) / (hi - lo) * (width - left - right)

    for e in range(lo, hi + 1):
        xx = x_of(10 ** e)
        d.line([xx, top - 10, xx, height - 40], fill=(225, 225, 225))
        d.text((xx - 12, height - 34), f"{10 ** e:g} ms", fill="black")
    d.text((12, 16), title, fill="black")
    y = top
    for case in cases:
        d.text((12, y + 2), case, fill="black")
        for r in (r for r in rows if r["label"] == case):
            color = BACKEND_COLORS.get(r["backend"], (0, 0, 0))
            d.rectangle([left, y, x_of(r["ms"]), y + bar - 3], fill=color)
            d.text((x_of(r["ms"]) + 4, y + 1), f"{r['backend']} {r['ms']:.1f}", fill="black")
            y += bar
        y += gap
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="JSON lines written by benchmarks/gpu_suite.py")
    ap.add_argument("--png", type=Path, default=None, help="write the kernel plot here")
    a = ap.parse_args(argv)
    records = load(a.data)
    devices = sorted({r["device"] for r in records if "device" in r})
    print(f"### {', '.join(devices) or 'unknown device'} (torch {records[0].get('torch', '?') if records else '?'})")
    for title, table in (("Window attention kernels", kernel_table), ("One model call's memory", memory_table),
                         ("One denoising step", step_table)):
        rows = table(records)
        if len(rows) > 2:
            print(f"\n#### {title}\n")
            print("\n".join(rows))
    print("\n#### Targets\n")
    print("\n".join(targets(records)))
    if a.png:
        plot(records, a.png, f"window attention kernels, {', '.join(devices)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
