"""The FreeSwim nodes on ComfyUI's own LTX-Video model (tiny random weights, both hosts).

References are test-owned: a dense masked attention (tests/reference.py) for the window, a
dual path written here from the parity README's description (LTX's text cross-attention
carries the text's attention mask), and ComfyUI's own nodes for the refine.
"""
import logging

import pytest
import torch
import torch.nn.functional as F

from reference import dense_window_mask, reference_scale, window_override

WINDOW, DUAL, CACHE, REFINE = ("FreeSwimWindowAttentionPatch", "FreeSwimDualPathOverride", "FreeSwimCrossAttnCache",
                               "FreeSwimLatentUpscaleRefine")
HEAD_DIM = 4                              # the tiny model: 32 heads x 4 (ComfyUI reads LTXV as 32 heads)
LTX_2B_NATIVE_TOKENS = (512 // 32) * (768 // 32)    # the "reference" scale's count for LTX: its native frame
GRID = (3, 6, 10)                         # latent frames x rows x columns: 180 tokens
LATENT = torch.zeros(1, 128, *GRID)
WINDOW_TOKENS = (3, 5)                    # custom native 128x96 px at 32 px per token: 2*(3//2)+1, 2*(4//2)+1


def text(seed, batch=1, tokens=7, keep=5):
    """LTX conditioning: T5 features and their attention mask (padding tokens masked out)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, tokens, dtype=torch.long)
    mask[:, :keep] = 1
    return [[torch.randn(batch, tokens, 4096, generator=g), {"attention_mask": mask}]]


def sample(comfy, model, latent=LATENT, seed=3, steps=3, cfg=5.0, positive=None, negative=None, **kw):
    """KSampler with LTX text conditioning: the negative's mask keeps fewer tokens than the positive's,
    so a row given another row's mask changes the result."""
    batch = latent.shape[0]
    return comfy.ksample(model, latent, seed=seed, steps=steps, cfg=cfg, positive=positive or text(1, batch),
                         negative=negative or text(2, batch, keep=3), **kw)


def sample_latent(model, latent, pos, neg, steps=3):
    """ComfyUI's KSampler on a whole LATENT (its noise mask included)."""
    import nodes
    (out,) = nodes.common_ksampler(model, 3, steps, 5.0, "euler", "simple", pos, neg, latent)
    return out["samples"]


def windowed(comfy, model, **kw):
    inputs = dict(native_size="custom", custom_width=128, custom_height=96, inward=True,
                  attention_scale="reference", backend="chunked")
    inputs.update(kw)
    (m,) = comfy.run_node(WINDOW, model=model, **inputs)
    return m


def dual(comfy, model, execution="batched", passes="cond_and_uncond"):
    (m,) = comfy.run_node(DUAL, model=model, passes=passes, override_image_cross=False, start_percent=0.0,
                          end_percent=1.0, execution=execution)
    return m


def cache(comfy, model, interval=2):
    (m,) = comfy.run_node(CACHE, model=model, guide_interval=interval, storage="auto", precision="model")
    return m


def with_override(model, override):
    m = model.clone()
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    return m


def ltx_node(name):
    import comfy_extras.nodes_lt as lt
    return getattr(lt, name)


def run_ltx(name, **inputs):
    with torch.inference_mode():
        out = ltx_node(name).execute(**inputs)
    return out.result if hasattr(out, "result") else out


@pytest.fixture(scope="module")
def ltxv(comfy):
    return comfy.load_tiny_ltxv(seed=3)


@pytest.fixture(scope="module")
def vae(comfy):
    return comfy.load_tiny_ltxv_vae(seed=5)


def rel_err(a, b):
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


# --- window attention ----------------------------------------------------------------------------

@pytest.mark.parametrize("inward,scale_mode", [(True, "reference"), (False, "none"), (True, "native")])
def test_window_matches_dense_reference(comfy, ltxv, inward, scale_mode):
    scale = {"reference": reference_scale(HEAD_DIM, LTX_2B_NATIVE_TOKENS), "none": HEAD_DIM ** -0.5,
             "native": reference_scale(HEAD_DIM, 3 * 4)}[scale_mode]
    expected = sample(comfy, with_override(ltxv, window_override(GRID, WINDOW_TOKENS, scale, inward)))
    got = sample(comfy, windowed(comfy, ltxv, inward=inward, attention_scale=scale_mode))
    assert not torch.allclose(expected, sample(comfy, ltxv), atol=1e-3)      # the window changes the result
    assert rel_err(got, expected) < 1e-5


def test_auto_native_size_is_the_2b_models_and_covers_a_small_grid(comfy, ltxv):
    """auto: LTX-Video 2B's 768x512 (a 17 x 25 token window) covers a 6 x 10 grid: no change at all."""
    assert torch.equal(sample(comfy, windowed(comfy, ltxv, native_size="auto")), sample(comfy, ltxv))


def test_guide_frames_are_windowed_as_frames_of_the_grid(comfy, ltxv, vae):
    """LTXVAddGuide appends a guide's latent frames after the video's (same height and width, their
    own positions in keyframe_idxs): they are frames of the grid, windowed like the others."""
    image = torch.rand(1, 192, 320, 3, generator=torch.Generator().manual_seed(1))
    pos, neg, latent = run_ltx("LTXVAddGuide", positive=text(1), negative=text(2), vae=vae,
                               latent={"samples": LATENT.clone()}, image=image, frame_idx=8, strength=1.0)
    grid = tuple(latent["samples"].shape[2:])
    assert grid[0] > GRID[0] and "keyframe_idxs" in pos[0][1]
    scale = reference_scale(HEAD_DIM, LTX_2B_NATIVE_TOKENS)

    def go(model):
        return sample_latent(model, latent, pos, neg)
    expected = go(with_override(ltxv, window_override(grid, WINDOW_TOKENS, scale, True)))
    assert rel_err(go(windowed(comfy, ltxv)), expected) < 1e-5


def test_image_to_video_frames_with_their_own_timesteps(comfy, ltxv, vae):
    """LTXVImgToVideo: the first latent frame is conditioning (per-token timesteps from its noise mask)."""
    image = torch.rand(1, 192, 320, 3, generator=torch.Generator().manual_seed(2))
    pos, neg, latent = run_ltx("LTXVImgToVideo", positive=text(1), negative=text(2), vae=vae, image=image,
                               width=320, height=192, length=17, batch_size=1, strength=1.0)
    assert "noise_mask" in latent
    scale = reference_scale(HEAD_DIM, LTX_2B_NATIVE_TOKENS)

    def go(model):
        return sample_latent(model, latent, pos, neg)
    expected = go(with_override(ltxv, window_override(GRID, WINDOW_TOKENS, scale, True)))
    got = go(windowed(comfy, ltxv))
    assert rel_err(got, expected) < 1e-5
    assert torch.allclose(got[:, :, 0], latent["samples"][:, :, 0], atol=1e-5)   # the image frame is kept


def test_calls_with_guide_attention_masks_are_left_alone_and_said(comfy, ltxv, vae, caplog):
    """ComfyUI 0.33: a guide strength below 1 masks self-attention in pieces; FreeSwim steps aside."""
    import inspect

    import comfy_extras.nodes_lt as lt
    if "guide_attention_entries" not in inspect.getsource(lt):
        pytest.skip("this ComfyUI's LTXVAddGuide masks no attention (strength sets the noise mask only)")
    image = torch.rand(1, 192, 320, 3, generator=torch.Generator().manual_seed(1))
    pos, neg, latent = run_ltx("LTXVAddGuide", positive=text(1), negative=text(2), vae=vae,
                               latent={"samples": LATENT.clone()}, image=image, frame_idx=8, strength=0.5)

    def go(model):
        return sample_latent(model, latent, pos, neg, steps=2)
    with caplog.at_level(logging.WARNING, logger="freeswim"):
        got = go(dual(comfy, windowed(comfy, ltxv)))
    assert torch.equal(got, go(ltxv))
    assert any("guide attention mask" in r.getMessage() for r in caplog.records)


def test_calls_whose_guides_drop_tokens_are_left_alone_and_said(comfy, ltxv, vae, caplog):
    """ComfyUI 0.33 drops guide tokens whose noise mask is negative (dilated IC-LoRA guides): the
    tokens are no longer a grid, so FreeSwim leaves such calls to the model, and says so."""
    if not comfy.pack_module("nodes.families.ltxv").drops_guide_tokens(ltxv.model.diffusion_model):
        pytest.skip("this ComfyUI's LTX forward keeps every guide token")
    image = torch.rand(1, 192, 320, 3, generator=torch.Generator().manual_seed(1))
    pos, neg, latent = run_ltx("LTXVAddGuide", positive=text(1), negative=text(2), vae=vae,
                               latent={"samples": LATENT.clone()}, image=image, frame_idx=8, strength=1.0)
    mask = latent["noise_mask"].clone()
    mask[:, :, GRID[0]:] = -1.0                         # the guide frame's tokens dropped
    latent = {**latent, "noise_mask": mask}
    with caplog.at_level(logging.WARNING, logger="freeswim"):
        got = sample_latent(dual(comfy, windowed(comfy, ltxv)), latent, pos, neg, steps=2)
    assert torch.equal(got, sample_latent(ltxv, latent, pos, neg, steps=2))
    assert any("drop tokens from the video grid" in r.getMessage() for r in caplog.records)


def test_feed_forward_runs_in_token_slices_with_the_same_result(comfy, ltxv, monkeypatch):
    """The whole ``ff`` of every block is chunked by tokens (ComfyUI 0.33's FeedForward calls its layers
    itself, so chunking ``ff.net`` would not slice anything there): the result is the whole FFN's."""
    chunks = comfy.pack_module("nodes.ffn_chunks")
    latent = torch.zeros(1, 128, 3, 20, 40)              # 2400 tokens
    patched = windowed(comfy, ltxv)
    key = "diffusion_model.transformer_blocks.0.ff"
    assert isinstance(patched.object_patches[key], chunks.ChunkedFFN)
    whole = sample(comfy, patched, latent=latent, steps=2)
    original = ltxv.get_model_object(key)
    slices = []
    hook = original.register_forward_hook(lambda m, args, out: slices.append(args[0].shape[1]))
    try:
        monkeypatch.setattr(chunks, "FFN_HIDDEN_BUDGET", 1)     # the smallest slice: 1024 tokens
        sliced = sample(comfy, patched, latent=latent, steps=2)
    finally:
        hook.remove()
    assert slices[:3] == [1024, 1024, 352]
    assert rel_err(sliced, whole) < 1e-5


# --- dual path and cache ---------------------------------------------------------------------------

def ltx_dual_path_reference(model, grid, window, scale):
    """Every call's rows duplicated as [window rows, full rows]; self-attention masked on the window
    half and full on the other (both with ``scale``); each window row's text cross-attention is its
    full twin's (the text mask applied); only the window half is returned."""
    import comfy.patcher_extension
    mask = dense_window_mask(grid, window, True)

    def override(func, *args, **kwargs):
        q, k, v = args[:3]
        heads = kwargs["heads"] if "heads" in kwargs else args[3]
        B2, Lq, C = q.shape
        half, d = B2 // 2, C // heads
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2)  # noqa: E731
        merge = lambda t: t.transpose(1, 2).reshape(t.shape[0], -1, C)  # noqa: E731
        text_mask = kwargs["mask"] if "mask" in kwargs else (args[4] if len(args) > 4 else None)   # 0.3.x: positional
        if k.shape[1] == Lq and text_mask is None:
            win = F.scaled_dot_product_attention(split(q[:half]), split(k[:half]), split(v[:half]), attn_mask=mask,
                                                 scale=scale)
            full = F.scaled_dot_product_attention(split(q[half:]), split(k[half:]), split(v[half:]), scale=scale)
            return torch.cat([merge(win), merge(full)])
        cross = F.scaled_dot_product_attention(split(q[half:]), split(k[half:]), split(v[half:]),
                                               attn_mask=None if text_mask is None else text_mask[half:])
        return torch.cat([merge(cross), merge(cross)])

    def wrapper(executor, x, timestep, context, attention_mask, frame_rate=25, transformer_options={},
                keyframe_idxs=None, **kwargs):
        to = {**transformer_options, "optimized_attention_override": override}
        twice = lambda t: torch.cat([t, t]) if isinstance(t, torch.Tensor) and t.shape[0] == x.shape[0] else t  # noqa: E731
        kwargs = {k: twice(v) for k, v in kwargs.items()}
        out = executor(twice(x), twice(timestep), twice(context), twice(attention_mask), frame_rate, to,
                       twice(keyframe_idxs), **kwargs)
        return out[: x.shape[0]]

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test-reference", wrapper)
    return m


