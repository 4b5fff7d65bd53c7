"""The window patch on the ComfyUI-native Wan variants, called the way ComfyUI calls the DiT.

Each variant is a tiny random model detected by ComfyUI from its state dict; its
patched forward is compared with the same forward under a test-owned dense
window override (tests/reference.py).
"""
import pytest
import torch

from reference import reference_scale, window_override

NODE = "FreeSwimWindowAttentionPatch"


def patched_options(comfy, model, **kw):
    inputs = dict(native_size="custom", custom_width=128, custom_height=96, inward=True,
                  attention_scale="reference", backend="chunked")
    inputs.update(kw)
    (patched,) = comfy.run_node(NODE, model=model, **inputs)
    # what ComfyUI's sampler_helpers.prepare_model_patcher hands the model at sampling time
    return {**patched.model_options["transformer_options"], "wrappers": patched.wrappers}


def forward(model, x, transformer_options, **kwargs):
    g = torch.Generator().manual_seed(0)
    context = torch.randn(x.shape[0], 512, 4096, generator=g)
    t = torch.full((x.shape[0],), 600.0)
    with torch.no_grad():
        return model.model.diffusion_model(x, t, context, transformer_options=dict(transformer_options),
                                           **kwargs)


def check(model, x, grid, window, options, **kwargs):
    ref = window_override(grid, window, reference_scale(128))
    expected = forward(model, x, {"optimized_attention_override": ref}, **kwargs)
    got = forward(model, x, options, **kwargs)
    plain = forward(model, x, {}, **kwargs)
    assert ref.calls["self"] > 0
    err = (got - expected).abs().max().item()
    assert err < 1e-4 * max(1.0, expected.abs().max().item())
    assert (plain - expected).abs().max().item() > 100 * max(err, 1e-7)


def x_of(channels, t=3, h=24, w=40, seed=1):
    return torch.randn(1, channels, t, h, w, generator=torch.Generator().manual_seed(seed))


def test_i2v_with_clip_image_tokens(comfy):
    model = comfy.load_tiny_wan(i2v=True, in_dim=36, seed=21)
    clip = torch.randn(1, 257, 1280, generator=torch.Generator().manual_seed(2))
    check(model, x_of(36), (3, 12, 20), (7, 9), patched_options(comfy, model), clip_fea=clip)


def test_fun_reference_latent_adds_a_frame(comfy):
    model = comfy.load_tiny_wan(ref_conv_dim=16, seed=22)
    assert model.model.diffusion_model.ref_conv is not None
    ref_latent = torch.randn(1, 16, 24, 40, generator=torch.Generator().manual_seed(3))
    # 3 latent frames + 1 frame of reference tokens
    check(model, x_of(16), (4, 12, 20), (7, 9), patched_options(comfy, model), reference_latent=ref_latent)


def test_vace_blocks_are_windowed_too(comfy):
    model = comfy.load_tiny_wan(vace_layers=1, seed=23)
    assert type(model.model.diffusion_model).__name__ == "VaceWanModel"
    vace = torch.randn(1, 1, 96, 3, 24, 40, generator=torch.Generator().manual_seed(4))
    check(model, x_of(16), (3, 12, 20), (7, 9), patched_options(comfy, model),
          vace_context=vace, vace_strength=[1.0])
    # in a run: the main blocks' and the VACE block's self-attention all reached FreeSwim
    run = comfy.new_run()
    forward(model, x_of(16), {**patched_options(comfy, model), comfy.pack_module("nodes.options").RUN_KEY: run},
            vace_context=vace, vace_strength=[1.0])
    assert run.report.windowed_calls == 1 and run.report.unreached_blocks == [] and not run.report.warnings


def test_wan22_5b_style_model_uses_32px_tokens_and_its_native_size(comfy):
    """A 48-channel Wan2.2 latent (16x VAE): auto native 1280x704 -> 23 x 41 token window."""
    model = comfy.load_tiny_wan(in_dim=48, out_dim=48, seed=24)
    assert type(model.model.latent_format).__name__ == "Wan22"
    check(model, x_of(48, t=1, h=48, w=84), (1, 24, 42), (23, 41),
          patched_options(comfy, model, native_size="auto"))


