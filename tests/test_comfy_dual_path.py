"""Dual-Path Override and Cross-Attn Cache in the real ComfyUI host, tiny random Wan models.

Expected values come from a test-owned dual path (tests/reference.py) or from
invariances ComfyUI must not be able to break (batch order, call splitting,
repeated runs); cache scheduling is read from the run reports the pack publishes.
"""
import contextlib
import logging

import pytest
import torch

from reference import dual_path_reference, reference_scale

LATENT = torch.zeros(1, 16, 3, 24, 40)          # grid 3 x 12 x 20
GRID, WINDOW = (3, 12, 20), (7, 9)              # custom native 128 x 96 px
SCALE = reference_scale(128)


def node(comfy, name, model, **inputs):
    (out,) = comfy.run_node(name, model=model, **inputs)
    return out


def windowed(comfy, model, backend="chunked", attention_scale="reference", **kw):
    return node(comfy, "FreeSwimWindowAttentionPatch", model, native_size="custom", custom_width=128,
                custom_height=96, inward=True, attention_scale=attention_scale, backend=backend, **kw)


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


class Reports:
    """The run reports published from now on."""

    def __init__(self, comfy):
        self.run_state = comfy.pack_module("nodes.run_state")
        done = self.run_state.recent_reports()
        self.after = done[-1]["run"] if done else 0

    def all(self):
        return [r for r in self.run_state.recent_reports() if r["run"] > self.after]

    def cache_counts(self):
        return [(r["guide_calls"], r["reuse_calls"]) for r in self.all()]


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


@pytest.mark.parametrize("execution", ["batched", "sequential"])
@pytest.mark.parametrize("override_image", [False, True])
def test_i2v_image_cross_attention_override_option(comfy, override_image, execution):
    model = comfy.load_tiny_wan(i2v=True, in_dim=36, seed=33)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(1, 36, 3, 24, 40, generator=g)
    ctx = torch.randn(1, 512, 4096, generator=g)
    clip = torch.randn(1, 257, 1280, generator=g)
    ours_model = node(comfy, "FreeSwimDualPathOverride", windowed(comfy, model), passes="cond",
                      override_image_cross=override_image, start_percent=0.0, end_percent=1.0,
                      execution=execution)
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
    uc_first = _direct(comfy, patched, torch.cat([x, x]), [neg, pos], [1, 0], ["n", "p"], run=comfy.new_run())
    c_first = _direct(comfy, patched, torch.cat([x, x]), [pos, neg], [0, 1], ["p", "n"], run=comfy.new_run())
    run = comfy.new_run()
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


def test_two_models_in_one_graph_keep_separate_state(comfy, wan):
    """Wan2.2 A14B style: high-noise model for the first steps, low-noise model for the rest."""
    import nodes
    other = comfy.load_tiny_wan(seed=32)
    high = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    low = cache(comfy, dual(comfy, windowed(comfy, other), passes="cond"))
    pos, neg = comfy.text_conditioning(1), comfy.text_conditioning(2)

    def advanced(model, latent, start, end, add_noise):
        (out,) = nodes.common_ksampler(model, 5, 6, 5.0, "euler", "simple", pos, neg, {"samples": latent},
                                       disable_noise=not add_noise, start_step=start, last_step=end,
                                       force_full_denoise=end == 6)
        return out["samples"]

    reports = Reports(comfy)
    mid = advanced(high, LATENT, 0, 3, True)
    final = advanced(low, mid, 3, 6, False)
    # each run starts with a guide step of its own (steps 0, 2 of the high run; 3, 5 of the low run)
    assert reports.cache_counts() == [(2, 1), (2, 1)]
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
def test_guide_steps_follow_the_schedule(comfy, wan, sampler, steps, interval, expected):
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"), interval=interval)
    reports = Reports(comfy)
    comfy.ksample(patched, LATENT, seed=1, steps=steps, sampler=sampler)
    assert reports.cache_counts() == [expected]