@pytest.mark.parametrize("cfg,batch,execution", [(5.0, 1, "batched"), (1.0, 1, "batched"), (5.0, 2, "batched"),
                                                  (5.0, 2, "sequential")])
def test_dual_path_matches_the_reference_dual_path(comfy, ltxv, cfg, batch, execution):
    """Each row (cond and uncond, each video of a batch) with its own text mask and its own twin."""
    latent = torch.randn(batch, *LATENT.shape[1:], generator=torch.Generator().manual_seed(4)) * 0.1
    scale = reference_scale(HEAD_DIM, LTX_2B_NATIVE_TOKENS)
    expected = sample(comfy, ltx_dual_path_reference(ltxv, GRID, WINDOW_TOKENS, scale), latent=latent, cfg=cfg)
    got = sample(comfy, dual(comfy, windowed(comfy, ltxv), execution=execution), latent=latent, cfg=cfg)
    assert not torch.allclose(got, sample(comfy, windowed(comfy, ltxv), latent=latent, cfg=cfg), atol=1e-3)
    assert rel_err(got, expected) < 1e-5


@pytest.mark.parametrize("execution", ["batched", "sequential"])
def test_dual_path_with_cross_attention_adaln(comfy, execution):
    """ComfyUI 0.33's LTX blocks with cross_attention_adaln (the text call through its own AdaLN and gate)
    still make one self call, then one text call: the reference dual path holds."""
    import inspect

    from comfy.ldm.lightricks.model import BasicTransformerBlock
    if "cross_attention_adaln" not in inspect.signature(BasicTransformerBlock).parameters:
        pytest.skip("this ComfyUI's LTX blocks have no cross_attention_adaln")
    model = comfy.load_tiny_ltxv(seed=7, config={"cross_attention_adaln": True})
    assert model.model.diffusion_model.transformer_blocks[0].cross_attention_adaln
    scale = reference_scale(HEAD_DIM, LTX_2B_NATIVE_TOKENS)
    expected = sample(comfy, ltx_dual_path_reference(model, GRID, WINDOW_TOKENS, scale))
    got = sample(comfy, dual(comfy, windowed(comfy, model), execution=execution))
    assert not torch.allclose(got, sample(comfy, windowed(comfy, model)), atol=1e-3)
    assert rel_err(got, expected) < 1e-5


