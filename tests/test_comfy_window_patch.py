"""FreeSwim Window Attention Patch inside the real ComfyUI host (0.3.75), tiny random Wan models.

The reference for "what window attention should have produced" is a test-owned
attention override (tests/reference.py) with a dense mask built independently of
freeswim_core, installed on an unpatched copy of the same model.
"""
import logging

import pytest
import torch

from reference import reference_scale, window_override

NODE = "FreeSwimWindowAttentionPatch"
HEAD_DIM = 128  # ComfyUI derives Wan heads as dim // 128


def patch(comfy, model, **kw):
    inputs = dict(native_size="custom", custom_width=128, custom_height=96, inward=True,
                  attention_scale="reference", backend="auto")
    inputs.update(kw)
    (patched,) = comfy.run_node(NODE, model=model, **inputs)
    return patched


def with_override(model, override):
    m = model.clone()
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    return m


@pytest.fixture(scope="module")
def wan(comfy):
    return comfy.load_tiny_wan(seed=11)


LATENT = torch.zeros(1, 16, 3, 24, 40)     # token grid 3 x 12 x 20


def test_node_registered_with_its_inputs(comfy):
    import nodes
    cls = nodes.NODE_CLASS_MAPPINGS[NODE]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS.get(NODE) == "FreeSwim Window Attention Patch"
    info = cls.INPUT_TYPES()
    assert set(info["required"]) == {"model", "native_size", "custom_width", "custom_height", "inward",
                                     "attention_scale", "backend"}
    assert cls.CATEGORY == "FreeSwim"


def test_window_covering_grid_is_bitwise_unpatched(comfy, wan):
    base = comfy.ksample(wan, LATENT, seed=3)
    patched = patch(comfy, wan, native_size="832x480")        # 31 x 53 window > 12 x 20 grid
    assert torch.equal(comfy.ksample(patched, LATENT, seed=3), base)


@pytest.mark.parametrize("inward,scale_mode", [(True, "reference"), (False, "none")])
def test_small_window_matches_dense_reference(comfy, wan, inward, scale_mode):
    # custom native 128 x 96 px -> 2*(96//16//2)+1 = 7 rows, 2*(128//16//2)+1 = 9 columns
    scale = reference_scale(HEAD_DIM) if scale_mode == "reference" else HEAD_DIM ** -0.5
    ref_model = with_override(wan, window_override((3, 12, 20), (7, 9), scale, inward))
    expected = comfy.ksample(ref_model, LATENT, seed=5)
    got = comfy.ksample(patch(comfy, wan, inward=inward, attention_scale=scale_mode,
                              backend="chunked"), LATENT, seed=5)
    unpatched = comfy.ksample(wan, LATENT, seed=5)
    assert ref_model.model_options["transformer_options"]["optimized_attention_override"].calls["self"] > 0
    err = (got - expected).abs().max().item()
    moved = (unpatched - expected).abs().max().item()
    assert err < 1e-4 * max(1.0, expected.abs().max().item())
    assert moved > 100 * max(err, 1e-6), "the window must change the result measurably"


def test_earlier_override_is_kept_and_called(comfy, wan):
    seen = []

    def other_pack_override(func, *args, **kwargs):
        seen.append((args[0].shape[1], args[1].shape[1]))
        return func(*args, **kwargs)

    base = with_override(wan, other_pack_override)
    patched = patch(comfy, base)
    comfy.ksample(patched, LATENT, seed=1, steps=2)
    assert seen, "the earlier override must still be called"
    # window self-attention (720 x 720) is FreeSwim's; everything it passed on is cross-attention
    assert all(k == 512 for _, k in seen)
    # when the window covers the grid FreeSwim hands everything to the earlier override
    seen.clear()
    comfy.ksample(patch(comfy, base, native_size="832x480"), LATENT, seed=1, steps=2)
    assert any(k == 720 for _, k in seen)


def test_input_model_is_untouched(comfy, wan):
    before = comfy.ksample(wan, LATENT, seed=9, steps=2)
    patch(comfy, wan)
    to = wan.model_options.get("transformer_options", {})
    assert "freeswim" not in to and "optimized_attention_override" not in to
    assert torch.equal(comfy.ksample(wan, LATENT, seed=9, steps=2), before)