def test_cache_that_does_not_fit_runs_without_it_and_says_so(comfy, wan, caplog, monkeypatch):
    import psutil
    caplog.set_level(logging.INFO, logger="freeswim")
    no_cache = comfy.ksample(dual(comfy, windowed(comfy, wan), passes="cond"), LATENT, seed=6, steps=3)

    class Tiny:
        available = 1024
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    reports = Reports(comfy)
    out = comfy.ksample(patched, LATENT, seed=6, steps=3)
    assert any("do not fit" in r.getMessage() for r in caplog.records)
    (report,) = reports.all()
    assert report["cache_off_reason"].endswith("do not fit in auto memory") and report["cache_storage"] is None
    # ComfyUI also sees the tiny free memory and splits cond and uncond into separate calls,
    # so the comparison is numerical rather than bitwise
    assert rel_err(out, no_cache) < 1e-5


def test_cfg_1_stores_only_the_conditional_pass(comfy, wan, monkeypatch):
    """At cfg 1 ComfyUI runs no unconditional pass, so a cond_and_uncond cache sizes one row's
    features per block (hand-computed: blocks x 720 tokens x dim x 4 bytes) and fits where two
    rows would not; at cfg 5 the same room is too small for both passes' features."""
    import psutil
    dm = wan.model.diffusion_model
    row = len(dm.blocks) * 720 * dm.dim * 4

    class Room:
        available = 2 * row          # one row fits beside the 25% headroom, two do not
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Room())
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond_and_uncond"))
    reports = Reports(comfy)
    comfy.ksample(patched, LATENT, seed=6, steps=3, cfg=1.0)
    comfy.ksample(patched, LATENT, seed=6, steps=3, cfg=5.0)
    basic_guider(comfy, patched, LATENT, steps=3)                 # no negative conditioning at all
    cfg1, cfg5, basic = reports.all()
    for report in (cfg1, basic):
        assert report["cache_storage"] is not None and not report["cache_off_reason"]
        assert report["cache_bytes"] == row and (report["guide_calls"], report["reuse_calls"]) == (2, 1)
    assert cfg5["cache_storage"] is None and cfg5["cache_off_reason"].endswith("do not fit in auto memory")


def basic_guider(comfy, model, latent, steps):
    """ComfyUI's BasicGuider (SamplerCustomAdvanced's positive-only guider), euler, simple schedule."""
    import comfy.samplers as samplers
    from comfy_extras.nodes_custom_sampler import Guider_Basic
    guider = Guider_Basic(model)
    guider.set_conds(comfy.text_conditioning(1))
    sigmas = samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    return guider.sample(noise, latent, samplers.sampler_object("euler"), sigmas, seed=0)


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


def test_dual_path_without_window_patch_is_an_error_when_sampling_starts(comfy, wan):
    """The nodes apply in any order, so the chain is checked when sampling starts; the error
    names the missing node, and the UI shows it (it is the sampler's error)."""
    with pytest.raises(ValueError, match="Dual-Path Override: this model has no FreeSwim Window Attention "
                                         "Patch.*Add FreeSwim Window Attention Patch") as err:
        comfy.ksample(dual(comfy, wan), LATENT, seed=5, steps=2)
    assert type(err.value).__module__ == "freeswim"


def test_cache_without_dual_path_is_an_error_when_sampling_starts(comfy, wan):
    with pytest.raises(ValueError, match="Cross-Attn Cache: this model has no Dual-Path Override.*"
                                         "Add Dual-Path Override"):
        comfy.ksample(cache(comfy, windowed(comfy, wan)), LATENT, seed=5, steps=2)
    # the same nodes, chained completely, sample
    assert comfy.ksample(cache(comfy, dual(comfy, windowed(comfy, wan))), LATENT, seed=5, steps=1).shape == LATENT.shape


def test_override_installed_after_freeswim_is_composed_as_if_set_before(comfy, wan, caplog):
    """A pass-through node that sets its own attention override after the FreeSwim nodes: FreeSwim
    still runs the window rows and the dual path and hands every other call (the twins' full
    attention, cross-attention) to that override, exactly as when it was set before them."""
    caplog.set_level(logging.INFO, logger="freeswim")
    seen = {"after": [], "before": []}

    def pass_through_node(model, order):
        def other_pack_override(func, *args, **kwargs):
            seen[order].append(args[0].shape[0])
            return func(*args, **kwargs)
        m = model.clone()
        m.model_options["transformer_options"]["optimized_attention_override"] = other_pack_override
        return m

    def freeswim(model):
        return cache(comfy, dual(comfy, windowed(comfy, model), passes="cond"))

    reports = Reports(comfy)
    after = comfy.ksample(pass_through_node(freeswim(wan), "after"), LATENT, seed=5, steps=2)
    before = comfy.ksample(freeswim(pass_through_node(wan, "before")), LATENT, seed=5, steps=2)
    assert torch.equal(after, before)
    assert seen["after"] and seen["after"] == seen["before"]                # the same calls reach it
    composed, _ = reports.all()
    assert composed["guide_calls"] == 1 and composed["reuse_calls"] == 1 and not composed["warnings"]
    said = [r.getMessage() for r in caplog.records if "was set after FreeSwim" in r.getMessage()]
    assert len(said) == 1 and "other_pack_override" in said[0]


