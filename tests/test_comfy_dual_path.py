"""Dual-Path Override and Cross-Attn Cache in the real ComfyUI host, tiny random Wan models.

Expected values come from a test-owned dual path (tests/reference.py) or from
invariances ComfyUI must not be able to break (batch order, call splitting,
repeated runs); cache scheduling is read from the per-run summary the pack logs.
"""
import logging
import re

import pytest
import torch

from reference import dual_path_reference, reference_scale

LATENT = torch.zeros(1, 16, 3, 24, 40)          # grid 3 x 12 x 20
GRID, WINDOW = (3, 12, 20), (7, 9)              # custom native 128 x 96 px
SCALE = reference_scale(128)


def node(comfy, name, model, **inputs):
    (out,) = comfy.run_node(name, model=model, **inputs)
    return out


def windowed(comfy, model, **kw):
    return node(comfy, "FreeSwimWindowAttentionPatch", model, native_size="custom", custom_width=128,
                custom_height=96, inward=True, attention_scale="reference", backend="chunked", **kw)


def dual(comfy, model, passes="cond_and_uncond", start=0.0, end=1.0, execution="batched"):
    return node(comfy, "FreeSwimDualPathOverride", model, passes=passes, override_image_cross=False,
                start_percent=start, end_percent=end, execution=execution)


def cache(comfy, model, interval=2, storage="auto", precision="model"):
    return node(comfy, "FreeSwimCrossAttnCache", model, guide_interval=interval, storage=storage,
                precision=precision)


@pytest.fixture(scope="module")
def wan(comfy):
    return comfy.load_tiny_wan(seed=31)


def rel_err(a, b):
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def cache_summaries(caplog):
    out = []
    for r in caplog.records:
        m = re.search(r"Cross-Attn Cache: (\d+) guide and (\d+) reuse calls", r.getMessage())
        if m:
            out.append((int(m.group(1)), int(m.group(2))))
    return out


# --- against the test-owned dual path (no cache) ---------------------------------------------

@pytest.mark.parametrize("cfg", [5.0, 1.0])
def test_sampling_matches_reference_dual_path(comfy, wan, cfg):
    ours = comfy.ksample(dual(comfy, windowed(comfy, wan)), LATENT, seed=2, steps=3, cfg=cfg)
    ref = comfy.ksample(dual_path_reference(wan, GRID, WINDOW, SCALE), LATENT, seed=2, steps=3, cfg=cfg)
    window_only = comfy.ksample(windowed(comfy, wan), LATENT, seed=2, steps=3, cfg=cfg)
    assert ours.shape == LATENT.shape
    assert rel_err(ours, ref) < 1e-4
    assert rel_err(window_only, ref) > 100 * rel_err(ours, ref)


@pytest.mark.parametrize("with_cache", [False, True])
def test_sequential_execution_gives_the_batched_result(comfy, wan, with_cache):
    latent = torch.zeros(2, 16, 3, 24, 40)
    results = []
    for execution in ("batched", "sequential"):
        patched = dual(comfy, windowed(comfy, wan), passes="cond", execution=execution)
        if with_cache:
            patched = cache(comfy, patched)
        results.append(comfy.ksample(patched, latent, seed=6, steps=3))
    assert rel_err(results[1], results[0]) < 1e-5
    if not with_cache:
        ref = comfy.ksample(dual_path_reference(wan, GRID, WINDOW, SCALE), latent, seed=6, steps=3, cfg=1.0)
        seq = comfy.ksample(dual(comfy, windowed(comfy, wan), passes="cond", execution="sequential"),
                            latent, seed=6, steps=3, cfg=1.0)
        assert rel_err(seq, ref) < 1e-4


def test_batch_of_two_rows_each_get_their_own_twin(comfy, wan):
    latent = torch.zeros(2, 16, 3, 24, 40)
    ours = comfy.ksample(dual(comfy, windowed(comfy, wan)), latent, seed=4, steps=2)
    ref = comfy.ksample(dual_path_reference(wan, GRID, WINDOW, SCALE), latent, seed=4, steps=2)
    assert ours.shape == latent.shape
    assert rel_err(ours, ref) < 1e-4


