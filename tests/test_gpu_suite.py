"""The GPU suite: its one command's dry run on the CPU (every case at tiny sizes, the same code a GPU
machine runs at real sizes), its time budget, its import check, and the report of its lines."""
import importlib.util
import json
import os
import subprocess
import sys
import time

from harness.inprocess import REPO


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gpu_run_smoke_runs_every_case_and_writes_its_lines(tmp_path):
    """``bash benchmarks/gpu_run.sh --smoke``: the GPU machine's command on the CPU. Each case writes
    its lines: every backend within float32 rounding of a dense masked attention; the cache read
    back from the model's device and from host memory gives the same latent; kernels, steps and a
    model call measured; a summary with nothing skipped or failed."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--smoke"], check=True, timeout=600,
                   cwd=REPO, capture_output=True, env=env)
    records = _records(tmp_path / "gpu_suite.jsonl")
    assert (tmp_path / "gpu_run.log").read_text().count('"part": "summary"') == 1
    natten = importlib.util.find_spec("natten") is not None         # `make setup` installs it
    checks = [r for r in records if r.get("check") == "vs dense masked"]
    assert {r["backend"]: r["used"] for r in checks} == {"flex": "flex", "chunked": "chunked", "auto": "chunked",
                                                        **({"natten": "natten"} if natten else {})}
    assert all(r["rel_err"] < 1e-5 and r["tokens"] == 720 for r in checks)
    (storage,) = [r for r in records if r.get("check") == "cache storage"]
    assert storage["max_err"] == 0.0 and storage["reuse_calls"] > 0
    kernels = [r for r in records if r.get("part") == "kernels"]
    assert {r["backend"] for r in kernels} == {"chunked", "dense"} | ({"natten"} if natten else set())
    assert all(r["ms"] > 0 and r["tflops"] > 0 and r["tokens"] == 720 for r in kernels)
    (memory,) = [r for r in records if r.get("part") == "memory"]
    assert memory["blocks"] == 2 and memory["weights_bytes"] > 0 and memory["seconds"] > 0
    steps = [r for r in records if "mode" in r]
    assert [r["mode"] for r in steps] == ["full", "window"] and all(r["seconds"] > 0 for r in steps)
    assert steps[1]["freeswim"]["windowed_calls"] > 0
    (summary,) = [r for r in records if r.get("part") == "summary"]
    assert summary["ran"] == 7 + natten and summary["skipped"] == [] and summary["failed"] == []
    assert all(r["device"].startswith("CPU") for r in records)


def test_cases_run_in_order_within_the_budget_and_a_failure_is_a_result(tmp_path):
    """Cases whose estimate does not fit what is left of the budget (wall time) are skipped, a line
    each, and the later ones that fit still run; a case that raises is recorded with its error and
    the suite goes on. Budget 2 s: "a" takes 1 s, so "b" (1.5 s) does not fit the 1 s left; the
    failing "c" (0.1 s) and "d" (0.3 s) do."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    ran = []

    def case(label, estimate, seconds=0.0, fail=False):
        def run():
            ran.append(label)
            time.sleep(seconds)
            if fail:
                raise RuntimeError("no kernel for this (test)")
            return [{"part": "kernels", "label": label, "backend": "flex", "ms": 1.0}]
        return gpu_suite.Case("kernels", label, estimate, run, {"backend": "flex"})

    out = tmp_path / "suite.jsonl"
    summary = gpu_suite.run_suite([case("a", 0.2, seconds=1.0), case("b", 1.5), case("c", 0.1, fail=True),
                                   case("d", 0.3)], out, 2.0)
    assert ran == ["a", "c", "d"]
    assert summary["skipped"] == ["b"] and summary["failed"] == ["c"] and summary["ran"] == 3
    lines = _records(out)
    assert [(r["label"], "skipped" in r, "error" in r) for r in lines[:-1]] == [
        ("a", False, False), ("b", True, False), ("c", False, True), ("d", False, False)]
    assert lines[-1]["part"] == "summary"
    assert lines[1]["skipped"].startswith("budget: about 2 s needed, 1 s left")
    assert lines[2]["error"] == "RuntimeError: no kernel for this (test)" and lines[2]["backend"] == "flex"


def test_a_missing_import_stops_the_suite_before_any_case(tmp_path):
    """The suite imports the host and everything its cases use first: a host that cannot be
    imported stops it within seconds, with the reason, before any case runs or any line is written."""
    env = {**os.environ, "FREESWIM_COMFYUI": str(tmp_path / "not-comfyui")}
    (tmp_path / "not-comfyui").mkdir()
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--out",
                           str(tmp_path / "suite.jsonl")], timeout=120, cwd=REPO, capture_output=True, text=True,
                          env=env)
    assert done.returncode == 3 and time.monotonic() - t0 < 60
    assert "preflight failed (nothing was run)" in done.stderr and "not a ComfyUI tree" in done.stderr
    assert not (tmp_path / "suite.jsonl").exists()
