"""The FreeSwim panel (web/js/freeswim.js) in the real ComfyUI frontend of each host, and the
planner route it calls (POST /freeswim/plan)."""
import json
import time
import urllib.error
import urllib.request

import pytest
import torch

from freeswim_core.memory import HostTraits, plan_memory
from harness.comfy_server import host_server, prepare_base
from harness.frontend import Frontend, chromium_path
from harness.graphs import TEST_NODES, TEST_NODES_NAME
from harness.inprocess import REPO
from harness.stand_ins import install_stand_in_models, stand_ins
from harness.workflow_format import ui_to_api

WORKFLOW = REPO / "workflows" / "wan2.1_t2v_1.3B_freeswim_1088p.json"
REFINE = "FreeSwimLatentUpscaleRefine"


@pytest.fixture(scope="module")
def served(tmp_path_factory, comfy, comfy_host):
    base = prepare_base(tmp_path_factory.mktemp("panel_base"), {TEST_NODES_NAME: TEST_NODES})
    install_stand_in_models(base, comfy_host.path)
    with host_server(comfy_host, base) as server:
        yield server


@pytest.fixture(scope="module")
def frontend(served):
    assert chromium_path(), "Chromium is missing: `make setup` installs Debian's chromium package"
    with Frontend(served.url) as fe:
        yield fe