def test_several_conditioning_entries(comfy, wan):
    positive = comfy.text_conditioning(5) + comfy.text_conditioning(6)
    for cond in positive:
        cond[1]["strength"] = 1.0
    ours = comfy.ksample(dual(comfy, windowed(comfy, wan)), LATENT, seed=3, steps=2, positive=positive)
    ref = comfy.ksample(dual_path_reference(wan, GRID, WINDOW, SCALE), LATENT, seed=3, steps=2,
                        positive=positive)
    assert rel_err(ours, ref) < 1e-4


@pytest.mark.parametrize("override_image", [False, True])
def test_i2v_image_cross_attention_override_option(comfy, override_image):
    model = comfy.load_tiny_wan(i2v=True, in_dim=36, seed=33)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(1, 36, 3, 24, 40, generator=g)
    ctx = torch.randn(1, 512, 4096, generator=g)
    clip = torch.randn(1, 257, 1280, generator=g)
    ours_model = node(comfy, "FreeSwimDualPathOverride", windowed(comfy, model), passes="cond",
                      override_image_cross=override_image, start_percent=0.0, end_percent=1.0)
    to = comfy.sampling_options(ours_model, cond_or_uncond=[0], uuids=["c"], sigma=0.8,
                                sample_sigmas=[0.8, 0.0])
    t = torch.full((1,), 800.0)
    ref_model = dual_path_reference(model, GRID, WINDOW, SCALE, image_tokens=257, override_image=override_image)
    ref_to = {**ref_model.model_options["transformer_options"], "wrappers": ref_model.wrappers}
    with torch.no_grad():
        ours = model.model.diffusion_model(x, t, ctx, clip_fea=clip, transformer_options=to)
        ref = model.model.diffusion_model(x, t, ctx, clip_fea=clip, transformer_options=ref_to)
        other = dual_path_reference(model, GRID, WINDOW, SCALE, image_tokens=257,
                                    override_image=not override_image)
        other_out = model.model.diffusion_model(
            x, t, ctx, clip_fea=clip,
            transformer_options={**other.model_options["transformer_options"], "wrappers": other.wrappers})
    assert ours.shape == x[:, :16].shape
    assert rel_err(ours, ref) < 1e-5
    # with random weights both rows' queries stay close, so the two semantics differ by little,
    # but by far more than our distance to the one we claim
    assert rel_err(other_out, ref) > 20 * max(rel_err(ours, ref), 1e-7)


# --- rows in any order, batched or not ---------------------------------------------------------

def _direct(comfy, patched, x, contexts, kinds, uuids, sigma=0.8, run=None):
    to = comfy.sampling_options(patched, cond_or_uncond=kinds, uuids=uuids, sigma=sigma,
                                sample_sigmas=[0.8, 0.6, 0.4, 0.0], run=run)
    t = torch.full((x.shape[0],), sigma * 1000)
    with torch.no_grad():
        return patched.model.diffusion_model(x, t, torch.cat(contexts), transformer_options=to)


@pytest.mark.parametrize("with_cache", [False, True])
def test_cond_uncond_order_and_split_calls_agree(comfy, wan, with_cache):
    patched = dual(comfy, windowed(comfy, wan), passes="cond")
    if with_cache:
        patched = cache(comfy, patched)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 16, 3, 24, 40, generator=g)
    pos, neg = (torch.randn(1, 512, 4096, generator=g) for _ in range(2))
    runtime = comfy.pack_module("nodes.runtime")
    uc_first = _direct(comfy, patched, torch.cat([x, x]), [neg, pos], [1, 0], ["n", "p"], run=runtime.RunState())
    c_first = _direct(comfy, patched, torch.cat([x, x]), [pos, neg], [0, 1], ["p", "n"], run=runtime.RunState())
    run = runtime.RunState()
    alone_c = _direct(comfy, patched, x, [pos], [0], ["p"], run=run)
    alone_u = _direct(comfy, patched, x, [neg], [1], ["n"], run=run)
    assert uc_first.shape[0] == 2 and c_first.shape[0] == 2
    for a, b in ((uc_first[1], c_first[0]), (uc_first[0], c_first[1]), (uc_first[1], alone_c[0]),
                 (uc_first[0], alone_u[0])):
        assert rel_err(a, b) < 1e-5
    # and the conditional row really is the dual-path row, not the window-only one
    window_only = _direct(comfy, windowed(comfy, wan), x, [pos], [0], ["p"])
    assert rel_err(alone_c[0], window_only[0]) > 1e-3


# --- per-run state -----------------------------------------------------------------------------

