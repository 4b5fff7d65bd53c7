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
from typing import Optional

from PIL import Image, ImageDraw

# Dense bf16 tensor-core peaks (TFLOP/s) by device name; --peak-tflops for any other device.
DENSE_BF16_PEAKS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0))
CHECK_TOLERANCE = 2e-2           # flex vs the exact chunked backend, bf16 inputs, max abs error
BACKEND_COLORS = {"flex": (40, 120, 200), "reference": (200, 40, 40), "dense": (120, 120, 120),
                  "chunked": (40, 160, 80)}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dense_peak(device: str) -> Optional[float]:
    return next((peak for name, peak in DENSE_BF16_PEAKS if name in device), None)


def latest(records: list[dict], key) -> list[dict]:
    """One record per ``key(record)``, the last one written (a part run again replaces its lines),
    in the order the keys first appeared."""
    out: dict = {}
    for r in records:
        out[key(r)] = r
    return list(out.values())


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def measured(records: list[dict]) -> list[dict]:
    """The records of cases that ran (a case skipped for the budget has a line saying so)."""
    return [r for r in records if "skipped" not in r and r.get("part") != "summary"]


def kernel_records(records: list[dict]) -> list[dict]:
    return latest([r for r in measured(records) if r.get("part") == "kernels"],
                  lambda r: (r["label"], r["backend"], r.get("heads"), r.get("check")))


CHECK_REL_TOLERANCE = 1e-2       # bf16 outputs against a float32 reference: ||out - ref|| / ||ref||


def check_records(records: list[dict]) -> list[dict]:
    return latest([r for r in measured(records) if r.get("part") == "check"],
                  lambda r: (r["label"], r.get("backend"), r.get("check")))


def check_table(records: list[dict]) -> list[str]:
    rows = ["| check | backend (used) | max abs err | rel err | ms | first call ms |", "|---|---|---|---|---|---|"]
    for r in check_records(records):
        what = f"{r['label']}: {r.get('check', '')}"
        if "error" in r:
            rows.append(f"| {what} | {r.get('backend', '')} | {r['error']} | | | |")
            continue
        used = f"{r.get('backend', '')} ({r['used']})" if r.get("used") else r.get("backend", "")
        if r.get("stored_on"):
            used = "stored on " + ", ".join(f"{k}: {v}" for k, v in r["stored_on"].items())
            used += f"; uploads ahead: {r.get('prefetch')}"
        rows.append(f"| {what} | {used} | {_num(r.get('max_err'), '.2e')} | {_num(r.get('rel_err'), '.2e')} "
                    f"| {_num(r.get('ms'), '.1f')} | {_num(r.get('first_call_ms'), '.0f')} |")
    return rows


def case_key(r: dict) -> tuple:
    """What a record measures: its case id (the suite writes one), else a step mode or a (part, label,
    backend, heads, check) case."""
    if r.get("case"):
        return ("case", r["case"])
    if "mode" in r:
        return ("step", r["mode"])
    return (r.get("part"), r.get("label"), r.get("backend"), r.get("heads"), r.get("check"))


def skipped_lines(records: list[dict]) -> list[str]:
    """Cases skipped for the time budget and not measured by another run in the same lines."""
    done = {case_key(r) for r in measured(records) if "error" not in r}
    skips = latest([r for r in records if "skipped" in r and r.get("part") != "summary"], case_key)
    return [f"- {r['label']}{' (' + r['backend'] + ')' if r.get('backend') else ''}: {r['skipped']}"
            for r in skips if case_key(r) not in done]