def post_raw(server, path, body: bytes):
    req = urllib.request.Request(server.url + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_plan_route_answers_with_the_planner(served):
    status, plan = post_raw(served, "/freeswim/plan", json.dumps(
        {"model": "wan2.1-1.3b", "width": 3840, "height": 2160, "frames": 81, "mode": "dual",
         "execution": "sequential", "vram_gb": 24}).encode())
    assert status == 200
    expected = plan_memory("1.3b", 3840, 2160, 81, mode="dual", execution="sequential",
                           host=HostTraits(**plan["host_traits"]), vram_bytes=24 * 10**9)
    assert plan["peak_bytes"] == expected.peak_bytes and plan["grid"] == [21, 135, 240]
    assert plan["window"] == [31, 53] and 0.04 < plan["attention_share"] < 0.06
    assert plan["fits"] == expected.fits


def test_plan_route_counts_the_window_kernel_a_run_takes(served):
    """auto with inward off runs flex (NATTEN shifts every window inward): 14B at 4K (680,400 tokens), its
    block tables kept through the call (2 x 5,316^2 x 4 bytes, 0.23 GB) and one head's four reordered copies
    (0.70 GB). Asked for natten, the plan counts NATTEN's copies of one head instead (24 x 136 x 240 padded
    tokens x (5 x 128 x 2 + 8) bytes, and the 680,400 unpadded x 128 x 2 where its row padding is cut off:
    1.18 GB) and no tables. Self-attention peaks at the kernel on ComfyUI 0.33, at RoPE's float32 copies
    of q and k on 0.3.x (where only the tables differ). auto with inward on counts NATTEN where its
    compiled library is installed, else flex."""
    pytest.importorskip("natten")
    from freeswim_core.attention.natten_backend import natten_compiled
    request = {"model": "wan2.1-14b", "width": 3840, "height": 2160, "mode": "window", "execution": "sequential"}
    _, flex = post_raw(served, "/freeswim/plan", json.dumps({**request, "inward": False}).encode())
    _, natten = post_raw(served, "/freeswim/plan", json.dumps({**request, "backend": "natten"}).encode())
    _, auto = post_raw(served, "/freeswim/plan", json.dumps(request).encode())
    assert flex["window_backend"] == "flex" and natten["window_backend"] == "natten"
    assert auto["window_backend"] == ("natten" if natten_compiled() else "flex")
    q = -(-21 * 135 * 240 // 128)
    tables, flex_copies, natten_copies = 2 * q * q * 4 + 2 * q * 4, 4 * 680_400 * 128 * 2, (
        783_360 * 1288 + 680_400 * 256)
    assert flex["phases"]["cross_attn"] - natten["phases"]["cross_attn"] == tables
    assert flex["phases"]["ffn"] - natten["phases"]["ffn"] == tables
    kernel_peaks = not flex["host_traits"]["rope_in_float32"]
    assert flex["phases"]["self_attn"] - natten["phases"]["self_attn"] == (
        tables + (flex_copies - natten_copies if kernel_peaks else 0))
    if not torch.cuda.is_available():        # NATTEN runs here (its FlexAttention kernel on the CPU)
        assert not any("NATTEN" in w for w in natten["warnings"])


def test_plan_route_warns_in_plain_words(served):
    """A size off the token grid, a target at the native size, a cache that fits nowhere."""
    _, plan = post_raw(served, "/freeswim/plan", json.dumps({"model": "wan2.2-5b", "width": 1000,
                                                             "height": 704}).encode())
    assert any("not a multiple of 32 px" in w and "992x704 or 1024x736" in w for w in plan["warnings"])
    _, plan = post_raw(served, "/freeswim/plan", json.dumps({"width": 832, "height": 480}).encode())
    assert any("FreeSwim changes nothing" in w for w in plan["warnings"]) and plan["rows"] == 1


@pytest.mark.parametrize("file,model", [
    ("wan2.1_t2v_1.3B_bf16.safetensors", "wan2.1-1.3b"), ("wan2.2_ti2v_5B_fp16.safetensors", "wan2.2-5b"),
    ("wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors", "wan2.1-14b-i2v"),
    ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2-a14b"),
    ("wan2.1_t2v_14B_bf16.safetensors", "wan2.1-14b"), ("my_finetune.safetensors", "wan2.1-1.3b"),
])
def test_the_route_names_the_model_of_a_loaders_file(served, file, model):
    """The panel sends the loader's file name; the route reads the variant off it (the registry's
    file-name pieces), so the browser holds no table of models."""
    status, plan = post_raw(served, "/freeswim/plan", json.dumps({"model_file": file}).encode())
    assert status == 200 and plan["model"] == model


@pytest.mark.parametrize("body,field", [
    (b"not json", "JSON"), (b"[1, 2]", "JSON object"), (b'{"width": "wide"}', "width"),
    (b'{"model": "sdxl"}', "model"), (b'{"mode": "fast"}', "mode"), (b'{"vram_gb": 0}', "vram_gb"),
    (b'{"frames": 1e9}', "frames"), (b'{"native_size": "big"}', "native_size"),
    (b'{"model": {"dim": 1000, "ffn_dim": 10, "blocks": 2}}', "model.dim"), (b'{"experts": 3}', "experts"),
    (b'{"model_file": 7}', "model_file"), (b'{"backend": "sage"}', "backend"),
    (b'{"inward": 1}', "inward"),
])
def test_bad_plan_requests_get_a_400_naming_the_field(served, body, field):
    status, answer = post_raw(served, "/freeswim/plan", body)
    assert status == 400 and field in answer["error"]


def _panel(fe, node_type, key="plan"):
    js = (f"(() => {{ const n = window.app.graph._nodes.find(n => n.type === {json.dumps(node_type)}); "
          f"const p = n && n.freeswimPanel; return p && p.{key} ? JSON.stringify(p) : null; }})()")
    value = fe.evaluate(js, wait_for_truthy=30)
    return json.loads(value) if value else None


def _wait_panel(fe, node_type, predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = _panel(fe, node_type)
        if p and predicate(p):
            return p
        time.sleep(0.3)
    raise AssertionError(f"the panel of {node_type} did not update: {p}")


def _set_widget(fe, node_type, name, value):
    fe.evaluate(f"(() => {{ const n = window.app.graph._nodes.find(n => n.type === {json.dumps(node_type)}); "
                f"const w = n.widgets.find(w => w.name === {json.dumps(name)}); w.value = {json.dumps(value)}; "
                f"if (w.callback) w.callback(w.value); return true; }})()")


def _expected(p):
    """The Python planner's answer for the request the panel made."""
    r = p["request"]
    model = p["plan"]["model"]          # the route's reading of the loader's file name
    precision = "bf16" if r["precision"] == "model" else r["precision"]
    return plan_memory(model, r["width"], r["height"], r["frames"], mode=r["mode"], execution=p["plan"]["execution"],
                       weight_dtype=r["weight_dtype"], host=HostTraits(**p["plan"]["host_traits"]),
                       vram_bytes=int(r["vram_gb"] * 1e9) if r.get("vram_gb") else None,
                       cache_storage=r["storage"], cache_precision=precision,
                       window_backend=p["plan"]["window_backend"])


def test_panel_shows_the_planners_numbers_live(frontend, tmp_path):
    assert frontend.evaluate("window.app.extensions.some(e => e.name === 'freeswim.panel')")
    workflow = json.loads(WORKFLOW.read_text())
    frontend.evaluate(f"(async () => {{ await window.app.loadGraphData({json.dumps(workflow)}); return true; }})()")
    p = _wait_panel(frontend, REFINE, lambda p: p["plan"]["width"] == 1920)
    assert p["plan"]["model"] == "wan2.1-1.3b" and p["request"]["mode"] == "cache"
    assert p["request"]["model_file"] == "wan2.1_t2v_1.3B_fp16.safetensors"
    assert p["request"]["frames"] == 81 and p["request"]["weight_dtype"] == "bf16"
    expected = _expected(p)
    assert p["plan"]["peak_bytes"] == expected.peak_bytes and p["plan"]["grid"] == [21, 68, 120]
    assert f"{expected.peak_bytes / 1e9:.1f} GB peak" in p["lines"][1]
    for node_type in ("FreeSwimWindowAttentionPatch", "FreeSwimDualPathOverride", "FreeSwimCrossAttnCache"):
        assert _panel(frontend, node_type)["plan"]["peak_bytes"] == expected.peak_bytes
    frontend.screenshot(tmp_path / "panel_1088p.png")

    _set_widget(frontend, REFINE, "width", 3840)
    _set_widget(frontend, REFINE, "height", 2160)
    p = _wait_panel(frontend, REFINE, lambda p: p["plan"]["width"] == 3840 and p["plan"]["height"] == 2160)
    expected = _expected(p)
    assert p["plan"]["peak_bytes"] == expected.peak_bytes and p["plan"]["grid"] == [21, 135, 240]
    assert f"{expected.peak_bytes / 1e9:.1f} GB peak" in p["lines"][1]

    _set_widget(frontend, "FreeSwimWindowAttentionPatch", "backend", "natten")
    p = _wait_panel(frontend, REFINE, lambda p: p["request"]["backend"] == "natten")
    assert p["plan"]["window_backend"] == "natten" and "natten window" in p["lines"][1]
    assert p["plan"]["peak_bytes"] == _expected(p).peak_bytes
    _set_widget(frontend, "FreeSwimWindowAttentionPatch", "backend", "auto")

    _set_widget(frontend, "EmptyHunyuanLatentVideo", "length", 41)
    p = _wait_panel(frontend, REFINE, lambda p: p["plan"]["frames"] == 41)
    assert p["plan"]["grid"] == [11, 135, 240] and p["plan"]["peak_bytes"] == _expected(p).peak_bytes

    frontend.evaluate("(async () => { const s = window.app.extensionManager?.setting; "
                      "if (s?.set) await s.set('FreeSwim.VRAMGB', 8); "
                      "else window.app.ui.settings.setSettingValue('FreeSwim.VRAMGB', 8); return true; })()")
    p = _wait_panel(frontend, REFINE, lambda p: p["request"].get("vram_gb") == 8)
    assert p["plan"]["fits"] is False
    assert any(line.startswith("⚠ will not fit") and "8 GB" in line for line in p["lines"])
    frontend.screenshot(tmp_path / "panel_4k_8gb.png")


def test_run_report_appears_on_the_node_that_ran(frontend, served):
    workflow = json.loads(WORKFLOW.read_text())
    frontend.evaluate(f"(async () => {{ await window.app.loadGraphData({json.dumps(workflow)}); return true; }})()")
    refine_id = next(n["id"] for n in workflow["nodes"] if n["type"] == REFINE)
    served.run_prompt(stand_ins(ui_to_api(workflow, served.get("/object_info"))), timeout=600)
    p = _panel(frontend, REFINE, key="report")
    assert p is not None, "no run report reached the panel"
    report = p["report"]
    assert str(report["node_id"]) == str(refine_id) and report["windowed_calls"] > 0
    assert report["guide_calls"] > 0 and report["backends"] == ["chunked"]


def test_the_a14b_workflow_plans_for_two_experts(frontend):
    """With the high-noise expert connected to Latent Upscale Refine, the panel asks for a two-expert
    plan and says what the idle expert's weights (14B in fp8: the planner's weights) do on the GPU."""
    workflow = json.loads((REPO / "workflows" / "wan2.2_a14b_t2v_freeswim_1088p.json").read_text())
    frontend.evaluate(f"(async () => {{ await window.app.loadGraphData({json.dumps(workflow)}); return true; }})()")
    p = _wait_panel(frontend, REFINE, lambda p: p["request"].get("experts") == 2 and p["plan"]["width"] == 1920)
    weights = plan_memory("14b", 1920, 1088, weight_dtype="fp8").weights_bytes
    assert p["request"]["weight_dtype"] == "fp8" and p["plan"]["weights_bytes"] == weights
    assert any(line.startswith(f"two experts: one plan covers either (one architecture); the idle expert's "
                               f"{weights / 1e9:.1f} GB of weights") for line in p["lines"])
    frontend.evaluate(f"(async () => {{ await window.app.loadGraphData({json.dumps(json.loads(WORKFLOW.read_text()))}); "
                      "return true; })()")
    p = _wait_panel(frontend, REFINE, lambda p: p["plan"]["model"] == "wan2.1-1.3b")
    assert "experts" not in p["request"] and not any(line.startswith("two experts") for line in p["lines"])


def test_the_ltxv_workflow_plans_for_ltx_video(frontend):
    """The LTX-Video workflow: the loader's file names LTXV 2B, the frames come from Empty LTXV Latent
    Video, and the plan is the planner's for LTX's grid (32 px tokens, 8 frames a latent frame)."""
    workflow = json.loads((REPO / "workflows" / "ltxv_t2v_freeswim_4k.json").read_text())
    frontend.evaluate(f"(async () => {{ await window.app.loadGraphData({json.dumps(workflow)}); return true; }})()")
    p = _wait_panel(frontend, REFINE, lambda p: p["plan"]["model"] == "ltxv-2b" and p["plan"]["width"] == 3840)
    assert p["request"]["model_file"] == "ltxv-2b-0.9.6-dev-04-25.safetensors"
    assert p["request"]["frames"] == 97 and p["request"]["weight_dtype"] == "bf16"
    assert p["request"]["mode"] == "cache" and p["plan"]["height"] == 2176
    assert p["plan"]["grid"] == [13, 68, 120] and p["plan"]["window"] == [17, 25]
    assert p["plan"]["native_size"] == [768, 512]
    expected = _expected(p)
    assert p["plan"]["peak_bytes"] == expected.peak_bytes
    assert f"{expected.peak_bytes / 1e9:.1f} GB peak" in p["lines"][1]
    for node_type in ("FreeSwimWindowAttentionPatch", "FreeSwimDualPathOverride", "FreeSwimCrossAttnCache"):
        assert _panel(frontend, node_type)["plan"]["peak_bytes"] == expected.peak_bytes

    _set_widget(frontend, "EmptyLTXVLatentVideo", "length", 49)
    p = _wait_panel(frontend, REFINE, lambda p: p["plan"]["frames"] == 49)
    assert p["plan"]["grid"] == [7, 68, 120] and p["plan"]["peak_bytes"] == _expected(p).peak_bytes


def test_each_freeswim_node_added_by_hand_gets_the_panel(frontend):
    """A FreeSwim node added to an empty graph gets the panel; other nodes do not."""
    added = json.loads(frontend.evaluate("""(async () => {
      await window.app.loadGraphData({nodes: [], links: [], groups: [], config: {}, extra: {}, version: 0.4});
      const out = {};
      for (const type of ["FreeSwimWindowAttentionPatch", "FreeSwimDualPathOverride", "FreeSwimCrossAttnCache",
                          "FreeSwimLatentUpscaleRefine", "KSampler"]) {
        const node = window.LiteGraph.createNode(type);
        window.app.graph.add(node);
        out[type] = node.freeswimPanel !== undefined;
      }
      return JSON.stringify(out);
    })()"""))
    assert added == {"FreeSwimWindowAttentionPatch": True, "FreeSwimDualPathOverride": True,
                     "FreeSwimCrossAttnCache": True, "FreeSwimLatentUpscaleRefine": True, "KSampler": False}
    p = _wait_panel(frontend, REFINE, lambda p: p["plan"]["width"] == 1920)   # the node's default target
    assert p["plan"]["grid"] == [21, 68, 120] and p["request"]["mode"] == "cache"