def test_same_graph_twice_is_identical_and_input_model_untouched(comfy, wan):
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    a = comfy.ksample(patched, LATENT, seed=9, steps=4)
    b = comfy.ksample(patched, LATENT, seed=9, steps=4)
    assert torch.equal(a, b)
    assert "freeswim" not in wan.model_options.get("transformer_options", {})


def test_interrupted_run_leaves_no_stale_features(comfy, wan):
    import comfy.patcher_extension as pe
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    clean = comfy.ksample(patched, LATENT, seed=1, steps=4)
    calls = {"n": 0}

    def fail_on_third_call(executor, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("user pressed cancel")
        return executor(*args, **kwargs)

    broken = patched.clone()
    broken.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test-interrupt", fail_on_third_call)
    with pytest.raises(KeyboardInterrupt):
        comfy.ksample(broken, LATENT, seed=1, steps=4)
    assert torch.equal(comfy.ksample(patched, LATENT, seed=1, steps=4), clean)


def test_changes_of_size_prompt_and_batch_between_runs(comfy, wan):
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    variants = [
        dict(latent=LATENT, positive=comfy.text_conditioning(1)),
        dict(latent=torch.zeros(1, 16, 2, 28, 36), positive=comfy.text_conditioning(1)),   # size, frames
        dict(latent=LATENT, positive=comfy.text_conditioning(7)),                          # prompt
        dict(latent=torch.zeros(2, 16, 3, 24, 40), positive=comfy.text_conditioning(1)),   # batch
    ]
    fresh = [comfy.ksample(cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond")), v["latent"],
                           seed=2, steps=3, positive=v["positive"]) for v in variants]
    for v, expected in zip(variants, fresh):
        got = comfy.ksample(patched, v["latent"], seed=2, steps=3, positive=v["positive"])
        assert torch.equal(got, expected)


def test_two_models_in_one_graph_keep_separate_state(comfy, wan, caplog):
    """Wan2.2 A14B style: high-noise model for the first steps, low-noise model for the rest."""
    import nodes
    caplog.set_level(logging.INFO, logger="freeswim")
    other = comfy.load_tiny_wan(seed=32)
    high = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    low = cache(comfy, dual(comfy, windowed(comfy, other), passes="cond"))
    pos, neg = comfy.text_conditioning(1), comfy.text_conditioning(2)

    def advanced(model, latent, start, end, add_noise):
        (out,) = nodes.common_ksampler(model, 5, 6, 5.0, "euler", "simple", pos, neg, {"samples": latent},
                                       disable_noise=not add_noise, start_step=start, last_step=end,
                                       force_full_denoise=end == 6)
        return out["samples"]

    caplog.clear()
    mid = advanced(high, LATENT, 0, 3, True)
    final = advanced(low, mid, 3, 6, False)
    # each run starts with a guide step of its own (steps 0, 2 of the high run; 3, 5 of the low run)
    assert cache_summaries(caplog) == [(2, 1), (2, 1)]
    # the low-noise run is the same whether or not the high-noise run came before it
    fresh_low = cache(comfy, dual(comfy, windowed(comfy, other), passes="cond"))
    assert torch.equal(final, advanced(fresh_low, mid, 3, 6, False))


# --- guide scheduling ----------------------------------------------------------------------------

@pytest.mark.parametrize("sampler,steps,interval,expected", [
    ("euler", 6, 2, (3, 3)),                  # guides at steps 0, 2, 4
    ("euler", 5, 5, (1, 4)),
    ("dpmpp_2s_ancestral", 4, 2, (2, 5)),     # 7 evaluations; the 3 midpoints are off-schedule: reuse
    ("heun", 3, 2, (2, 3)),                   # 5 evaluations; sigma_2 is evaluated twice, computed once
])
def test_guide_steps_follow_the_schedule(comfy, wan, caplog, sampler, steps, interval, expected):
    caplog.set_level(logging.INFO, logger="freeswim")
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"), interval=interval)
    caplog.clear()
    comfy.ksample(patched, LATENT, seed=1, steps=steps, sampler=sampler)
    assert cache_summaries(caplog) == [expected]


def test_cache_that_does_not_fit_runs_without_it_and_says_so(comfy, wan, caplog, monkeypatch):
    import psutil
    caplog.set_level(logging.INFO, logger="freeswim")
    no_cache = comfy.ksample(dual(comfy, windowed(comfy, wan), passes="cond"), LATENT, seed=6, steps=3)

    class Tiny:
        available = 1024
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    out = comfy.ksample(patched, LATENT, seed=6, steps=3)
    assert any("do not fit" in r.getMessage() for r in caplog.records)
    # ComfyUI also sees the tiny free memory and splits cond and uncond into separate calls,
    # so the comparison is numerical rather than bitwise
    assert rel_err(out, no_cache) < 1e-5


@pytest.mark.parametrize("precision,tol", [("bf16", 2e-2), ("fp8", 1e-1)])
def test_reduced_precision_cache_stays_close(comfy, wan, precision, tol):
    exact = comfy.ksample(cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond")), LATENT, seed=3, steps=4)
    reduced = comfy.ksample(cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"), precision=precision),
                            LATENT, seed=3, steps=4)
    err = rel_err(reduced, exact)
    assert 0 < err < tol


# --- wiring --------------------------------------------------------------------------------------

def test_nodes_apply_in_either_order(comfy, wan):
    a = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    b = windowed(comfy, dual(comfy, cache(comfy, wan), passes="cond"))
    assert torch.equal(comfy.ksample(a, LATENT, seed=5, steps=3), comfy.ksample(b, LATENT, seed=5, steps=3))


def test_dual_path_without_window_patch_says_so_and_passes_through(comfy, wan, caplog):
    caplog.set_level(logging.WARNING, logger="freeswim")
    out = comfy.ksample(dual(comfy, wan), LATENT, seed=5, steps=2)
    assert torch.equal(out, comfy.ksample(wan, LATENT, seed=5, steps=2))
    msgs = [r.getMessage() for r in caplog.records if "Dual-Path Override" in r.getMessage()]
    assert len(msgs) == 1 and "Add FreeSwim Window Attention Patch" in msgs[0]


def test_cache_without_dual_path_says_so(comfy, wan, caplog):
    caplog.set_level(logging.WARNING, logger="freeswim")
    out = comfy.ksample(cache(comfy, windowed(comfy, wan)), LATENT, seed=5, steps=2)
    assert torch.equal(out, comfy.ksample(windowed(comfy, wan), LATENT, seed=5, steps=2))
    assert any("no FreeSwim Dual-Path Override" in r.getMessage() for r in caplog.records)


def test_block_index_from_newer_builds_changes_nothing(comfy, wan):
    """Newer ComfyUI sets transformer_options['block_index'] per block; emulate it through
    ComfyUI's block-replace patches and check the result does not move."""
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    plain = comfy.ksample(patched, LATENT, seed=7, steps=3)
    indexed = patched.clone()
    for i in range(len(wan.model.diffusion_model.blocks)):
        def replace(args, extra, i=i):
            args["transformer_options"]["block_index"] = i
            return extra["original_block"](args)
        indexed.set_model_patch_replace(replace, "dit", "double_block", i)
    assert torch.equal(comfy.ksample(indexed, LATENT, seed=7, steps=3), plain)


def test_active_range_limits_the_dual_path(comfy, wan):
    window_only = comfy.ksample(windowed(comfy, wan), LATENT, seed=4, steps=4)
    full_range = comfy.ksample(dual(comfy, windowed(comfy, wan), passes="cond"), LATENT, seed=4, steps=4)
    late_only = comfy.ksample(dual(comfy, windowed(comfy, wan), passes="cond", start=0.5, end=1.0),
                              LATENT, seed=4, steps=4)
    assert not torch.equal(late_only, window_only) and not torch.equal(late_only, full_range)
    with pytest.raises(ValueError, match="start_percent"):
        dual(comfy, windowed(comfy, wan), start=0.6, end=0.2)


def test_dual_path_refuses_non_wan(comfy):
    from comfy.ldm.lightricks.model import LTXVModel
    from comfy.ops import disable_weight_init
    from comfy.sd import load_diffusion_model_state_dict
    ltx = LTXVModel(in_channels=128, cross_attention_dim=128, attention_head_dim=64, num_attention_heads=2,
                    num_layers=1, operations=disable_weight_init, device="cpu", dtype=torch.float32)
    model = load_diffusion_model_state_dict({k: torch.randn(v.shape) * 0.02 for k, v in ltx.state_dict().items()})
    with pytest.raises(ValueError, match="Dual-Path Override: the connected model is a LTXVModel"):
        dual(comfy, model)
