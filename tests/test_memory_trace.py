"""The memory trace of a real-size Wan call (harness/memory_trace.py), checked where it can be
checked without a GPU: its weight count against the architecture's parameters, and the
token-chunked FFN's effect on the traced FFN peak."""
import pytest
import torch

from freeswim_core.families import variant
from harness.memory_trace import _natten_hopper, trace

GB = 1e9


def test_traced_weights_are_the_whole_models_parameters(comfy):
    """Two blocks are traced and the rest counted: the total must be every parameter of the
    30-block 1.3B model as ComfyUI builds it (here on the meta device, all 30 blocks)."""
    import comfy.model_detection
    from harness.tiny_wan import tiny_wan_state_dict
    arch = variant("1.3b").arch
    sd = tiny_wan_state_dict(dim=arch.dim, layers=arch.blocks, ffn_dim=arch.ffn_dim, device="meta")
    config = comfy.model_detection.model_config_from_unet(sd, "")
    config.set_inference_dtype(torch.bfloat16, None)
    full = config.get_model({}, "", device=torch.device("meta")).diffusion_model
    assert len(full.blocks) == 30
    expected = sum(p.numel() * p.element_size() for p in full.parameters())
    r = trace("1.3b", 832, 480, 81, "plain")
    assert r.weights_bytes == expected
    assert 1.3e9 < sum(p.numel() for p in full.parameters()) < 1.5e9     # the 1.3B model


def test_chunked_ffn_lowers_the_traced_ffn_peak(comfy, monkeypatch):
    """At 1920x1088x81 (171,360 tokens) the 1.3B FFN hidden state is 171,360 x 8960 x 2 bytes =
    3.07 GB; sliced to the 1 GiB budget, the traced FFN peak drops by about that much."""
    chunks = comfy.pack_module("nodes.ffn_chunks")
    sliced = trace("1.3b", 1920, 1088, 81, "window")
    monkeypatch.setattr(chunks, "FFN_HIDDEN_BUDGET", 1 << 50)          # one slice: the whole FFN
    whole = trace("1.3b", 1920, 1088, 81, "window")
    hidden = 171_360 * 8960 * 2
    assert whole.phases["ffn"] - sliced.phases["ffn"] > 0.5 * hidden
    assert sliced.tokens == whole.tokens == 171_360


@pytest.mark.parametrize("execution", ["batched", "sequential"])
def test_sequential_execution_lowers_the_traced_peak(comfy, execution):
    """Per-block sequential execution runs each block's rows one at a time: its traced peak is
    below the batched one (and both carry a twin row)."""
    r = trace("1.3b", 1920, 1088, 81, "dual", execution=execution)
    assert r.rows == 2
    if execution == "sequential":
        batched = trace("1.3b", 1920, 1088, 81, "dual", execution="batched")
        assert r.peak_bytes < batched.peak_bytes


# --- LTX-Video: ComfyUI's LTXVModel at the released 2B and 13B sizes ---------------------------

@pytest.mark.parametrize("model,dim,blocks,params", [("ltxv-2b", 2048, 28, 1.9e9), ("ltxv-13b", 4096, 48, 13e9)])
def test_traced_ltxv_weights_are_the_planned_ones(comfy, model, dim, blocks, params):
    """Two blocks traced, the rest counted: the whole model's weights are the architecture's
    parameter count (2B: 28 blocks x 2048, 13B: 48 x 4096, 32 heads each)."""
    from freeswim_core.memory import plan_memory
    arch = variant(model).arch
    assert (arch.dim, arch.blocks, arch.heads) == (dim, blocks, 32)
    r = trace(model, 768, 512, 97, "plain")
    assert r.weights_bytes == plan_memory(model, 768, 512, 97).weights_bytes
    assert abs(r.weights_bytes / 2 / params - 1) < 0.05