def test_patching_twice_is_one_patch(comfy, wan):
    once = patch(comfy, wan)
    twice = patch(comfy, once)
    wrappers = twice.wrappers
    assert all(len(by_key.get("freeswim", [])) <= 1 for by_key in wrappers.values())
    assert twice.model_options["transformer_options"]["freeswim"].inner_override is None
    assert torch.equal(comfy.ksample(twice, LATENT, seed=2, steps=2),
                       comfy.ksample(once, LATENT, seed=2, steps=2))


def test_batch_of_two_with_odd_latent_size(comfy, wan):
    latent = torch.zeros(2, 16, 2, 13, 9)        # padded by Wan to 14 x 10 -> grid 2 x 7 x 5
    # custom 64 x 48 px -> window 3 rows x 5 columns: rows windowed, columns whole
    ref_model = with_override(wan, window_override((2, 7, 5), (3, 5), reference_scale(HEAD_DIM)))
    expected = comfy.ksample(ref_model, latent, seed=4)
    got = comfy.ksample(patch(comfy, wan, custom_width=64, custom_height=48), latent, seed=4)
    assert got.shape == latent.shape
    assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())


def test_unsupported_model_family_is_rejected_naming_the_node(comfy):
    model = comfy.load_tiny_hunyuan_video()
    with pytest.raises(ValueError, match="FreeSwim Window Attention Patch: the connected model is a HunyuanVideo, "
                                         "not a Wan 2.1/2.2 or LTX-Video video model") as err:
        patch(comfy, model)
    # ComfyUI shows module.qualname as the error's type: not the pack's install path
    assert f"{type(err.value).__module__}.{type(err.value).__qualname__}" == "freeswim.UnsupportedFamily"


def test_custom_native_size_below_one_token_is_rejected(comfy, wan):
    with pytest.raises(ValueError, match="smaller than one token"):
        patch(comfy, wan, custom_width=16, custom_height=8)


def test_noop_is_logged_once_per_run(comfy, wan, caplog):
    caplog.set_level(logging.INFO, logger="freeswim")
    patched = patch(comfy, wan, native_size="832x480")
    for _ in range(2):
        caplog.clear()
        comfy.ksample(patched, LATENT, seed=1, steps=3)
        noop = [r for r in caplog.records if "no-op" in r.getMessage()]
        assert len(noop) == 1, [r.getMessage() for r in caplog.records]
        assert "FreeSwim Window Attention Patch" in noop[0].getMessage()


def test_torch_compile_model_node_still_works(comfy, wan):
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    patched = patch(comfy, wan, backend="auto")
    eager = comfy.ksample(patched, LATENT, seed=6, steps=2)
    compiled = TorchCompileModel.execute(patched, "inductor").result[0]
    out = comfy.ksample(compiled, LATENT, seed=6, steps=2)
    assert (out - eager).abs().max().item() < 1e-3 * max(1.0, eager.abs().max().item())


def test_ffn_runs_in_token_slices_with_the_same_result(comfy, wan, monkeypatch):
    """Above its memory budget each block's FFN runs on slices of tokens (an object patch that calls
    the original layers): the result stays that of the whole FFN (float32, 1e-5)."""
    chunks = comfy.pack_module("nodes.ffn_chunks")
    latent = torch.zeros(1, 16, 3, 48, 80)                # 3 x 24 x 40 = 2880 tokens
    patched = patch(comfy, wan)
    key = "diffusion_model.blocks.0.ffn"
    assert isinstance(patched.object_patches[key], chunks.ChunkedFFN)
    whole = comfy.ksample(patched, latent, seed=2, steps=2)
    original = wan.get_model_object(key)
    slices = []
    hook = original.register_forward_hook(lambda m, args, out: slices.append(args[0].shape[1]))
    try:
        monkeypatch.setattr(chunks, "FFN_HIDDEN_BUDGET", 1)     # the smallest slice: 1024 tokens
        sliced = comfy.ksample(patched, latent, seed=2, steps=2)
    finally:
        hook.remove()
    assert slices[:3] == [1024, 1024, 832]
    assert (sliced - whole).abs().max().item() < 1e-5 * max(1.0, whole.abs().max().item())
    # the patch names the same layers: a LoRA key or an offloaded weight finds them where it did
    assert patched.object_patches[key][0] is original[0] and dict(patched.object_patches[key].named_children()) == dict(original.named_children())


