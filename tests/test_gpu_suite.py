"""The GPU benchmark suite's smoke mode: every part runs end to end on the CPU at tiny sizes and
writes its JSON lines (the same code a GPU session runs at real sizes)."""
import json
import subprocess
import sys

from harness.inprocess import REPO


def test_gpu_suite_smoke_runs_every_part(tmp_path):
    out = tmp_path / "suite.jsonl"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--out", str(out)],
                   check=True, timeout=600, cwd=REPO, capture_output=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kernels = [r for r in records if r.get("part") == "kernels"]
    assert {r["backend"] for r in kernels} == {"chunked", "dense"}
    assert all(r["ms"] > 0 and r["tflops"] > 0 and r["tokens"] == 720 for r in kernels)
    (memory,) = [r for r in records if r.get("part") == "memory"]
    assert memory["blocks"] == 2 and memory["weights_bytes"] > 0 and memory["seconds"] > 0
    steps = [r for r in records if "mode" in r]
    assert [r["mode"] for r in steps] == ["full", "window"] and all(r["seconds"] > 0 for r in steps)
    assert steps[1]["freeswim"]["windowed_calls"] > 0
    assert all(r["device"].startswith("CPU") for r in records)


def test_suite_report_tables_targets_and_plot(tmp_path):
    """The report turns suite lines into the docs' tables, checks each target against the measured
    values (worked by hand here), and draws one bar per kernel case and backend."""
    from PIL import Image
    lines = [
        {"device": "NVIDIA H100 80GB HBM3", "part": "kernels", "label": "1088x1920x81, 1.3B", "backend": b,
         "heads": 12, "tokens": 171360, "ms": ms, "first_call_ms": 900.0, "tflops": tf, "peak_gb": 2.0,
         "max_err": None} for b, ms, tf in (("flex", 10.0, 300.0), ("reference", 25.0, 120.0))
    ] + [
        {"device": "NVIDIA H100 80GB HBM3", "part": "kernels", "label": "2160x3840x81, 1.3B", "backend": "flex",
         "heads": 12, "tokens": 680400, "ms": 80.0, "tflops": 400.0, "peak_gb": 9.0, "max_err": None},
        {"device": "NVIDIA H100 80GB HBM3", "part": "kernels", "label": "2160x3840x81, 14B", "backend": "dense",
         "error": "OutOfMemoryError: CUDA out of memory"},
        {"device": "NVIDIA H100 80GB HBM3", "mode": "full", "tokens": 171360, "seconds": 10.0},
        {"device": "NVIDIA H100 80GB HBM3", "mode": "cache5", "tokens": 171360, "seconds": 3.5},
    ]
    data = tmp_path / "suite.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    png = tmp_path / "kernels.png"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "report_gpu_suite.py"), str(data),
                           "--png", str(png)], check=True, timeout=120, cwd=REPO, capture_output=True, text=True)
    text = done.stdout
    assert "### NVIDIA H100 80GB HBM3" in text
    assert "| 1088x1920x81, 1.3B | flex | 12 | 171,360 | 10.00 | 900 | 300.0 | 30.3 | 2.00 |  |" in text
    assert "| 2160x3840x81, 14B | dense | | | OutOfMemoryError: CUDA out of memory |" in text
    assert "| cache5 | 171,360 | 3.500 | 0.35x |" in text
    assert "1080p, 12 heads: 2.50x (meets the 2x target)" in text          # 25 / 10
    assert "1080p, 40 heads: not measured" in text
    assert "4K, 12 heads: 400 useful TFLOP/s, 40% of the dense peak (misses the 50% target)" in text
    assert "0.35x (meets the 0.4x target)" in text                           # 3.5 / 10
    img = Image.open(png).convert("RGB")
    colors = {img.getpixel((x, y)) for x in range(0, img.width, 2) for y in range(0, img.height, 2)}
    assert {(40, 120, 200), (200, 40, 40)} <= colors                         # flex and reference bars