@pytest.mark.parametrize("with_cache", [False, True])
def test_sequential_execution_gives_the_batched_result(comfy, ltxv, with_cache):
    def build(execution):
        m = dual(comfy, windowed(comfy, ltxv), execution=execution)
        return cache(comfy, m) if with_cache else m
    assert rel_err(sample(comfy, build("sequential"), steps=4), sample(comfy, build("batched"), steps=4)) < 1e-6


def test_cache_guides_and_reuses_on_the_schedule(comfy, ltxv):
    """Guide every 2 steps over 6 euler steps: guides at steps 0, 2, 4; the rest reuse."""
    run_state = comfy.pack_module("nodes.run_state")
    before = (run_state.recent_reports() or [{"run": 0}])[-1]["run"]
    patched = cache(comfy, dual(comfy, windowed(comfy, ltxv), passes="cond"))
    out = sample(comfy, patched, steps=6)
    reports = [r for r in run_state.recent_reports() if r["run"] > before]
    assert [(r["guide_calls"], r["reuse_calls"]) for r in reports] == [(3, 3)]
    assert reports[0]["cache_bytes"] > 0 and torch.isfinite(out).all()
    # the reuse steps read stored features instead of computing them: not the every-step result
    assert not torch.allclose(out, sample(comfy, dual(comfy, windowed(comfy, ltxv), passes="cond"), steps=6),
                              atol=1e-6)