def test_comfyui_attention_backend_node_in_either_order(comfy, wan):
    """ComfyUI 0.33's ModelAttentionBackend (it replaces the attention function, ignoring the one it
    is given) before or after the FreeSwim nodes: the same latent, FreeSwim on in both."""
    nodes = pytest.importorskip("comfy_extras.nodes_model_advanced")
    if not hasattr(nodes, "ModelAttentionBackend"):
        pytest.skip("this ComfyUI has no ModelAttentionBackend node")

    def backend(model):
        return nodes.ModelAttentionBackend().patch(model, "pytorch attention")[0]

    def freeswim(model):
        return dual(comfy, windowed(comfy, model))

    reports = Reports(comfy)
    after = comfy.ksample(backend(freeswim(wan)), LATENT, seed=6, steps=2)
    before = comfy.ksample(freeswim(backend(wan)), LATENT, seed=6, steps=2)
    assert rel_err(after, before) < 1e-6
    assert all(r["windowed_calls"] > 0 and r["dual_calls"] > 0 for r in reports.all())
    assert rel_err(after, comfy.ksample(backend(wan), LATENT, seed=6, steps=2)) > 1e-3


def test_a_later_override_that_keeps_and_calls_freeswims_is_not_run_twice(comfy, wan):
    """A well-behaved pack keeps the override it found (FreeSwim's) and calls it: composed, FreeSwim
    handles each call once and the result is FreeSwim's with that pack around it."""
    calls = []

    def chaining_node(model):
        m = model.clone()
        to = m.model_options["transformer_options"]
        previous = to["optimized_attention_override"]

        def chained(func, *args, **kwargs):
            calls.append(args[0].shape[0])
            return previous(func, *args, **kwargs)
        to["optimized_attention_override"] = chained
        return m

    freeswim = dual(comfy, windowed(comfy, wan))
    assert torch.equal(comfy.ksample(chaining_node(freeswim), LATENT, seed=7, steps=2),
                       comfy.ksample(freeswim, LATENT, seed=7, steps=2))
    assert calls


def _own_self_attention(model, blocks):
    """A test-local pack that computes these blocks' self-attention itself, as raylight's sequence
    parallelism replaces Wan's: the block's ``self_attn.forward`` runs without the override slot."""
    m = model.clone()
    for i in blocks:
        original = m.get_model_object(f"diffusion_model.blocks.{i}.self_attn").forward

        def forward(x, freqs, transformer_options={}, _original=original, **kwargs):
            return _original(x, freqs, transformer_options={})
        m.add_object_patch(f"diffusion_model.blocks.{i}.self_attn.forward", forward)
    return m


@pytest.mark.parametrize("blocks", [(1,), (0, 1)])
def test_self_attention_that_never_reaches_freeswim_is_reported_once(comfy, wan, caplog, blocks):
    """Hooks installed, a grid above the native size, and some blocks' self-attention computed by
    another patch: the run report names those blocks and one warning says what likely happened.
    The blocks' attention is indeed the plain one: the output equals the window reference with
    exactly those blocks unwindowed."""
    caplog.set_level(logging.WARNING, logger="freeswim")
    reports = Reports(comfy)
    out = comfy.ksample(windowed(comfy, _own_self_attention(wan, blocks)), LATENT, seed=5, steps=2)
    (report,) = reports.all()
    assert report["unreached_blocks"] == list(blocks)
    said = [r.getMessage() for r in caplog.records if "never reached FreeSwim" in r.getMessage()]
    assert len(said) == 1 and f"{len(blocks)} of the model's 2 blocks" in said[0]
    # it names what sits there and the fix
    assert "blocks.N.self_attn.forward = " in said[0] and "_own_self_attention" in said[0]
    assert "remove it from this model's chain" in said[0]
    assert said[0] in report["warnings"]
    if blocks == (0, 1):                  # nothing windowed at all: the plain model's output
        assert torch.equal(out, comfy.ksample(wan, LATENT, seed=5, steps=2))
    else:
        assert rel_err(out, comfy.ksample(wan, LATENT, seed=5, steps=2)) > 1e-3


