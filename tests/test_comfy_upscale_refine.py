"""Latent Upscale Refine in the real ComfyUI host: equal to the chain of core nodes it replaces."""
import pytest
import torch

NODE = "FreeSwimLatentUpscaleRefine"
NATIVE = torch.randn(1, 16, 3, 12, 16, generator=torch.Generator().manual_seed(0))   # 128x96 px, 9 frames


@pytest.fixture(scope="module")
def wan(comfy):
    return comfy.load_tiny_wan(seed=41)


@pytest.fixture(scope="module")
def vae(comfy):
    import comfy.sd
    from harness.tiny_wan import tiny_wan_vae_state_dict
    return comfy.sd.VAE(sd=tiny_wan_vae_state_dict(dim=8, seed=5))


def refine(comfy, model, latent, vae=None, **kw):
    inputs = dict(positive=comfy.text_conditioning(1), negative=comfy.text_conditioning(2),
                  width=192, height=160, scale_by=0.0, upscale_path="latent", resize_method="bilinear",
                  strength=0.5, steps=10, cfg=5.0, sampler_name="euler", scheduler="simple", shift=9.0, seed=3)
    inputs.update(kw)
    (out,) = comfy.run_node(NODE, model=model, latent={"samples": latent}, vae=vae, **inputs)
    return out["samples"]


def core_chain(comfy, model, up, *, steps=5, denoise=0.5, seed=3, positive=None):
    """ModelSamplingSD3 -> KSampler(denoise) on an already upscaled latent, with ComfyUI's own nodes."""
    import nodes
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    (shifted,) = ModelSamplingSD3().patch(model, 9.0)
    (out,) = nodes.common_ksampler(shifted, seed, steps, 5.0, "euler", "simple",
                                   positive or comfy.text_conditioning(1), comfy.text_conditioning(2),
                                   {"samples": up}, denoise=denoise)
    return out["samples"]


def test_latent_path_equals_core_nodes(comfy, wan):
    import nodes
    got = refine(comfy, wan, NATIVE)
    (up,) = nodes.LatentUpscale().upscale({"samples": NATIVE}, "bilinear", 192, 160, "disabled")
    expected = core_chain(comfy, wan, up["samples"])            # 10 steps x 0.5 = the last 5 run
    assert got.shape == (1, 16, 3, 20, 24)
    assert torch.equal(got, expected)


def test_pixel_path_equals_core_nodes(comfy, wan, vae):
    import nodes
    got = refine(comfy, wan, NATIVE, vae=vae, upscale_path="pixel")
    (frames,) = nodes.VAEDecode().decode(vae, {"samples": NATIVE})
    (frames,) = nodes.ImageScale().upscale(frames, "bilinear", 192, 160, "disabled")
    (up,) = nodes.VAEEncode().encode(vae, frames)
    assert torch.equal(got, core_chain(comfy, wan, up["samples"]))


def test_pixel_path_tiles_in_space_when_memory_is_short(comfy, wan, vae, monkeypatch):
    """With a budget below the whole frame, the VAE runs in spatial tiles, every frame at once."""
    tiles = comfy.pack_module("nodes.vae_tiles")
    plan_mod = comfy.pack_module("freeswim_core.memory.vae")
    plain = refine(comfy, wan, NATIVE, vae=vae, upscale_path="pixel", steps=2)
    monkeypatch.setattr(plan_mod, "MIN_TILE", 64)
    monkeypatch.setattr(plan_mod, "TILE_STEP", 32)
    monkeypatch.setattr(plan_mod, "MIN_OVERLAP", 16)
    traits = tiles.vae_traits(vae)
    budget = int(max(plan_mod.vae_call_bytes("decode", 64, 64, 9, **traits),
                     plan_mod.vae_call_bytes("encode", 96, 96, 9, **traits)) * 1.1) + 1
    monkeypatch.setattr(tiles, "vae_budget_bytes", lambda v: budget)
    with torch.inference_mode():
        res = comfy.node_class(NODE).execute(
            model=wan, latent={"samples": NATIVE}, vae=vae, positive=comfy.text_conditioning(1),
            negative=comfy.text_conditioning(2), width=192, height=160, scale_by=0.0, upscale_path="pixel",
            resize_method="bilinear", strength=0.5, steps=2, cfg=5.0, sampler_name="euler", scheduler="simple",
            shift=9.0, seed=3)
    tiled = res.result[0]["samples"]
    assert tiled.shape == plain.shape and torch.isfinite(tiled).all()
    decode_plan, encode_plan = res.ui["freeswim_refine"][0]["vae"]
    for plan, (w, h) in ((decode_plan, (128, 96)), (encode_plan, (192, 160))):
        assert plan["tile"] is not None and plan["tiles"] > 1 and plan["fits"]     # tiled, and it fits
        assert (plan["width"], plan["height"]) == (w, h) and plan["frames"] == 9   # every frame in one piece
        assert plan["tile"][0] < w or plan["tile"][1] < h


def test_scale_factor_and_reference_step_count(comfy, wan):
    out = refine(comfy, wan, NATIVE, width=16, height=16, scale_by=1.5)        # 128x96 -> 192x144
    assert out.shape == (1, 16, 3, 18, 24)


