"""Every workflow in workflows/ runs in the real ComfyUI server.

Each UI-format file is converted to the API format with the server's own
object_info and queued over HTTP. Stand-ins: small random-weight Wan and LTX-Video
models and small random-weight VAEs saved under the file names the workflow expects;
the text encoder and CLIP vision nodes (which cannot be stood in at their real
size) are swapped for the test-only nodes in harness/host_nodes, and on a host whose
Load VAE reads no file metadata the tiny LTX VAE comes from Load Checkpoint
(harness/stand_ins.py says why). Sizes, frame counts and steps are reduced;
everything else runs as the file says.
"""
import json
from pathlib import Path

import pytest

from harness.inprocess import REPO
from harness.comfy_server import host_server, prepare_base
from harness.graphs import TEST_NODES, TEST_NODES_NAME
from harness.stand_ins import install_stand_in_models, stand_ins
from harness.workflow_format import ui_to_api

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, comfy, comfy_host):
    base = prepare_base(tmp_path_factory.mktemp("workflow_base"), {TEST_NODES_NAME: TEST_NODES})
    install_stand_in_models(base, comfy_host.path)
    with host_server(comfy_host, base) as srv:
        srv.object_info = srv.get("/object_info")
        srv.comfyui = comfy_host.path
        yield srv


def test_there_are_six_workflows_and_each_uses_freeswim():
    assert len(WORKFLOWS) == 6
    for path in WORKFLOWS:
        types = {n["type"] for n in json.loads(path.read_text())["nodes"]}
        assert {"FreeSwimWindowAttentionPatch", "FreeSwimDualPathOverride", "FreeSwimCrossAttnCache",
                "FreeSwimLatentUpscaleRefine", "Note"} <= types, path.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_in_the_server(server, path):
    ui = json.loads(path.read_text())
    api = ui_to_api(ui, server.object_info)
    # the conversion keeps every real node and its settings
    assert {n["class_type"] for n in api.values()} == {n["type"] for n in ui["nodes"]} - {"Note"}
    entry = server.run_prompt(stand_ins(api, comfyui=server.comfyui), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    videos = [item for out in entry["outputs"].values() for item in out.get("images", []) + out.get("videos", [])]
    assert videos, f"no video saved: {entry['outputs']}"
    saved = server.base / "output" / videos[0].get("subfolder", "") / videos[0]["filename"]
    assert saved.is_file() and saved.stat().st_size > 0
    reports = server.reports(entry["prompt_id"])
    refine_id = next(i for i, n in api.items() if n["class_type"] == "FreeSwimLatentUpscaleRefine")
    refined = [r for r in reports if r["node_id"] == refine_id]
    # one sampling run per expert that ran steps (the node's UI output says how it split them)
    (phases,) = entry["outputs"][refine_id]["freeswim_refine"]
    split = phases.get("experts")
    runs = 1 if split is None else (split["high_noise_steps"] > 0) + (split["low_noise_steps"] > 0)
    assert len(refined) == runs, reports
    assert all(r["windowed_calls"] > 0 and r["guide_calls"] > 0 for r in refined)
    assert refined[-1]["reuse_calls"] > 0
    if "model_high_noise" in api[refine_id]["inputs"]:
        assert split is not None
