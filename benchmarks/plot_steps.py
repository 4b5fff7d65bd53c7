"""Plot seconds per denoising step against resolution, one line per mode, as a PNG.

Input: JSON lines as written by ``benchmarks/step.py --json`` (measured), or
``--model ARCH`` for the speed-of-light curves of ``benchmarks/speed_of_light.py``.
Drawn with Pillow (already a ComfyUI dependency), log-log axes.

  python benchmarks/step.py --json docs/step_cpu.jsonl --latent 16,5,48,80
  python benchmarks/plot_steps.py docs/step_cpu.jsonl --out docs/step_cpu.png --title "..."
  python benchmarks/plot_steps.py --model 1.3b --out docs/step_speed_of_light_1.3b.png
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

COLORS = {"full": (200, 40, 40), "window": (40, 120, 200), "dual": (230, 150, 20),
          "cache2": (40, 160, 80), "cache5": (120, 60, 170)}
W, H, M = 900, 560, 80


def load(path: Path) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            series.setdefault(r["mode"], []).append((float(r["tokens"]), float(r["seconds"])))
    return {k: sorted(v) for k, v in series.items()}


def model_series(arch: str, peak: float) -> dict[str, list[tuple[float, float]]]:
    from speed_of_light import MODES, SIZES, step_flops
    from freeswim_core import TokenGrid
    out = {}
    for mode in MODES:
        out[mode] = [(TokenGrid(*g).tokens, step_flops(arch, TokenGrid(*g), mode) / (peak * 1e12))
                     for g in SIZES.values()]
    return out


def plot(series: dict[str, list[tuple[float, float]]], title: str, out: Path) -> None:
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    lx0, lx1 = math.log10(min(xs)) - 0.05, math.log10(max(xs)) + 0.05
    ly0, ly1 = math.log10(min(ys)) - 0.1, math.log10(max(ys)) + 0.1
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)

    def px(x, y):
        return (M + (math.log10(x) - lx0) / (lx1 - lx0) * (W - 2 * M),
                H - M - (math.log10(y) - ly0) / (ly1 - ly0) * (H - 2 * M))

    d.rectangle([M, M, W - M, H - M], outline="black")
    for e in range(math.floor(ly0), math.ceil(ly1) + 1):
        for m in (1, 2, 5):
            y = m * 10 ** e
            if ly0 <= math.log10(y) <= ly1:
                _, yy = px(10 ** lx0, y)
                d.line([M, yy, W - M, yy], fill=(225, 225, 225))
                d.text((8, yy - 6), f"{y:g} s", fill="black")
    for x in sorted(set(xs)):
        xx, _ = px(x, 10 ** ly0)
        d.line([xx, M, xx, H - M], fill=(235, 235, 235))
        d.text((xx - 20, H - M + 8), f"{x / 1000:.0f}k", fill="black")
    d.text((W // 2 - 60, H - M + 30), "video tokens per pass", fill="black")
    d.text((M, 20), title, fill="black")
    for i, (mode, pts) in enumerate(series.items()):
        color = COLORS.get(mode, (0, 0, 0))
        coords = [px(x, y) for x, y in pts]
        if len(coords) > 1:
            d.line(coords, fill=color, width=3)
        for cx, cy in coords:
            d.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=color)
        d.line([W - M + 10, M + 20 * i + 8, W - M + 30, M + 20 * i + 8], fill=color, width=3)
        d.text((W - M + 34, M + 20 * i + 2), mode, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, nargs="?")
    ap.add_argument("--model", choices=["1.3b", "14b"], type=str.lower)
    ap.add_argument("--peak", type=float, default=989.0)
    ap.add_argument("--title", default=None)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if a.model:
        series = model_series(a.model, a.peak)
        title = a.title or f"Wan {a.model.upper()}: speed of light per step (cond+uncond) at {a.peak:.0f} TFLOP/s"
    elif a.data:
        series = load(a.data)
        title = a.title or f"seconds per step, measured ({a.data.name})"
    else:
        ap.error("give a JSON-lines file or --model")
    plot(series, title, a.out)


if __name__ == "__main__":
    main()