def test_sizes_off_the_grid_are_rejected_with_nearest_valid(comfy, wan):
    with pytest.raises(ValueError, match=r"1080 -> 1072 or 1088"):
        refine(comfy, wan, NATIVE, width=1920, height=1080)
    with pytest.raises(ValueError, match=r"not a multiple of 16 px"):
        refine(comfy, wan, NATIVE, scale_by=1.1)


def test_pixel_path_without_vae_names_the_fix(comfy, wan):
    with pytest.raises(ValueError, match="Connect the model's VAE to the vae input, or set upscale_path to latent"):
        refine(comfy, wan, NATIVE, upscale_path="pixel")


def test_image_latent_is_rejected(comfy, wan):
    with pytest.raises(ValueError, match="expected a video latent"):
        refine(comfy, wan, torch.zeros(1, 16, 12, 16))


def test_i2v_conditioning_follows_the_target_size(comfy, vae):
    """WanImageToVideo puts the start image latent into the conditioning at native size; the refine
    pass must feed it to the model at the target size."""
    from comfy_extras.nodes_wan import WanImageToVideo
    i2v = comfy.load_tiny_wan(i2v=True, in_dim=36, seed=42)
    image = torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(1))
    res = WanImageToVideo.execute(comfy.text_conditioning(1), comfy.text_conditioning(2), vae, 128, 96, 9, 1,
                                  start_image=image)
    pos, neg, latent = res.result if hasattr(res, "result") else res
    assert pos[0][1]["concat_latent_image"].shape[-2:] == (12, 16)
    (out,) = comfy.run_node(NODE, model=i2v, positive=pos, negative=neg, latent=latent, vae=None,
                            width=192, height=160, scale_by=0.0, upscale_path="latent", resize_method="bilinear",
                            strength=0.5, steps=2, cfg=5.0, sampler_name="euler", scheduler="simple", shift=9.0,
                            seed=1)
    assert out["samples"].shape == (1, 16, 3, 20, 24)


def test_interrupt_stops_cleanly(comfy, wan, vae):
    import comfy.model_management as mm
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            refine(comfy, wan, NATIVE, vae=vae, upscale_path="pixel")
    finally:
        mm.interrupt_current_processing(False)
    assert refine(comfy, wan, NATIVE).shape == (1, 16, 3, 20, 24)       # the next run is unaffected


class CountingVAE:
    """The real VAE, counting decodes: proves a refused input cost no VAE work."""

    def __init__(self, vae):
        self.vae, self.decodes = vae, 0

    def __getattr__(self, name):
        attr = getattr(self.vae, name)
        if name.startswith("decode"):
            def counted(*a, **k):
                self.decodes += 1
                return attr(*a, **k)
            return counted
        return attr


@pytest.mark.parametrize("name,value,says", [
    ("shift", -1.0, "shift -1.0 is out of range: it must be at least 0"),
    ("shift", float("nan"), "shift must be a finite number"),
    ("cfg", float("nan"), "cfg must be a finite number"),
    ("cfg", float("inf"), "cfg must be a finite number"),
    ("strength", float("nan"), "strength must be a finite number"),
    ("strength", 0.0, "strength 0.0 is out of range: it must be above 0"),
    ("steps", 0, "steps 0 is out of range: it must be at least 1"),
    ("scale_by", float("nan"), "scale_by must be a finite number"),
    ("width", 1920.5, "width must be a finite whole number"),
    ("sampler_name", "no_such_sampler", "sampler_name 'no_such_sampler' is not one of euler"),
    ("scheduler", "no_such_scheduler", "scheduler 'no_such_scheduler' is not one of simple"),
])
def test_bad_inputs_are_refused_before_any_work(comfy, wan, vae, name, value, says):
    counting = CountingVAE(vae)
    with pytest.raises(ValueError, match="Latent Upscale Refine: " + says.replace("(", r"\(")) as err:
        refine(comfy, wan, NATIVE, vae=counting, upscale_path="pixel", **{name: value})
    assert counting.decodes == 0
    assert type(err.value).__module__ == "freeswim" and type(err.value).__name__ == "InvalidInput"


def test_shift_auto_is_the_reference_flow_shift_for_wan(comfy, wan):
    """The widget's default, 0, is auto: Wan's refine runs under the reference recipe's flow shift 9."""
    info = comfy.node_class(NODE).INPUT_TYPES()["required"]["shift"][1]
    assert info["default"] == 0.0 == info["min"]
    assert torch.equal(refine(comfy, wan, NATIVE, shift=0.0), refine(comfy, wan, NATIVE, shift=9.0))
    assert not torch.allclose(refine(comfy, wan, NATIVE, shift=3.0), refine(comfy, wan, NATIVE, shift=9.0))


def test_refine_reports_its_phases_in_the_node_output(comfy, wan, vae):
    cls = comfy.node_class(NODE)
    inputs = dict(model=wan, positive=comfy.text_conditioning(1), negative=comfy.text_conditioning(2),
                  latent={"samples": NATIVE}, width=192, height=160, scale_by=0.0, upscale_path="pixel",
                  resize_method="bilinear", strength=0.5, steps=4, cfg=5.0, sampler_name="euler",
                  scheduler="simple", shift=9.0, seed=3, vae=vae)
    with torch.inference_mode():
        out = cls.execute(**inputs)
    (phases,) = out.ui["freeswim_refine"]
    assert phases["upscale_path"] == "pixel" and phases["steps_run"] == 2 and phases["target_px"] == [192, 160]
    assert phases["upscale_s"] > 0 and phases["sampling_s"] > 0