def _said_unreached(caplog):
    return [r.getMessage() for r in caplog.records if "never reached FreeSwim" in r.getMessage()]


def test_every_block_reaching_freeswim_says_nothing(comfy, wan, caplog):
    caplog.set_level(logging.WARNING, logger="freeswim")
    reports = Reports(comfy)
    comfy.ksample(cache(comfy, dual(comfy, windowed(comfy, wan), execution="sequential")), LATENT, seed=5, steps=2)
    (report,) = reports.all()
    assert report["unreached_blocks"] == [] and report["windowed_calls"] > 0
    assert not _said_unreached(caplog)


def test_blocks_that_do_not_run_at_all_are_not_called_unreached(comfy, wan, caplog):
    """ComfyUI's EasyCache skips every block on its cache hits: nothing ran, nothing is said."""
    from comfy_extras.nodes_easycache import EasyCacheNode
    caplog.set_level(logging.WARNING, logger="freeswim")
    out = EasyCacheNode.execute(model=windowed(comfy, wan), reuse_threshold=3.0, start_percent=0.0,
                                end_percent=1.0, verbose=False)
    reports = Reports(comfy)
    comfy.ksample(out.result[0] if hasattr(out, "result") else out[0], LATENT, seed=5, steps=8)
    (report,) = reports.all()
    assert report["windowed_calls"] > 0 and report["unreached_blocks"] == []
    assert not _said_unreached(caplog)


def test_block_replacement_set_before_freeswim_is_kept_and_both_apply(comfy, wan):
    """Another node's replacement of a block (set before the FreeSwim nodes) is called by FreeSwim's;
    the result equals the test-owned dense reference with that same replacement."""
    from reference import window_override
    seen = []

    def damp_block_1(args, extra):
        seen.append(args["img"].shape[0])
        out = extra["original_block"](args)
        return {**out, "img": args["img"] + 0.5 * (out["img"] - args["img"])}

    def with_damping(model):
        m = model.clone()
        m.set_model_patch_replace(damp_block_1, "dit", "double_block", 1)
        return m

    ours = comfy.ksample(windowed(comfy, with_damping(wan)), LATENT, seed=8, steps=2)
    ref_model = with_damping(wan)
    ref_model.model_options["transformer_options"]["optimized_attention_override"] = \
        window_override(GRID, WINDOW, SCALE)
    ref = comfy.ksample(ref_model, LATENT, seed=8, steps=2)
    assert seen, "the earlier replacement must be called"
    assert rel_err(ours, ref) < 1e-4
    assert rel_err(comfy.ksample(windowed(comfy, wan), LATENT, seed=8, steps=2), ref) > 1e-3


@pytest.mark.parametrize("execution", ["batched", "sequential"])
def test_handoff_holds_one_block_at_a_time(comfy, wan, execution):
    """The twins' cross-attention output handed to the window rows exists for one block at a time:
    its peak is one block's [twin rows x tokens x dim], not blocks times that."""
    reports = Reports(comfy)
    comfy.ksample(dual(comfy, windowed(comfy, wan), passes="cond", execution=execution), LATENT, seed=2, steps=2)
    (report,) = reports.all()
    dm = wan.model.diffusion_model
    one_block = 1 * (3 * 12 * 20) * dm.dim * 4          # one conditional twin, float32
    assert len(dm.blocks) >= 2 and report["handoff_peak_bytes"] == one_block
    assert report["execution"] == execution and report["dual_calls"] >= 2


def test_block_replacement_set_after_freeswim_changes_nothing(comfy, wan, caplog):
    """A node that replaces blocks after the FreeSwim nodes (here: one that sets block_index as
    current ComfyUI does) takes FreeSwim's block runs away: those blocks are placed by shape, with
    a warning, and the result does not move."""
    caplog.set_level(logging.WARNING, logger="freeswim")
    patched = cache(comfy, dual(comfy, windowed(comfy, wan), passes="cond"))
    plain = comfy.ksample(patched, LATENT, seed=7, steps=3)
    indexed = patched.clone()
    for i in range(len(wan.model.diffusion_model.blocks)):
        def replace(args, extra, i=i):
            args["transformer_options"]["block_index"] = i
            return extra["original_block"](args)
        indexed.set_model_patch_replace(replace, "dit", "double_block", i)
    assert torch.equal(comfy.ksample(indexed, LATENT, seed=7, steps=3), plain)
    assert any("replaced FreeSwim's run of blocks [0, 1]" in r.getMessage() for r in caplog.records)
    assert not _said_unreached(caplog)          # their attention still reaches FreeSwim