# --- the refine ---------------------------------------------------------------------------------------

NATIVE = torch.randn(1, 128, 2, 3, 4, generator=torch.Generator().manual_seed(0))     # 128x96 px, 9 frames


def refine(comfy, model, latent, vae=None, **kw):
    inputs = dict(positive=text(1), negative=text(2), width=192, height=160, scale_by=2.0, upscale_path="latent",
                  resize_method="bilinear", strength=0.5, steps=10, cfg=5.0, sampler_name="euler",
                  scheduler="simple", shift=0.0, seed=3)
    inputs.update(kw)
    (out,) = comfy.run_node(REFINE, model=model, latent=latent if isinstance(latent, dict) else {"samples": latent},
                            vae=vae, **inputs)
    return out


def core_chain(model, up, noise_mask=None):
    """LatentUpscale's output through KSampler(denoise 0.5) under the model's own LTX sampling."""
    import nodes
    latent = {"samples": up} if noise_mask is None else {"samples": up, "noise_mask": noise_mask}
    (out,) = nodes.common_ksampler(model, 3, 5, 5.0, "euler", "simple", text(1), text(2), latent, denoise=0.5)
    return out["samples"]


def test_refine_latent_path_equals_core_nodes_under_the_models_own_sampling(comfy, ltxv):
    import nodes
    got = refine(comfy, ltxv, NATIVE)["samples"]
    (up,) = nodes.LatentUpscaleBy().upscale({"samples": NATIVE}, "bilinear", 2.0)
    assert got.shape == (1, 128, 2, 6, 8)                                      # 256x192 px
    assert torch.equal(got, core_chain(ltxv, up["samples"]))


