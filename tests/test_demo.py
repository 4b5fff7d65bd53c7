"""`make demo` as a new user meets it: a missing model file is named, and the report is usable."""
import json
import subprocess
import sys

import pytest

from harness.inprocess import REPO

WORKFLOW = "workflows/wan2.1_t2v_1.3B_freeswim_1088p.json"


def demo(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "scripts.demo", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_missing_model_folder_is_named_with_what_it_must_hold(tmp_path):
    r = demo("--models", tmp_path / "no_such_folder", "--out", tmp_path / "out")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    assert f"the models folder {tmp_path / 'no_such_folder'} does not exist" in r.stderr
    assert "wan2.1_t2v_1.3B_fp16.safetensors" in r.stderr and WORKFLOW in r.stderr


def test_missing_model_files_are_named_with_where_they_belong(tmp_path):
    models = tmp_path / "models"
    (models / "vae").mkdir(parents=True)
    (models / "vae" / "wan_2.1_vae.safetensors").write_bytes(b"present")
    r = demo("--models", models, "--out", tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert f"{WORKFLOW} needs 2 file(s)" in r.stderr
    assert f"wan2.1_t2v_1.3B_fp16.safetensors (node" in r.stderr
    assert str(models / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors") in r.stderr
    assert str(models / "text_encoders" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors") in r.stderr
    assert "wan_2.1_vae" not in r.stderr


def test_report_lists_nodes_by_id_and_the_refine_phases(comfy_host, tmp_path):
    r = demo("--quick", "--comfyui", comfy_host.path, "--out", tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    nodes = report["node_seconds"]
    ids = [n["node"] for n in nodes]
    assert len(ids) == len(set(ids)), "each node once, by id"
    workflow = json.loads((REPO / WORKFLOW).read_text())
    types = {str(n["id"]): n["type"] for n in workflow["nodes"]}
    # every node keeps its workflow id and type (the text encoder runs as the stand-in node)
    assert all(types[n["node"]] == n["type"] or types[n["node"]] == "CLIPTextEncode" for n in nodes)
    assert sum(n["type"] == "KSampler" for n in nodes) == 1            # the native pass
    phases = report["refine_phases"]
    assert phases["upscale_path"] == "pixel" and phases["upscale_s"] > 0 and phases["sampling_s"] > 0
    refine = next(n for n in nodes if n["type"] == "FreeSwimLatentUpscaleRefine")
    assert phases["upscale_s"] + phases["sampling_s"] <= refine["seconds"] + 0.5
    # what FreeSwim did, per sampling run, from the server's reports (not from its log)
    runs = {r["node_id"]: r for r in report["freeswim_runs"]}
    assert runs[refine["node"]]["guide_calls"] > 0 and runs[refine["node"]]["reuse_calls"] > 0
    assert runs[refine["node"]]["grids"] and runs[refine["node"]]["window"]
