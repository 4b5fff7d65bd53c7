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