def test_suite_report_tables_targets_and_plot(tmp_path):
    """The report turns suite lines into the docs' tables, one section per device, the last line of a
    case winning (a part run again); it checks each target against the measured values (worked by
    hand here) or names the error that left it without one, and draws one bar per kernel case."""
    from PIL import Image
    h100, cpu = "NVIDIA H100 80GB HBM3", "CPU (2 cores)"

    def kernel(label, backend, ms, tflops, heads=12, device=h100, **extra):
        return {"device": device, "part": "kernels", "label": label, "backend": backend, "heads": heads,
                "tokens": 171360, "ms": ms, "first_call_ms": 900.0, "tflops": tflops, "peak_gb": 2.0,
                "max_err": None, **extra}

    lines = [
        kernel("1088x1920x81, 1.3B", "flex", 99.0, 30.0),                   # replaced by the re-run below
        kernel("1088x1920x81, 1.3B", "flex", 10.0, 300.0),
        kernel("1088x1920x81, 1.3B", "reference", 25.0, 120.0),
        kernel("1088x1920x81, 14B", "flex", 40.0, 310.0, heads=40),
        {"device": h100, "part": "kernels", "label": "1088x1920x81, 14B", "backend": "reference",
         "error": "OutOfMemoryError: CUDA out of memory"},
        kernel("2160x3840x81, 1.3B", "flex", 80.0, 400.0),
        kernel("2160x3840x81, 1.3B, 2-head check", "flex", 5.0, 300.0, heads=2, check="flex vs chunked",
               max_err=0.5),
        kernel("tiny 3x12x20", "chunked", 15.0, 0.01, heads=2, device=cpu),
        {"device": cpu, "preset": "cpu", "mode": "full", "tokens": 720, "seconds": 100.0},
        {"device": h100, "preset": "1.3b", "mode": "full", "tokens": 171360, "seconds": 10.0},
        {"device": h100, "preset": "1.3b", "mode": "cache5", "tokens": 171360, "seconds": 3.5},
        {"device": h100, "part": "check", "label": "grid A", "backend": "flex", "check": "vs dense masked",
         "used": "flex", "max_err": 1e-3, "rel_err": 2e-3, "ms": 3.0, "first_call_ms": 7000.0},
        {"device": h100, "part": "check", "label": "grid A", "backend": "chunked", "check": "vs dense masked",
         "used": "chunked", "max_err": 0.1, "rel_err": 0.05, "ms": 11.0, "first_call_ms": 80.0},
        {"device": h100, "part": "memory", "label": "call X", "blocks": 30, "weights_bytes": 2e9,
         "max_memory_allocated": 8e9, "activations_measured": 6e9, "activations_traced": 5e9, "seconds": 1.0,
         "allocator_peak_sites": [["ldm/wan/model.py:90 forward", 4e9], ["other", 2e9]]},
        # skipped in one run: listed unless a line of another run measured the same case
        {"device": h100, "part": "kernels", "label": "1088x1920x81, 1.3B", "backend": "flex", "heads": 12,
         "skipped": "budget: about 10 s needed, 3 s left"},
        {"device": h100, "part": "kernels", "label": "2160x3840x81, 14B", "backend": "flex", "heads": 40,
         "skipped": "budget: about 20 s needed, 3 s left"},
        {"device": h100, "part": "step", "label": "1.3b cache2", "mode": "cache2", "skipped": "budget: x"},
        {"device": h100, "part": "summary", "ran": 9, "skipped": ["x"], "failed": [], "seconds": 1.0},
    ]
    data = tmp_path / "suite.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    png = tmp_path / "kernels.png"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "report_gpu_suite.py"), str(data),
                           "--png", str(png)], check=True, timeout=120, cwd=REPO, capture_output=True, text=True)
    gpu, cpu_part = done.stdout.split("### CPU (2 cores)")
    assert "### NVIDIA H100 80GB HBM3" in gpu and "dense bf16 peak 989 TFLOP/s" in gpu
    assert "| 1088x1920x81, 1.3B | flex | 12 | 171,360 | 10.00 | 900 | 300.0 | 30.3 | 2.00 |  |" in gpu
    assert "99.00" not in gpu and "tiny 3x12x20" not in gpu
    assert "| 1088x1920x81, 14B | reference | | | OutOfMemoryError: CUDA out of memory |" in gpu
    assert "| 1.3b | cache5 | 171,360 | 3.500 | 0.35x |" in gpu                 # 3.5 / 10, not / 100
    assert "1080p, 12 heads: 2.50x (meets the 2x target)" in gpu               # 25 / 10
    assert "1080p, 40 heads: reference: OutOfMemoryError: CUDA out of memory" in gpu
    assert "4K, 12 heads: 400 useful TFLOP/s, 40% of the 989 TFLOP/s dense peak (misses the 50% target)" in gpu
    assert "flex vs chunked, 2160x3840x81, 1.3B, 2-head check: max error 5.00e-01 (exceeds 0.02)" in gpu
    assert "(1.3b, 171,360 tokens): 0.35x (meets the 0.4x target)" in gpu
    assert "| grid A: vs dense masked | flex (flex) | 1.00e-03 | 2.00e-03 | 3.0 | 7000 |" in gpu
    assert "- flex vs dense masked attention, grid A: relative error 2.00e-03 (within 0.01)" in gpu
    assert "- chunked vs dense masked attention, grid A: relative error 5.00e-02 (exceeds 0.01)" in gpu
    assert "| call X | 2.00 | 8.00 | 6.00 | 5.00 | 1.20 | 1.00 |" in gpu                  # 6 / 5
    assert "- call X (GB live at the peak, by the innermost frame outside torch): ldm/wan/model.py:90 forward " \
           "4.00; other 2.00" in gpu
    skipped = gpu.split("#### Skipped (time budget)")[1].strip().splitlines()
    assert skipped == ["- 2160x3840x81, 14B (flex): budget: about 20 s needed, 3 s left",
                       "- 1.3b cache2: budget: x"]
    assert "dense bf16 peak unknown" in cpu_part and "| tiny 3x12x20 | chunked |" in cpu_part
    assert "cache interval 5 vs full-attention step: not measured" in cpu_part
    img = Image.open(png).convert("RGB")
    colors = {img.getpixel((x, y)) for x in range(0, img.width, 2) for y in range(0, img.height, 2)}
    assert {(40, 120, 200), (200, 40, 40)} <= colors                         # flex and reference bars
    assert (40, 160, 80) not in colors                                       # the CPU's chunked bar: not this plot