@pytest.mark.parametrize("lora", [False, True])
def test_sliced_ffn_casts_offloaded_weights_once_per_block(comfy, wan, monkeypatch, lora):
    """Under a partial load (ComfyUI's own lowvram loading: every layer's weights stay off the
    compute device and are cast at each call, LoRA patches applied in that cast) an FFN run in
    token slices casts each of its layers once per model call, not once per slice; the result is
    that of the fully loaded model."""
    import importlib
    ops = importlib.import_module("comfy.ops")
    chunks = comfy.pack_module("nodes.ffn_chunks")
    model = wan.clone()
    if lora:     # a low-rank patch on both FFN layers of block 0, as a LoRA loader adds
        g = torch.Generator().manual_seed(3)
        patches = {}
        for name in ("blocks.0.ffn.0.weight", "blocks.0.ffn.2.weight"):
            out_f, in_f = model.get_model_object(f"diffusion_model.{name}").shape
            up, down = torch.randn(out_f, 4, generator=g) * 0.05, torch.randn(4, in_f, generator=g) * 0.05
            patches[f"diffusion_model.{name}"] = ("lora", (up, down, None, None, None, None))
        model.add_patches(patches, 1.0)
    patched = patch(comfy, model)
    monkeypatch.setattr(chunks, "FFN_HIDDEN_BUDGET", 1)             # slices of 1024 tokens: 3 here
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 16, 3, 48, 80, generator=g)                  # 3 x 24 x 40 = 2880 tokens
    context = torch.randn(1, 512, 4096, generator=g)
    t = torch.full((1,), 900.0)
    layers = [patched.get_model_object(f"diffusion_model.blocks.0.ffn.{i}") for i in (0, 2)]
    casts = []
    real_cast = ops.cast_bias_weight

    def counting_cast(s, *args, **kwargs):
        casts.append(s)
        return real_cast(s, *args, **kwargs)

    def call(lowvram_bytes):
        patched.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=lowvram_bytes)
        try:
            assert all(m.comfy_cast_weights == bool(lowvram_bytes) for m in layers)
            to = comfy.sampling_options(patched, cond_or_uncond=[0], uuids=["c"], sigma=0.9,
                                        sample_sigmas=[0.9, 0.0])
            with torch.inference_mode():
                return patched.model.diffusion_model(x, t, context, transformer_options=to)
        finally:
            patched.unpatch_model()

    whole = call(0)                                   # fully loaded: no casts
    monkeypatch.setattr(ops, "cast_bias_weight", counting_cast)
    sliced = call(1)                                  # 1 byte of "VRAM": every layer offloaded
    assert [sum(c is m for c in casts) for m in layers] == [1, 1]
    assert (sliced - whole).abs().max().item() < 1e-5 * max(1.0, whole.abs().max().item())


def test_natten_backend_matches_the_dense_reference_and_is_reported(comfy, wan):
    """backend natten (NATTEN's neighborhood attention; on this CPU its flex-fna kernel) samples what the
    test-owned dense window gives; the run report names it, and its memory plan counts NATTEN's copies. auto
    on a CPU takes chunked and says why it passed over NATTEN and FlexAttention; its plan counts what a GPU
    run takes (NATTEN where its compiled library is installed, else flex)."""
    pytest.importorskip("natten")
    run_state = comfy.pack_module("nodes.run_state")
    ref_model = with_override(wan, window_override((3, 12, 20), (7, 9), reference_scale(HEAD_DIM), True))
    expected = comfy.ksample(ref_model, LATENT, seed=5)
    got = comfy.ksample(patch(comfy, wan, backend="natten"), LATENT, seed=5)
    report = run_state.recent_reports()[-1]
    assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())
    assert report["backends"] == ["natten"] and report["backends_passed_over"] == {}
    assert report["memory"]["window_backend"] == "natten"
    comfy.ksample(patch(comfy, wan, backend="auto"), LATENT, seed=5, steps=1)
    report = run_state.recent_reports()[-1]
    assert report["backends"] == ["chunked"]
    assert set(report["backends_passed_over"]) == {"natten", "flex"}
    assert "CUDA" in report["backends_passed_over"]["flex"]
    compiled = comfy.pack_module("freeswim_core.attention.natten_backend").natten_compiled()
    assert report["memory"]["window_backend"] == ("natten" if compiled else "flex")


def test_natten_backend_with_the_no_inward_ablation_is_refused_naming_the_fix(comfy, wan):
    with pytest.raises(ValueError, match="FreeSwim Window Attention Patch: backend natten runs inward windows "
                                         "only.*turn inward on"):
        patch(comfy, wan, backend="natten", inward=False)