def test_active_range_limits_the_dual_path(comfy, wan):
    window_only = comfy.ksample(windowed(comfy, wan), LATENT, seed=4, steps=4)
    full_range = comfy.ksample(dual(comfy, windowed(comfy, wan), passes="cond"), LATENT, seed=4, steps=4)
    late_only = comfy.ksample(dual(comfy, windowed(comfy, wan), passes="cond", start=0.5, end=1.0),
                              LATENT, seed=4, steps=4)
    assert not torch.equal(late_only, window_only) and not torch.equal(late_only, full_range)
    with pytest.raises(ValueError, match="start_percent"):
        dual(comfy, windowed(comfy, wan), start=0.6, end=0.2)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 9.0])
def test_percents_mean_the_sigmas_comfyui_flow_models_give(comfy, shift):
    """The core's percent-to-sigma (which the diffusers adapter uses) is the host's own, so a
    start/end percent means the same point of the schedule in both hosts."""
    from comfy.model_sampling import CONST, ModelSamplingDiscreteFlow

    from freeswim_core.dual import flow_sigma_at_percent

    class Flow(ModelSamplingDiscreteFlow, CONST):
        pass

    sampling = Flow(type("Config", (), {"sampling_settings": {"shift": shift, "multiplier": 1000}})())
    for percent in (0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0):
        assert flow_sigma_at_percent(percent, shift) == pytest.approx(float(sampling.percent_to_sigma(percent)),
                                                                      rel=1e-6, abs=1e-9)


def test_dual_path_refuses_an_unsupported_model_family(comfy):
    with pytest.raises(ValueError, match="Dual-Path Override: the connected model is a HunyuanVideo"):
        dual(comfy, comfy.load_tiny_hunyuan_video())


def test_comfyui_skip_layer_guidance_and_freeswim_both_apply(comfy, wan, caplog):
    """ComfyUI's SkipLayerGuidanceDiT replaces a block in its extra guidance call; FreeSwim's runs
    of the other blocks stay. The result equals SLG on the test-owned dense window reference, and
    the skipped block is not reported as unreached (it did not run)."""
    caplog.set_level(logging.WARNING, logger="freeswim")
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT
    from reference import window_override

    def slg(model):
        return SkipLayerGuidanceDiT.execute(model=model, scale=3.0, start_percent=0.0, end_percent=1.0,
                                            double_layers="1", single_layers="", rescaling_scale=0.0).result[0]

    ref_model = wan.clone()
    ref_model.model_options["transformer_options"]["optimized_attention_override"] = \
        window_override(GRID, WINDOW, SCALE)
    ref = comfy.ksample(slg(ref_model), LATENT, seed=4, steps=2)
    ours = comfy.ksample(slg(windowed(comfy, wan)), LATENT, seed=4, steps=2)
    assert rel_err(ours, ref) < 1e-4
    assert rel_err(comfy.ksample(windowed(comfy, wan), LATENT, seed=4, steps=2), ref) > 1e-3   # SLG acted
    assert rel_err(comfy.ksample(slg(wan), LATENT, seed=4, steps=2), ref) > 1e-3               # FreeSwim acted
    assert not _said_unreached(caplog)