def test_auto_native_size_turns_portrait_for_portrait_video(comfy):
    """1.3B-style model (8x VAE): auto native 832x480, portrait grid -> 53 rows x 31 columns."""
    model = comfy.load_tiny_wan(seed=25)
    check(model, x_of(16, t=1, h=108, w=40), (1, 54, 20), (53, 31),
          patched_options(comfy, model, native_size="auto"))


def test_grid_with_text_length_token_count_is_windowed(comfy, caplog):
    """512 tokens = the text length: by shape, self and cross attention look alike. FreeSwim places
    every call by its order within the block it runs, so the grid is windowed on every host."""
    import logging
    caplog.set_level(logging.WARNING, logger="freeswim")
    model = comfy.load_tiny_wan(seed=26)
    x = x_of(16, t=2, h=32, w=32)                     # grid 2 x 16 x 16 = 512 tokens
    options = patched_options(comfy, model, custom_width=64, custom_height=64)   # window 5 x 5
    ref = window_override((2, 16, 16), (5, 5), reference_scale(128), every_other_call=True)
    expected = forward(model, x, {"optimized_attention_override": ref})
    got = forward(model, x, options)
    assert ref.calls["self"] == 2 and ref.calls["other"] == 2
    err = (got - expected).abs().max().item()
    assert err < 1e-4 * max(1.0, expected.abs().max().item())
    assert (forward(model, x, {}) - expected).abs().max().item() > 100 * max(err, 1e-7)
    assert not caplog.records


def test_vace_grid_with_text_length_token_count_passes_through(comfy, caplog):
    """VACE blocks run outside the host's block replacement, so only their shapes place their
    calls: with 512 tokens that is ambiguous, and the size passes through, saying why."""
    import logging
    caplog.set_level(logging.WARNING, logger="freeswim")
    model = comfy.load_tiny_wan(vace_layers=1, seed=29)
    x = x_of(16, t=2, h=32, w=32)
    vace = {"vace_context": torch.randn(1, 1, 96, 2, 32, 32, generator=torch.Generator().manual_seed(3)),
            "vace_strength": [1.0]}
    got = forward(model, x, patched_options(comfy, model, custom_width=64, custom_height=64), **vace)
    assert torch.equal(got, forward(model, x, {}, **vace))
    assert any("VACE blocks can only be told apart by shape" in r.getMessage() for r in caplog.records)


def test_tokens_off_the_grid_pass_through(comfy, comfy_host, caplog):
    """Current ComfyUI can append in-context reference tokens (``context_latents``) to the video
    tokens; the window patch does not cover them, so the call must run unpatched, with a warning,
    rather than window the wrong tokens."""
    import inspect
    import logging
    from comfy.ldm.wan.model import WanModel
    if "context_latents" not in inspect.getsource(WanModel._forward):
        pytest.skip(f"{comfy_host.id} has no in-context reference tokens")
    caplog.set_level(logging.WARNING, logger="freeswim")
    model = comfy.load_tiny_wan(seed=27)
    x = x_of(16)
    extra = {"context_latents": [x_of(16, t=1, seed=2)]}
    got = forward(model, x, patched_options(comfy, model), **extra)
    assert torch.equal(got, forward(model, x, {}, **extra))
    assert any("not on the video grid" in r.getMessage() for r in caplog.records)


def test_host_grid_is_confirmed_where_the_host_gives_it(comfy, comfy_host):
    """Wan's forward passes ``grid_sizes`` from ComfyUI 0.5.0 on (NOTES.md section 2): FreeSwim
    checks its own grid against it before windowing; older hosts have nothing to check."""
    model = comfy.load_tiny_wan(seed=28)
    (patched,) = comfy.run_node(NODE, model=model, native_size="custom", custom_width=128, custom_height=96,
                                inward=True, attention_scale="reference", backend="chunked")
    comfy.ksample(patched, torch.zeros(1, 16, 3, 24, 40), steps=1)
    report = comfy.last_report()
    newer = tuple(int(p) for p in comfy_host.version.split(".")[:2]) >= (0, 5)
    assert report["host_grid_confirmed"] is newer
    assert report["grids"] == [[3, 12, 20]] and report["window"] == [7, 9]
    assert report["windowed_calls"] == report["model_calls"] >= 1 and report["backends"] == ["chunked"]
