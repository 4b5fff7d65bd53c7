"""The pack in a real ComfyUI server process, driven over its HTTP API."""
from pathlib import Path

import pytest

from harness.comfy_server import host_server, prepare_base
from harness.graphs import TEST_NODES, TEST_NODES_NAME, window_patch_graph
from harness.tiny_wan import save_tiny_wan



@pytest.fixture(scope="module")
def server(tmp_path_factory, comfy, comfy_host):
    base = prepare_base(tmp_path_factory.mktemp("comfy_base"), {TEST_NODES_NAME: TEST_NODES})
    save_tiny_wan(base / "models" / "diffusion_models" / "tiny_wan.safetensors", comfy_host.path, seed=3)
    with host_server(comfy_host, base) as srv:
        yield srv


def test_server_starts_clean_with_the_pack(server):
    """The isolated server keeps its database in its own base directory (ComfyUI's default lies
    inside the ComfyUI tree) and imports the pack without errors."""
    log = server.log()
    assert "Failed to initialize database" not in log
    assert (server.base / "user" / "comfyui.db").exists()
    assert "comfyui-freeswim" in log and "IMPORT FAILED: comfyui-freeswim" not in log


def test_object_info_lists_the_node_and_its_inputs(server):
    info = server.get("/object_info/FreeSwimWindowAttentionPatch")["FreeSwimWindowAttentionPatch"]
    assert info["display_name"] == "FreeSwim Window Attention Patch"
    assert info["category"] == "FreeSwim"
    required = info["input"]["required"]
    assert list(required) == ["model", "native_size", "custom_width", "custom_height", "inward",
                              "attention_scale", "backend"]
    native_options = required["native_size"][1]["options"] if isinstance(required["native_size"][1], dict) \
        and "options" in required["native_size"][1] else required["native_size"][0]
    assert "auto" in native_options and "custom" in native_options
    assert info["output"] == ["MODEL"]


def test_object_info_lists_the_dual_path_and_cache_nodes(server):
    info = server.get("/object_info")
    dual = info["FreeSwimDualPathOverride"]
    cache = info["FreeSwimCrossAttnCache"]
    assert dual["display_name"] == "Dual-Path Override" and cache["display_name"] == "Cross-Attn Cache"
    assert list(dual["input"]["required"]) == ["model", "passes", "override_image_cross", "start_percent",
                                               "end_percent", "execution"]
    assert list(cache["input"]["required"]) == ["model", "guide_interval", "storage", "precision"]


def test_prompt_with_all_three_patches_runs(server):
    graph = window_patch_graph(unet_name="tiny_wan.safetensors", width=384, height=256, length=5,
                               steps=3, native_width=128, native_height=96, prefix="freeswim/all3",
                               dual_path=True, guide_interval=2)
    assert graph["6"]["inputs"]["model"] == ["9", 0] and graph["9"]["inputs"]["model"] == ["8", 0]
    entry = server.run_prompt(graph, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (report,) = server.reports(entry["prompt_id"])
    assert (report["guide_calls"], report["reuse_calls"]) == (2, 1) and report["node_id"] == "6"


def test_prompt_with_the_patch_runs_to_completion(server):
    graph = window_patch_graph(unet_name="tiny_wan.safetensors", width=384, height=256, length=5,
                               steps=2, native_width=128, native_height=96, prefix="freeswim/test")
    entry = server.run_prompt(graph, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = list((server.base / "output" / "freeswim").glob("test_*.latent"))
    assert saved, "SaveLatent wrote nothing"
    # the run report carries the plan the patch computed for this grid: 2 x 16 x 24 tokens, 7 x 9 window
    (report,) = server.reports(entry["prompt_id"])
    assert report["grids"] == [[2, 16, 24]] and report["window"] == [7, 9]
    assert report["windowed_calls"] == report["model_calls"] == 2 and report["backends"] == ["chunked"]
    # and the log line is written from it
    assert f'"prompt_id": "{entry["prompt_id"]}"' in server.log()


def test_bad_choice_fails_with_a_message_naming_the_node(server):
    graph = window_patch_graph(unet_name="tiny_wan.safetensors", width=384, height=256, length=5,
                               steps=1, native_width=128, native_height=96)
    graph["2"]["inputs"]["native_size"] = "999x999"
    try:
        entry = server.run_prompt(graph, timeout=120)
    except RuntimeError as refused:            # refused by ComfyUI's own input validation
        assert "native_size" in str(refused)
        return
    assert entry["status"]["status_str"] == "error"
    messages = str(entry["status"]["messages"])
    assert "FreeSwim Window Attention Patch: native_size '999x999' is not one of auto" in messages


def test_node_errors_reach_the_ui_with_a_clean_type_and_the_node_named(server):
    """NaN passes ComfyUI's own range validation (comparisons with NaN are false), so the node's
    check must catch it; the error's type reads ``freeswim.InvalidInput``, not the install path."""
    graph = window_patch_graph(unet_name="tiny_wan.safetensors", width=128, height=96, length=5,
                               steps=1, native_width=128, native_height=96, prefix="freeswim/nan")
    graph["10"] = {"class_type": "FreeSwimLatentUpscaleRefine",
                   "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
                              "latent": ["6", 0], "width": 192, "height": 128, "scale_by": 0.0,
                              "upscale_path": "latent", "resize_method": "bilinear", "strength": 0.5,
                              "steps": 2, "cfg": float("nan"), "sampler_name": "euler",
                              "scheduler": "simple", "shift": 9.0, "seed": 0}}
    graph["7"]["inputs"]["samples"] = ["10", 0]
    entry = server.run_prompt(graph, timeout=300)
    assert entry["status"]["status_str"] == "error"
    (error,) = [body for kind, body in entry["status"]["messages"] if kind == "execution_error"]
    assert error["node_type"] == "FreeSwimLatentUpscaleRefine"
    assert error["exception_type"] == "freeswim.InvalidInput"
    assert error["exception_message"].startswith("Latent Upscale Refine: cfg must be a finite number")