LTXV_AGREEMENT = [("ltxv-2b", "bf16", 3840, 2176, "dual", "batched", "flex"),
                  ("ltxv-2b", "bf16", 1920, 1088, "window", "sequential", "flex"),
                  ("ltxv-13b", "fp8", 3840, 2176, "cache", "sequential", "flex"),
                  ("ltxv-13b", "bf16", 2560, 1440, "plain", "sequential", "flex"),
                  ("ltxv-2b", "bf16", 3840, 2176, "dual", "sequential", "natten")]


@pytest.mark.parametrize("model,weight_dtype,width,height,mode,execution,backend", LTXV_AGREEMENT)
def test_ltxv_planner_agrees_with_the_trace_within_10_percent(comfy, model, weight_dtype, width, height, mode,
                                                              execution, backend):
    """The LTX phase model (freeswim_core/memory/ltxv.py) against the real LTXVModel at 97 frames, with
    the host's traits as the nodes read them (both hosts: 0.3.x builds RoPE from float32 and chunks
    the FFN; 0.33 keeps norm_x and the first block's input, and its FeedForward runs past the chunks)."""
    from freeswim_core.memory import HostTraits, plan_memory
    if backend == "natten":
        pytest.importorskip("natten")
    r = trace(model, width, height, 97, mode, execution=execution, weight_dtype=weight_dtype, backend=backend)
    p = plan_memory(model, width, height, 97, mode=mode, execution=execution, weight_dtype=weight_dtype,
                    host=HostTraits(**r.host_traits), window_backend=backend)
    assert p.tokens == r.tokens and p.rows == r.rows
    assert abs(p.peak_bytes / r.peak_bytes - 1) < 0.10, (p.peak_bytes / GB, r.peak_bytes / GB)
    assert set(r.phases) == {"self_attn", "cross_attn", "ffn"}
    for phase, traced in r.phases.items():
        assert abs(p.phases[phase] / traced - 1) < 0.10, (phase, p.phases[phase] / GB, traced / GB)


# --- NATTEN's fused forward: what one call holds --------------------------------------------

@pytest.mark.parametrize("grid", [(21, 135, 240), (21, 45, 80)])
def test_one_natten_call_holds_its_tiled_copies_within_the_planned_bound(grid):
    """NATTEN's Hopper forward, its own Python (q, k, v token-permuted into padded tiles, the output
    un-permuted and its padding cut off; only the compiled kernel stood in by NATTEN's fake of it), for one
    head of a 14B row at 4K (21 x 135 x 240 tokens, padded to 24 x 136 x 240) and a 1.3B row at 720p
    (21 x 45 x 80, padded to 24 x 48 x 80; cutting padding off a row axis is one more copy), traced on a
    fake GPU: it holds more than five unpadded copies of the head (so over all 40 heads at once it would hold about 35 GB at 4K),
    and no more than the planner's bound for one call (natten_backend.call_bytes: five padded copies, two
    float32 log-sum-exps, and the unpadded output where rows or columns were padded)."""
    pytest.importorskip("natten")
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from freeswim_core import TokenGrid
    from freeswim_core.attention.natten_backend import call_bytes
    tokens, D = grid[0] * grid[1] * grid[2], 128
    with FakeTensorMode():
        rows = [torch.empty(1, *grid, 40 * D, dtype=torch.bfloat16, device="cuda") for _ in range(3)]
        q, k, v = (r.view(1, *grid, 40, D)[..., :1, :] for r in rows)      # one head of the host's layout
        tracker = MemTracker()
        with tracker, torch.inference_mode():
            out = _natten_hopper(q, k, v, (grid[0], 33, 59), None)
        assert out.shape == q.shape
        peak = sum(c["Total"] for dev, c in tracker.get_tracker_snapshot("peak").items()
                   if torch.device(dev).type == "cuda")
    assert 5 * tokens * D * 2 < peak <= call_bytes(1, TokenGrid(*grid), D), (peak, tokens * D * 2)