@pytest.mark.parametrize("variant", ["t2v", "vace"])
def test_memory_is_reused_only_where_the_host_drops_it(comfy, variant):
    """Sequential execution writes each half's block output into the block's input, and the
    attention writes over its queries, only where the host's own code drops those tensors. VACE
    keeps the first block's input for its own blocks: there the sequential result must still be
    the batched one."""
    host_blocks = comfy.pack_module("nodes.families.wan")
    model = comfy.load_tiny_wan(vace_layers=1 if variant == "vace" else 0, seed=41)
    dm = model.model.diffusion_model
    assert host_blocks.host_frees_block_inputs(dm) == (variant == "t2v")
    assert host_blocks.host_frees_queries(dm)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 16, 3, 24, 40, generator=g)
    ctx = torch.randn(1, 512, 4096, generator=g)
    extra = ({"vace_context": torch.randn(1, 1, 96, 3, 24, 40, generator=g), "vace_strength": [1.0]}
             if variant == "vace" else {})
    outs = {}
    for execution in ("batched", "sequential"):
        patched = dual(comfy, windowed(comfy, model), passes="cond", execution=execution)
        to = comfy.sampling_options(patched, cond_or_uncond=[0], uuids=["c"], sigma=0.8, sample_sigmas=[0.8, 0.0])
        with torch.inference_mode():
            outs[execution] = dm(x, torch.full((1,), 800.0), ctx, transformer_options=to, **extra)
    assert rel_err(outs["sequential"], outs["batched"]) < 1e-5


