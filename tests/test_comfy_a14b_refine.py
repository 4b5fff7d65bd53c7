"""Latent Upscale Refine with the two experts of a Wan2.2 A14B pair, in the real ComfyUI host.

The reference is what ComfyUI's own Wan2.2 templates do: the latent upscaled by ComfyUI's
LatentUpscale node, then two KSamplerAdvanced nodes over one schedule, the high-noise expert
first (noise added, leftover noise returned), the low-noise expert for the rest (no noise
added). The switch step is worked out here from ComfyUI's own schedule. The experts are two
different random-weight Wan models of one architecture, each with the FreeSwim nodes applied.
"""
import logging

import pytest
import torch

NODE = "FreeSwimLatentUpscaleRefine"
NATIVE = torch.randn(1, 16, 3, 12, 16, generator=torch.Generator().manual_seed(0))   # 128x96 px, 9 frames
STEPS, SEED, SHIFT, CFG = 10, 3, 9.0, 5.0


@pytest.fixture(scope="module")
def experts(comfy):
    """(high-noise, low-noise): different weights, one architecture."""
    return comfy.load_tiny_wan(seed=51), comfy.load_tiny_wan(seed=52)


def freeswim(comfy, model, interval=2):
    """Window attention (a 7 x 9 token window on the refine's 10 x 12 grid), dual path, cache."""
    (m,) = comfy.run_node("FreeSwimWindowAttentionPatch", model=model, native_size="custom", custom_width=128,
                          custom_height=96, inward=True, attention_scale="reference", backend="auto")
    (m,) = comfy.run_node("FreeSwimDualPathOverride", model=m, passes="cond", override_image_cross=False,
                          start_percent=0.0, end_percent=1.0, execution="auto")
    (m,) = comfy.run_node("FreeSwimCrossAttnCache", model=m, guide_interval=interval, storage="auto",
                          precision="model")
    return m


def refine(comfy, low, high=None, *, strength=0.7, boundary=0.0):
    """The node as the executor runs it; returns (latent, the phases it reports in its UI output)."""
    import harness.inprocess as host
    cls = host.node_class(NODE)
    with torch.inference_mode():
        out = cls.execute(model=low, positive=comfy.text_conditioning(1), negative=comfy.text_conditioning(2),
                          latent={"samples": NATIVE}, width=192, height=160, scale_by=0.0, upscale_path="latent",
                          resize_method="bilinear", strength=strength, steps=STEPS, cfg=CFG, sampler_name="euler",
                          scheduler="simple", shift=SHIFT, seed=SEED, model_high_noise=high, boundary=boundary)
    return out.result[0]["samples"], out.ui["freeswim_refine"][0]


def schedule(model) -> list[float]:
    """ComfyUI's own sigmas for the refine's schedule (flow shift 9, simple, 10 steps)."""
    import comfy.samplers
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    (shifted,) = ModelSamplingSD3().patch(model, SHIFT)
    return [float(s) for s in comfy.samplers.calculate_sigmas(shifted.get_model_object("model_sampling"),
                                                              "simple", STEPS)]


def chain(comfy, high, low, first, switch):
    """LatentUpscale, then KSamplerAdvanced(high, steps first..switch) -> KSamplerAdvanced(low, switch..end)."""
    import nodes
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    (up,) = nodes.LatentUpscale().upscale({"samples": NATIVE}, "bilinear", 192, 160, "disabled")
    pos, neg = comfy.text_conditioning(1), comfy.text_conditioning(2)
    adv = nodes.KSamplerAdvanced()
    (high_s,) = ModelSamplingSD3().patch(high, SHIFT)
    (low_s,) = ModelSamplingSD3().patch(low, SHIFT)
    with torch.inference_mode():
        (mid,) = adv.sample(high_s, "enable", SEED, STEPS, CFG, "euler", "simple", pos, neg, up, first, switch,
                            "enable")
        (out,) = adv.sample(low_s, "disable", SEED, STEPS, CFG, "euler", "simple", pos, neg, mid, switch, 10000,
                            "disable")
    return out["samples"]


def test_two_experts_equal_comfyuis_two_ksampler_advanced_chain(comfy, experts):
    """Strength 0.7 of 10 steps runs steps 3-9; a boundary between the sigmas of steps 4 and 5 gives
    steps 3 and 4 to the high-noise expert and 5-9 to the low-noise one."""
    high, low = freeswim(comfy, experts[0]), freeswim(comfy, experts[1])
    sigmas = schedule(low)
    boundary = (sigmas[4] + sigmas[5]) / 2
    got, phases = refine(comfy, low, high, boundary=boundary)
    assert phases["experts"] == {"boundary": boundary, "high_noise_steps": 2, "low_noise_steps": 5}
    expected = chain(comfy, high, low, first=3, switch=5)
    assert got.shape == (1, 16, 3, 20, 24)
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    alone, _ = refine(comfy, low)                                 # the high-noise expert made a difference
    assert (alone - got).abs().max().item() > 1e-3


