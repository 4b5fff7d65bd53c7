"""Plot traced peak memory against resolution per mode, with the 24/48/80 GB lines.

  python benchmarks/memory.py --table --host 0.33.0 --table-json docs/memory_table.jsonl
  python benchmarks/plot_memory.py docs/memory_table.jsonl --host comfyui-0.33.0 --out docs/memory_peaks.png

Drawn with Pillow (already installed with ComfyUI): one panel per model, one line per
mode, x = the video size (equally spaced), y = GB (10^9 bytes), weights included.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

MODES = [("plain", "sequential", "no FreeSwim", (120, 120, 120)),
         ("window", "sequential", "window", (31, 119, 180)),
         ("dual", "batched", "dual batched", (214, 39, 40)),
         ("dual", "sequential", "dual sequential (= cache)", (44, 160, 44))]
BUDGETS = [(24, "24 GB"), (48, "48 GB"), (80, "80 GB")]
W, H = 640, 460
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 50, 60


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:          # Pillow < 10.1
        return ImageFont.load_default()


def panel(rows: list[dict], title: str) -> Image.Image:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    small, big = _font(13), _font(16)
    sizes = sorted({(r["width"], r["height"]) for r in rows}, key=lambda s: s[0] * s[1])
    ymax = max(100.0, max(r["peak_bytes_traced"] for r in rows) / 1e9 * 1.05)
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP

    def px(i):
        return x0 + (x1 - x0) * (i + 0.5) / len(sizes)

    def py(gb):
        return y0 - (y0 - y1) * gb / ymax

    d.text((LEFT, 12), title, fill="black", font=big)
    d.line([(x0, y0), (x1, y0)], fill="black")
    d.line([(x0, y0), (x0, y1)], fill="black")
    for gb in range(0, int(ymax) + 1, 20):
        d.line([(x0 - 4, py(gb)), (x0, py(gb))], fill="black")
        d.text((x0 - 8, py(gb)), f"{gb}", fill="black", font=small, anchor="rm")
    d.text((14, (y0 + y1) / 2), "GB", fill="black", font=small, anchor="lm")
    for i, (w, h) in enumerate(sizes):
        d.text((px(i), y0 + 8), f"{w}x{h}", fill="black", font=small, anchor="mt")
    for gb, label in BUDGETS:
        y = py(gb)
        for xs in range(x0, x1, 12):
            d.line([(xs, y), (min(xs + 6, x1), y)], fill=(150, 150, 150))
        d.text((x1 - 2, y - 2), label, fill=(110, 110, 110), font=small, anchor="rb")
    for k, (mode, execution, label, colour) in enumerate(MODES):
        pts = []
        for i, s in enumerate(sizes):
            match = [r for r in rows if (r["width"], r["height"]) == s and r["mode"] == mode
                     and r["execution"] == execution]
            if match:
                pts.append((px(i), py(match[0]["peak_bytes_traced"] / 1e9)))
        if len(pts) > 1:
            d.line(pts, fill=colour, width=3)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = TOP + 8 + 18 * k
        d.line([(x0 + 12, ly), (x0 + 36, ly)], fill=colour, width=3)
        d.text((x0 + 42, ly), label, fill="black", font=small, anchor="lm")
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", type=Path, help="JSON lines from benchmarks/memory.py --table --table-json")
    ap.add_argument("--host", required=True, help="host id to plot, e.g. comfyui-0.33.0")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rows = [r for r in (json.loads(line) for line in a.table.read_text().splitlines() if line.strip())
            if r["host"] == a.host]
    models = []
    for r in rows:
        if (r["model"], r["weight_dtype"]) not in models:
            models.append((r["model"], r["weight_dtype"]))
    panels = [panel([r for r in rows if (r["model"], r["weight_dtype"]) == m],
                    f"Wan {m[0].upper()} ({m[1]} weights), one model call, 81 frames, {a.host}") for m in models]
    out = Image.new("RGB", (W * len(panels), H), "white")
    for i, p in enumerate(panels):
        out.paste(p, (i * W, 0))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    out.save(a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