def test_refine_shift_is_a_flow_shift_on_ltxs_own_sampling(comfy, ltxv):
    """shift s on LTX is ComfyUI's LTX sampling with log-shift ln s (ModelSamplingLTXV with both shifts
    set to it): the same sigma curve a flow shift gives Wan."""
    import math

    import nodes
    (up,) = nodes.LatentUpscaleBy().upscale({"samples": NATIVE}, "bilinear", 2.0)
    shifted = run_ltx("ModelSamplingLTXV", model=ltxv, max_shift=math.log(4.0), base_shift=math.log(4.0))[0]
    got = refine(comfy, ltxv, NATIVE, shift=4.0)["samples"]
    assert torch.allclose(got, core_chain(shifted, up["samples"]), atol=1e-5, rtol=0)
    assert not torch.allclose(got, refine(comfy, ltxv, NATIVE)["samples"], atol=1e-4)


def test_refine_pixel_path_with_the_ltx_vae_equals_core_nodes(comfy, ltxv, vae):
    import nodes
    got = refine(comfy, ltxv, NATIVE, vae=vae, upscale_path="pixel")["samples"]
    with torch.inference_mode():
        (frames,) = nodes.VAEDecode().decode(vae, {"samples": NATIVE})
        (frames,) = nodes.ImageScale().upscale(frames.reshape(-1, *frames.shape[-3:]), "bilinear", 256, 192,
                                               "disabled")
        (up,) = nodes.VAEEncode().encode(vae, frames)
    assert torch.equal(got, core_chain(ltxv, up["samples"]))


def test_refine_pixel_path_tiles_only_in_space(comfy, ltxv, vae, monkeypatch):
    """With a budget below the whole target frame, the LTX VAE encodes in spatial tiles with every frame
    at once (ComfyUI's own estimate for this VAE sizes them)."""
    tiles = comfy.pack_module("nodes.vae_tiles")
    whole = tiles._host_estimate(vae, "encode", 9)(512, 384)
    monkeypatch.setattr(tiles, "vae_budget_bytes", lambda v: int(whole * 0.5))
    calls = []
    real = type(vae).encode_tiled
    monkeypatch.setattr(type(vae), "encode_tiled", lambda self, s, **kw: calls.append(kw) or real(self, s, **kw))
    out = refine(comfy, ltxv, NATIVE, vae=vae, upscale_path="pixel", scale_by=4.0)
    assert out["samples"].shape == (1, 128, 2, 12, 16)
    assert len(calls) == 1 and calls[0]["tile_t"] >= 9                       # never a tile in time
    assert calls[0]["tile_x"] < 384 or calls[0]["tile_y"] < 512