def test_auto_boundary_is_wan22s_own_for_t2v(comfy, experts):
    """0 (auto) on a T2V pair is Wan2.2's 0.875: the steps of the refine that start at or above it,
    counted here on ComfyUI's schedule, run the high-noise expert."""
    high, low = experts
    sigmas = schedule(low)
    switch = 3 + sum(1 for s in sigmas[3:STEPS] if s >= 0.875)
    assert 3 < switch < STEPS                                     # the switch falls inside the refine
    got, phases = refine(comfy, low, high)
    assert phases["experts"]["boundary"] == 0.875 and phases["experts"]["high_noise_steps"] == switch - 3
    expected = chain(comfy, high, low, first=3, switch=switch)
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_the_cache_starts_again_with_the_low_noise_expert(comfy, experts):
    """Each expert's steps are a sampling run of their own: FreeSwim's state, the cache included,
    is new for the low-noise expert, whose first step is a guide step. Strength 0.8 runs steps 2-9;
    a boundary between steps 4 and 5 gives 3 steps to the high-noise expert (guide, reuse, guide)
    and 5 to the low-noise one (guide, reuse, guide, reuse, guide: 3 guides where a count carried
    over from the first run would start on a reuse and give 2)."""
    import harness.inprocess as host
    high, low = freeswim(comfy, experts[0]), freeswim(comfy, experts[1])
    sigmas = schedule(low)
    refine(comfy, low, high, strength=0.8, boundary=(sigmas[4] + sigmas[5]) / 2)
    first, second = host.pack_module("nodes.run_state").recent_reports()[-2:]
    assert second["run"] == first["run"] + 1
    assert (first["model_calls"], first["guide_calls"], first["reuse_calls"]) == (3, 2, 1)
    assert (second["model_calls"], second["guide_calls"], second["reuse_calls"]) == (5, 3, 2)


def single(comfy, model, first):
    """LatentUpscale, then one KSamplerAdvanced from step ``first`` to the end."""
    import nodes
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    (up,) = nodes.LatentUpscale().upscale({"samples": NATIVE}, "bilinear", 192, 160, "disabled")
    (shifted,) = ModelSamplingSD3().patch(model, SHIFT)
    with torch.inference_mode():
        (out,) = nodes.KSamplerAdvanced().sample(shifted, "enable", SEED, STEPS, CFG, "euler", "simple",
                                                 comfy.text_conditioning(1), comfy.text_conditioning(2), up,
                                                 first, 10000, "disable")
    return out["samples"]


def test_one_model_or_a_boundary_above_the_schedule_is_the_one_model_refine(comfy, experts):
    high, low = experts
    alone, phases = refine(comfy, low)
    assert "experts" not in phases
    expected = single(comfy, low, first=3)
    assert (alone - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    above, phases = refine(comfy, low, high, boundary=0.99)       # every sigma of the refine is below 0.99
    assert phases["experts"]["high_noise_steps"] == 0 and torch.equal(above, alone)


@pytest.mark.parametrize("boundary", [1.0, 1.5, -0.1, float("nan")])
def test_a_boundary_outside_0_1_is_refused_naming_the_node(comfy, experts, boundary):
    from harness.inprocess import pack_module
    errors = pack_module("nodes.errors")
    with pytest.raises(errors.InvalidInput, match="Latent Upscale Refine: boundary"):
        refine(comfy, experts[1], experts[0], boundary=boundary)


@pytest.mark.parametrize("other", [dict(layers=3), dict(i2v=True, in_dim=36)], ids=["size", "t2v-with-i2v"])
def test_experts_of_different_architectures_are_refused_before_any_work(comfy, experts, other):
    from harness.inprocess import pack_module
    errors = pack_module("nodes.errors")
    runs = len(pack_module("nodes.run_state").recent_reports())
    stranger = comfy.load_tiny_wan(seed=53, **other)
    with pytest.raises(errors.InvalidInput, match="not the two experts of one Wan2.2 A14B pair"):
        refine(comfy, experts[1], stranger)
    assert len(pack_module("nodes.run_state").recent_reports()) == runs


def test_one_expert_without_freeswim_is_said(comfy, experts, caplog):
    with caplog.at_level(logging.WARNING, logger="freeswim"):
        refine(comfy, freeswim(comfy, experts[1]), experts[0], boundary=0.99)
    assert any("model_high_noise has no FreeSwim patch" in r.getMessage() for r in caplog.records)


def test_auto_boundary_for_a_wan22_i2v_pair_is_0_9(comfy):
    """Wan2.2's I2V experts take 36 input channels without CLIP image layers (ComfyUI builds them as
    "t2v" with in_dim 36); their boundary is Wan2.2's 0.9. Sampled with a start image's latent."""
    high, low = comfy.load_tiny_wan(seed=61, in_dim=36), comfy.load_tiny_wan(seed=62, in_dim=36)
    assert low.model.diffusion_model.model_type == "t2v"
    sigmas = schedule(low)
    import harness.inprocess as host
    image = torch.randn(1, 16, 3, 12, 16, generator=torch.Generator().manual_seed(7))
    mask = torch.zeros(1, 4, 3, 12, 16)
    cond = [[c, {"concat_latent_image": image, "concat_mask": mask}] for c, _ in comfy.text_conditioning(1)]
    uncond = [[c, {"concat_latent_image": image, "concat_mask": mask}] for c, _ in comfy.text_conditioning(2)]
    with torch.inference_mode():
        out = host.node_class(NODE).execute(
            model=low, positive=cond, negative=uncond, latent={"samples": NATIVE}, width=192, height=160,
            scale_by=0.0, upscale_path="latent", resize_method="bilinear", strength=0.7, steps=STEPS, cfg=CFG,
            sampler_name="euler", scheduler="simple", shift=SHIFT, seed=SEED, model_high_noise=high, boundary=0.0)
    experts = out.ui["freeswim_refine"][0]["experts"]
    assert experts["boundary"] == 0.9
    assert experts["high_noise_steps"] == sum(1 for s in sigmas[3:STEPS] if s >= 0.9)
    assert out.result[0]["samples"].shape == (1, 16, 3, 20, 24)