def test_token_major_patch_embedding_is_the_convolution(comfy):
    """The patch embedding's output, computed over slices of frames into token-major memory, is
    the host convolution's output, and the host's token view of it is contiguous (no copy at the
    first block)."""
    pe = comfy.pack_module("nodes.patch_embedding")
    model = comfy.load_tiny_wan(seed=42)
    conv = model.model.diffusion_model.patch_embedding
    x = torch.randn(2, 16, 5, 24, 40, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        expected = type(conv).forward(conv, x)
        old = pe.SLICE_BUDGET
        try:
            pe.SLICE_BUDGET = 1                      # one frame per slice
            got = pe.TokenMajorPatchEmbedding(conv)(x)
        finally:
            pe.SLICE_BUDGET = old
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-6 * expected.abs().max().item()
    tokens = got.to(torch.bfloat16).flatten(2).transpose(1, 2)
    assert tokens.is_contiguous() and not expected.flatten(2).transpose(1, 2).is_contiguous()


def test_auto_execution_follows_the_memory_plan(comfy, wan, monkeypatch):
    """execution auto: batched while the planned call fits what the device has free, sequential
    when only that fits, and a warning naming the shortfall when neither does. The run report
    carries the plan."""
    memory = comfy.pack_module("nodes.planning")
    latent = torch.zeros(1, 16, 3, 24, 40)
    model = dual(comfy, windowed(comfy, wan), passes="cond", execution="auto")
    monkeypatch.setattr(memory, "free_device_bytes", lambda device: 10**15)
    roomy = comfy.ksample(model, latent, seed=2, steps=2)
    report = comfy.last_report()
    assert report["execution"] == "batched" and report["memory"]["execution"] == "batched"
    plan = report["memory"]
    # ComfyUI batches cond and uncond on the CPU: two rows and the conditional row's twin
    assert plan["grid"] == list(GRID) and plan["rows"] == 3 and plan["fits_free"]
    assert plan["peak_bytes"] == max(plan["phases"].values())
    batched_needs = plan["activation_bytes"]

    monkeypatch.setattr(memory, "free_device_bytes", lambda device: batched_needs - 1)
    tight = comfy.ksample(model, latent, seed=2, steps=2)
    report = comfy.last_report()
    assert report["execution"] == "sequential" and report["memory"]["fits_free"]
    assert report["memory"]["activation_bytes"] < batched_needs
    assert rel_err(tight, roomy) < 1e-5
    assert not report["warnings"]

    monkeypatch.setattr(memory, "free_device_bytes", lambda device: 1)
    comfy.ksample(model, latent, seed=2, steps=2)
    report = comfy.last_report()
    assert report["execution"] == "sequential" and not report["memory"]["fits_free"]
    assert any("GB are free" in w and "Dual-Path Override" in w for w in report["warnings"])


def test_a_node_that_replaces_the_cross_attention_keeps_its_queries(comfy):
    """A node that object-patches a block's ``cross_attn.forward`` (as guidance nodes do) may call
    attention twice with the same q: FreeSwim must not write its output over that q, nor over the
    self-attention's queries of a module whose forward it does not know."""
    import comfy.ldm.modules.attention as attention
    host_blocks = comfy.pack_module("nodes.families.wan")
    model = comfy.load_tiny_wan(seed=43)
    dm = model.model.diffusion_model
    assert host_blocks.host_frees_queries(dm)
    changed = []

    def make_forward(module):
        def forward(x, context, transformer_options={}, **kwargs):
            q = module.norm_q(module.q(x))
            k, v = module.norm_k(module.k(context)), module.v(context)
            before = q.clone()
            first = attention.optimized_attention(q, k, v, heads=module.num_heads,
                                                  transformer_options=transformer_options)
            changed.append((q - before).abs().max().item())
            second = attention.optimized_attention(q, k, v, heads=module.num_heads,
                                                   transformer_options=transformer_options)
            return module.o(first + second)
        return forward

    patched = dual(comfy, windowed(comfy, model), passes="cond", execution="sequential")
    for i, block in enumerate(dm.blocks):
        patched.add_object_patch(f"diffusion_model.blocks.{i}.cross_attn.forward", make_forward(block.cross_attn))
    comfy.ksample(patched, LATENT, seed=1, steps=1)
    assert changed and max(changed) == 0.0
    assert not host_blocks.host_frees_queries(dm)       # ComfyUI keeps the patch applied while loaded


def test_block_tables_do_not_outlive_the_run(comfy, wan):
    """The window backend's BlockMask tables (up to 1.8 GB on a GPU at 4K) are dropped when the
    sampling run ends, interrupted or not."""
    flex = comfy.pack_module("freeswim_core.attention.flex")
    geometry = comfy.pack_module("freeswim_core.geometry")
    flex.window_block_mask(geometry.TokenGrid(3, 12, 20), geometry.Window(7, 9), True, "cpu")
    assert flex._cached_block_mask.cache_info().currsize == 1
    comfy.ksample(windowed(comfy, wan), LATENT, seed=1, steps=1)
    assert flex._cached_block_mask.cache_info().currsize == 0


def test_flex_compiles_one_graph_per_grid_over_sampling_runs(comfy, wan):
    """Cond and uncond, twin rows, guide and reuse steps, batch sizes 1 and 2, two softmax scales,
    two grids: the flex kernel compiles one graph per grid (dynamo's own cache of the pack's kernel
    is counted), and sampling gives the chunked backend's result."""
    import torch._dynamo
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    flex = comfy.pack_module("freeswim_core.attention.flex")
    torch._dynamo.reset()
    flex._graph_keys.clear()
    runs = [(LATENT, "reference"), (torch.zeros(2, 16, 2, 28, 36), "reference"),    # grids 3x12x20, 2x14x18
            (torch.zeros(2, 16, 3, 24, 40), "none")]
    for seed, (latent, scale) in enumerate(runs):
        got = comfy.ksample(cache(comfy, dual(comfy, windowed(comfy, wan, "flex", scale))), latent,
                            seed=seed, steps=3, cfg=5.0)
        ref = comfy.ksample(cache(comfy, dual(comfy, windowed(comfy, wan, "chunked", scale))), latent,
                            seed=seed, steps=3, cfg=5.0)
        assert rel_err(got, ref) < 1e-4
    assert len(_debug_get_cache_entry_list(flex._window_kernel.__code__)) == 2


class _PackReads(torch.overrides.TorchFunctionMode):
    """Counts tensor values read to the host (a device sync on a GPU) by the pack's own code."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
             torch.Tensor.__bool__, torch.Tensor.__index__}

    def __init__(self, roots):
        super().__init__()
        self.roots = tuple(str(r) for r in roots)
        self.sites = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            import sys
            frame = sys._getframe(1)
            while frame is not None and "/torch/" in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(self.roots):
                self.sites.append(f"{frame.f_code.co_filename}:{frame.f_lineno}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("steps,inference", [(4, False), (6, True)])
def test_the_pack_reads_device_values_once_per_step(comfy, wan, steps, inference):
    """On a GPU every value read to the host waits for the queued kernels. Over a whole run with
    the cache (guide and reuse steps, cond and uncond), the pack's own code reads the sigma once per
    step and the schedule once, whatever the number of blocks, calls or steps (also in inference
    mode, as ComfyUI's server samples: inference tensors keep no version counter)."""
    from pathlib import Path
    root = Path(comfy.pack_module("nodes").__file__).parent.parent      # as the host imported it
    counter = _PackReads([root / "nodes", root / "freeswim_core"])
    patched = cache(comfy, dual(comfy, windowed(comfy, wan)), interval=2)
    with counter, (torch.inference_mode() if inference else contextlib.nullcontext()):
        comfy.ksample(patched, LATENT, seed=1, steps=steps, cfg=5.0)
    assert len(counter.sites) <= steps + 1, counter.sites
