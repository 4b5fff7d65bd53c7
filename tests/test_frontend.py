"""The workflows in workflows/ load in the real ComfyUI frontend (headless Chromium), and the
frontend's own conversion to the API format equals harness.workflow_format.ui_to_api, which the
workflow tests and the demo use."""
import json

import pytest

from harness.inprocess import REPO
from harness.frontend import Frontend, chromium_path
from harness.comfy_server import host_server, prepare_base
from harness.graphs import TEST_NODES, TEST_NODES_NAME
from harness.workflow_format import declared_inputs, ui_to_api

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def frontend(tmp_path_factory, comfy_host):
    assert chromium_path(), "Chromium is missing: `make setup` installs Debian's chromium package"
    base = prepare_base(tmp_path_factory.mktemp("frontend_base"),
                        {TEST_NODES_NAME: TEST_NODES})
    with host_server(comfy_host, base) as server:
        info = server.get("/object_info")
        with Frontend(server.url) as fe:
            fe.object_info = info
            yield fe


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_and_converts_like_the_frontend(frontend, path):
    workflow = json.loads(path.read_text())
    count, app_prompt = frontend.load_and_convert(workflow)
    assert count == len(workflow["nodes"])
    ours = ui_to_api(workflow, frontend.object_info)
    assert set(app_prompt) == set(ours)
    for nid, node in ours.items():
        assert app_prompt[nid]["class_type"] == node["class_type"]
        # Keys the node does not declare are ignored by the server: newer frontends also send a
        # dynamic combo's sub-inputs under their bare names ("codec" beside "format.codec").
        declared = set(node["inputs"]) | set(declared_inputs(frontend.object_info[node["class_type"]]))
        app_inputs = {k: v for k, v in app_prompt[nid]["inputs"].items() if k in declared}
        assert app_inputs == node["inputs"], (nid, node["class_type"])