def test_refine_keeps_image_to_video_frames(comfy, ltxv, vae):
    """A latent's per-frame noise mask (LTXVImgToVideo) goes through: the image frame is not re-noised."""
    image = torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(2))
    pos, neg, latent = run_ltx("LTXVImgToVideo", positive=text(1), negative=text(2), vae=vae, image=image,
                               width=128, height=96, length=9, batch_size=1, strength=1.0)
    out = refine(comfy, windowed(comfy, ltxv), latent, positive=pos, negative=neg)
    import nodes
    (up,) = nodes.LatentUpscaleBy().upscale(latent, "bilinear", 2.0)
    assert torch.equal(out["noise_mask"], latent["noise_mask"])
    assert torch.allclose(out["samples"][:, :, 0], up["samples"][:, :, 0], atol=1e-5)


def test_refine_refuses_guide_frames_counted_at_the_native_size(comfy, ltxv, vae):
    image = torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(1))
    pos, neg, latent = run_ltx("LTXVAddGuide", positive=text(1), negative=text(2), vae=vae,
                               latent={"samples": NATIVE.clone()}, image=image, frame_idx=0, strength=1.0)
    with pytest.raises(Exception, match=r"Latent Upscale Refine: .*LTX guide frames.*LTXVCropGuides"):
        refine(comfy, ltxv, latent, positive=pos, negative=neg)


def test_refine_refuses_another_familys_vae(comfy, ltxv):
    from harness.tiny_wan import tiny_wan_vae_state_dict
    import comfy.sd as sd
    wan_vae = sd.VAE(sd=tiny_wan_vae_state_dict(dim=8, seed=5))
    with pytest.raises(Exception, match=r"Latent Upscale Refine: the VAE makes 16-channel latents at 8x.*128 "
                                        r"channels at 32x.*model's own VAE"):
        refine(comfy, ltxv, NATIVE, vae=wan_vae, upscale_path="pixel")


def test_refine_sizes_must_be_multiples_of_32(comfy, ltxv):
    from comfy_api.latest import io  # noqa: F401  (the host's node API is loaded)
    with pytest.raises(Exception, match=r"Latent Upscale Refine: .*not a multiple of 32 px.*width 200 -> 192 or 224"):
        refine(comfy, ltxv, NATIVE, width=200, height=160, scale_by=0.0)


def test_custom_native_size_below_one_ltx_token_is_refused(comfy, ltxv):
    with pytest.raises(Exception, match=r"FreeSwim Window Attention Patch: custom native size 16x96 .*32 px"):
        windowed(comfy, ltxv, custom_width=16)


def test_ltx2_is_refused_naming_the_node_and_the_supported_models(comfy):
    try:
        from comfy.ldm.lightricks.av_model import LTXAVModel
    except ImportError:
        pytest.skip("this ComfyUI has no LTX-2 (LTXAV) model")
    from comfy.model_patcher import ModelPatcher
    from comfy.ops import disable_weight_init
    dm = LTXAVModel(num_layers=1, attention_head_dim=2, num_attention_heads=32, cross_attention_dim=64,
                    audio_attention_head_dim=2, audio_num_attention_heads=32, audio_cross_attention_dim=64,
                    caption_channels=64, device="meta", dtype=torch.float32, operations=disable_weight_init)
    base = torch.nn.Module()
    base.diffusion_model = dm
    patcher = ModelPatcher(base, load_device="cpu", offload_device="cpu")
    for node in (WINDOW, DUAL, CACHE):
        with pytest.raises(Exception, match=r"LTX-2 .*does not support.*LTX-Video 0\.9\.x"):
            comfy.run_node(node, model=patcher, **NODE_INPUTS[node])


NODE_INPUTS = {
    WINDOW: dict(native_size="auto", custom_width=832, custom_height=480, inward=True, attention_scale="reference",
                 backend="auto"),
    DUAL: dict(passes="cond_and_uncond", override_image_cross=False, start_percent=0.0, end_percent=1.0,
               execution="auto"),
    CACHE: dict(guide_interval=2, storage="auto", precision="model"),
}