def kernel_table(records: list[dict], peak: Optional[float]) -> list[str]:
    rows = ["| case | backend | heads | tokens | ms | first call ms | useful TFLOP/s | % of dense peak "
            "| peak GB | max err |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in kernel_records(records):
        if "error" in r:
            rows.append(f"| {r['label']} | {r['backend']} | | | {r['error']} | | | | | |")
            continue
        share = _num(None if peak is None else 100 * r["tflops"] / peak, ".1f")
        rows.append(f"| {r['label']} | {r['backend']} | {r['heads']} | {r['tokens']:,} | {r['ms']:.2f} "
                    f"| {_num(r.get('first_call_ms'), '.0f')} | {r['tflops']:.1f} | {share} "
                    f"| {_num(r.get('peak_gb'), '.2f')} | {_num(r.get('max_err'), '.2e')} |")
    return rows


def memory_table(records: list[dict]) -> list[str]:
    rows = ["| call | weights GB | max_memory_allocated GB | activations measured GB | activations traced GB "
            "| measured / traced | s |", "|---|---|---|---|---|---|---|"]
    for r in latest([r for r in measured(records) if r.get("part") == "memory"], lambda r: r["label"]):
        if "error" in r:
            rows.append(f"| {r['label']} | {r['error']} | | | | | |")
            continue
        gb = {k: None if r.get(k) is None else r[k] / 1e9
              for k in ("weights_bytes", "max_memory_allocated", "activations_measured", "activations_traced")}
        rows.append(f"| {r['label']} | {_num(gb['weights_bytes'], '.2f')} "
                    f"| {_num(gb['max_memory_allocated'], '.2f')} | {_num(gb['activations_measured'], '.2f')} "
                    f"| {_num(gb['activations_traced'], '.2f')} | {_ratio(r)} | {r['seconds']:.2f} |")
    return rows


def peak_site_lines(records: list[dict]) -> list[str]:
    """Per memory case with an allocator history: the code holding the bytes at the real peak."""
    out = []
    for r in latest([r for r in measured(records) if r.get("part") == "memory"], lambda r: r["label"]):
        if r.get("allocator_peak_sites"):
            sites = "; ".join(f"{site} {n / 1e9:.2f}" for site, n in r["allocator_peak_sites"])
            out.append(f"- {r['label']} (GB live at the peak, by the innermost frame outside torch): {sites}")
    return out


def _ratio(r: dict) -> str:
    measured, traced = r.get("activations_measured"), r.get("activations_traced")
    return f"{measured / traced:.2f}" if measured and traced else ""


def step_runs(records: list[dict]) -> dict[tuple, dict[str, dict]]:
    """Step records by (preset, tokens), then by mode: each mode compared with its own run's full step."""
    runs: dict[tuple, dict[str, dict]] = {}
    for r in measured(records):
        if "mode" in r and "error" not in r:
            runs.setdefault((r.get("preset"), r["tokens"]), {})[r["mode"]] = r
    return runs


def step_table(records: list[dict]) -> list[str]:
    rows = ["| preset | mode | tokens | s / step | vs full |", "|---|---|---|---|---|"]
    for (preset, tokens), modes in step_runs(records).items():
        full = modes.get("full", {}).get("seconds")
        for mode, r in modes.items():
            ratio = f"{r['seconds'] / full:.2f}x" if full else ""
            rows.append(f"| {preset or ''} | {mode} | {tokens:,} | {r['seconds']:.3f} | {ratio} |")
    return rows


MODEL_OF_HEADS = {12: "1.3B", 40: "14B"}      # the suite's kernel cases (gpu_suite.KERNEL_CASES)


def _kernel(records, size: str, heads: int, backend: str):
    label = f"{size}x81, {MODEL_OF_HEADS[heads]}"
    return next((r for r in kernel_records(records) if "check" not in r and r["label"] == label
                 and r["backend"] == backend), None)


def _missing(name: str, *found) -> str:
    errors = [f"{r['backend']}: {r['error']}" for r in found if r is not None and "error" in r]
    return f"- {name}: " + ("; ".join(errors) if errors else "not measured")


def targets(records: list[dict], peak: Optional[float]) -> list[str]:
    """Each target with its measured value, or the error or absence that leaves it without one."""
    out = []
    for heads in (12, 40):
        name = f"flex vs reference-style at 1080p, {heads} heads"
        flex, ref = _kernel(records, "1088x1920", heads, "flex"), _kernel(records, "1088x1920", heads, "reference")
        if flex and ref and "error" not in flex and "error" not in ref:
            speedup = ref["ms"] / flex["ms"]
            out.append(f"- {name}: {speedup:.2f}x ({'meets' if speedup >= 2 else 'misses'} the 2x target)")
        else:
            out.append(_missing(name, flex, ref))
    name = "flex at 4K, 12 heads"
    flex4k = _kernel(records, "2160x3840", 12, "flex")
    if flex4k and "error" not in flex4k and peak is not None:
        share = flex4k["tflops"] / peak
        out.append(f"- {name}: {flex4k['tflops']:.0f} useful TFLOP/s, {100 * share:.0f}% of the {peak:.0f} TFLOP/s "
                   f"dense peak ({'meets' if share >= 0.5 else 'misses'} the 50% target)")
    elif flex4k and "error" not in flex4k:
        out.append(f"- {name}: {flex4k['tflops']:.0f} useful TFLOP/s (no dense peak known for this device: "
                   f"--peak-tflops)")
    else:
        out.append(_missing(name, flex4k))
    for r in check_records(records):
        if r.get("check") == "vs dense masked":
            if "error" in r:
                out.append(f"- {r['backend']} vs dense masked attention, {r['label']}: {r['error']}")
            else:
                ok = r["rel_err"] <= CHECK_REL_TOLERANCE
                out.append(f"- {r['backend']} vs dense masked attention, {r['label']}: relative error "
                           f"{r['rel_err']:.2e} ({'within' if ok else 'exceeds'} {CHECK_REL_TOLERANCE:g})")
        elif r.get("check") == "cache storage":
            if "error" in r:
                out.append(f"- cache in device vs host memory, {r['label']}: {r['error']}")
            else:
                out.append(f"- cache in device vs host memory, {r['label']}: max difference {r['max_err']:.2e} "
                           f"({'equal' if r['max_err'] == 0 else 'differs'})")
    checks = [r for r in kernel_records(records) if r.get("check")]
    for r in checks:
        if "error" in r:
            out.append(f"- {r['check']}, {r['label']}: {r['error']}")
        else:
            ok = r.get("max_err") is not None and r["max_err"] <= CHECK_TOLERANCE
            out.append(f"- {r['check']}, {r['label']}: max error {_num(r.get('max_err'), '.2e')} "
                       f"({'within' if ok else 'exceeds'} {CHECK_TOLERANCE:g})")
    name = "cache interval 5 vs full-attention step"
    compared = [(key, m) for key, m in step_runs(records).items() if "full" in m and "cache5" in m]
    for (preset, tokens), modes in compared:
        ratio = modes["cache5"]["seconds"] / modes["full"]["seconds"]
        out.append(f"- {name} ({preset or 'preset ?'}, {tokens:,} tokens): {ratio:.2f}x "
                   f"({'meets' if ratio <= 0.4 else 'misses'} the 0.4x target)")
    if not compared:
        out.append(f"- {name}: not measured")
    return out


def plot(records: list[dict], out: Path, title: str) -> None:
    """Horizontal bars, one group per kernel case, one bar per backend, log-scaled milliseconds."""
    rows = [r for r in kernel_records(records) if "error" not in r and "check" not in r]
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
    ap.add_argument("--png", type=Path, default=None, help="write the kernel plot of the (last) GPU device here")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak of the device (default: by name; H100 SXM/H200 989, H100 PCIe 756)")
    a = ap.parse_args(argv)
    records = load(a.data)
    devices = list(dict.fromkeys(r.get("device", "unknown device") for r in records))
    for device in devices:
        mine = [r for r in records if r.get("device", "unknown device") == device]
        peak = a.peak_tflops if a.peak_tflops is not None else dense_peak(device)
        print(f"### {device} (torch {mine[0].get('torch', '?')}; dense bf16 peak "
              f"{'unknown' if peak is None else f'{peak:.0f} TFLOP/s'})")
        for title, rows in (("Checks", check_table(mine)), ("Window attention kernels", kernel_table(mine, peak)),
                            ("One model call's memory", memory_table(mine)), ("One denoising step", step_table(mine))):
            if len(rows) > 2:
                print(f"\n#### {title}\n")
                print("\n".join(rows))
        sites = peak_site_lines(mine)
        if sites:
            print("\n#### Live at the peak of each model call\n")
            print("\n".join(sites))
        print("\n#### Targets\n")
        print("\n".join(targets(mine, peak)))
        skipped = skipped_lines(mine)
        if skipped:
            print("\n#### Skipped (time budget)\n")
            print("\n".join(skipped))
        print()
    if a.png:
        device = next((d for d in reversed(devices) if not d.startswith("CPU")), devices[-1])
        plot([r for r in records if r.get("device", "unknown device") == device], a.png,
             f"window attention kernels, {device}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
