"""The diffusers adapter beyond the official code's limits, against a test-owned dual path.

The reference below is written from the parity README's description (items 3, 5, 10) with
diffusers' own processor interface: every row is duplicated as [window rows, full rows];
self-attention is masked (tests/reference.py's dense window) on the window half and full on the
other, both at the FreeSwim scale; the text cross-attention of each window row is its full twin's;
only the window half is returned. It shares no code with freeswim_core.
"""
import pytest
import torch
import torch.nn.functional as F

from harness.tiny_diffusers import visible_weights
from reference import dense_window_mask, reference_scale

diffusers = pytest.importorskip("diffusers")

HEADS, HEAD_DIM = 2, 32
NATIVE = (96, 64)                      # px: windows of 2 * (64 // 16 // 2) + 1 = 5 rows, 7 columns
WINDOW = (5, 7)


def tiny_transformer(seed=0, image_dim=None):
    torch.manual_seed(seed)
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=16,
        out_channels=16, text_dim=64, freq_dim=32, ffn_dim=128, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=image_dim,
        added_kv_proj_dim=HEADS * HEAD_DIM if image_dim else None, rope_max_seq_len=1024)
    return visible_weights(model).eval()


def install(model, passes="cond_and_uncond", cache=None, override_image=False, backend="chunked", guidance_scale=None):
    from freeswim_core.diffusers import CacheOptions, DualOptions, FreeSwim, WindowOptions
    window = WindowOptions(native_size="custom", custom_width=NATIVE[0], custom_height=NATIVE[1], backend=backend)
    return FreeSwim(model, window=window, dual=DualOptions(passes=passes, override_image_cross=override_image),
                    cache=CacheOptions(interval=cache) if cache else None, vae_scale_factor=8,
                    guidance_scale=guidance_scale)


def _rope(x, cos, sin):                          # [B, L, H, D], pairs interleaved
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2).type_as(x)


class _RefSelf:
    def __init__(self, mask, scale):
        self.mask, self.scale = mask, scale

    def __call__(self, attn, hs, ehs=None, attention_mask=None, rotary_emb=None):
        q, k, v = attn.norm_q(attn.to_q(hs)), attn.norm_k(attn.to_k(hs)), attn.to_v(hs)
        q, k, v = (t.unflatten(2, (attn.heads, -1)) for t in (q, k, v))
        q, k = _rope(q, *rotary_emb), _rope(k, *rotary_emb)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        half = q.shape[0] // 2
        win = F.scaled_dot_product_attention(q[:half], k[:half], v[:half], attn_mask=self.mask, scale=self.scale)
        full = F.scaled_dot_product_attention(q[half:], k[half:], v[half:], scale=self.scale)
        out = torch.cat([win, full]).transpose(1, 2).flatten(2)
        return attn.to_out[1](attn.to_out[0](out))


class _RefCross:
    def __init__(self, override_image):
        self.override_image = override_image

    def __call__(self, attn, hs, ehs=None, attention_mask=None, rotary_emb=None):
        image = None
        if attn.add_k_proj is not None:
            image, ehs = ehs[:, :-512], ehs[:, -512:]
        q = attn.norm_q(attn.to_q(hs)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        half = q.shape[0] // 2

        def attend(keys, values, own):
            k = keys.unflatten(2, (attn.heads, -1)).transpose(1, 2)
            v = values.unflatten(2, (attn.heads, -1)).transpose(1, 2)
            if own:
                return F.scaled_dot_product_attention(q, k, v)
            twin = F.scaled_dot_product_attention(q[half:], k[half:], v[half:])
            return torch.cat([twin, twin])

        out = attend(attn.norm_k(attn.to_k(ehs)), attn.to_v(ehs), own=False)
        if image is not None:
            out = out + attend(attn.norm_added_k(attn.add_k_proj(image)), attn.add_v_proj(image),
                               own=not self.override_image)
        return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2)))


def reference(model, x, t, context, image=None, override_image=False):
    """The test-owned dual path on every row (the no-cache variant), diffusers' processors swapped."""
    grid = (x.shape[2], x.shape[3] // 2, x.shape[4] // 2)
    mask = dense_window_mask(grid, WINDOW, True)
    saved = [(b.attn1.processor, b.attn2.processor) for b in model.blocks]
    for b in model.blocks:
        b.attn1.set_processor(_RefSelf(mask, reference_scale(HEAD_DIM)))
        b.attn2.set_processor(_RefCross(override_image))
    twice = lambda a: None if a is None else torch.cat([a, a])  # noqa: E731
    try:
        with torch.no_grad():
            out = model(twice(x), twice(t), twice(context), encoder_hidden_states_image=twice(image),
                        return_dict=False)[0]
    finally:
        for b, (a1, a2) in zip(model.blocks, saved):
            b.attn1.set_processor(a1)
            b.attn2.set_processor(a2)
    return out[: x.shape[0]]


def run(model, x, t, context, name="cond", step=0, sigma=0.9, image=None, rows=None):
    kwargs = {"attention_kwargs": {"freeswim_rows": rows}} if rows is not None else {}
    with torch.no_grad(), model.cache_context(name, step_index=step, sigma=sigma):
        return model(x, t, context, encoder_hidden_states_image=image, return_dict=False, **kwargs)[0]


def inputs(batch, frames, h, w, seed=1, context_rows=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, frames, h, w, generator=g)
    context = torch.randn(context_rows or batch, 512, 64, generator=g)
    return x, torch.full((batch,), 700.0), context


def err(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("batch,frames,h,w,backend", [(1, 3, 20, 28, "chunked"), (2, 2, 18, 30, "chunked"),
                                                     (3, 1, 24, 16, "chunked"), (2, 2, 18, 30, "flex"),
                                                     (2, 2, 18, 30, "natten"), (1, 1, 24, 16, "natten")])
def test_any_size_and_batch_match_the_reference(batch, frames, h, w, backend):
    if backend == "natten":
        pytest.importorskip("natten")
    model = tiny_transformer()
    x, t, context = inputs(batch, frames, h, w)
    expected = reference(model, x, t, context)
    fs = install(model, backend=backend)
    try:
        got = run(model, x, t, context)
    finally:
        fs.remove()
    assert got.shape == x.shape
    assert err(got, expected) < 1e-4
    plain = run(model, x, t, context)                   # FreeSwim removed: stock diffusers again
    assert err(plain, expected) > 1e-3


@pytest.mark.parametrize("override_image", [False, True])
def test_i2v_image_cross_attention_option(override_image):
    model = tiny_transformer(image_dim=48)
    x, t, context = inputs(1, 2, 20, 28)
    image = torch.randn(1, 9, 48, generator=torch.Generator().manual_seed(4))
    expected = reference(model, x, t, context, image=image, override_image=override_image)
    fs = install(model, override_image=override_image)
    try:
        got = run(model, x, t, context, image=image)
    finally:
        fs.remove()
    assert err(got, expected) < 1e-4
    fs = install(model, override_image=not override_image)
    try:
        other = run(model, x, t, context, image=image)
    finally:
        fs.remove()
    assert err(other, expected) > 1e-4                  # the adapter follows the option


@pytest.mark.parametrize("cache", [None, 2])
def test_cond_and_uncond_batched_or_separate_agree(cache):
    """One call with rows named [uncond, cond] gives each row what its own pass's call gives, over
    guide and reuse steps."""
    model = tiny_transformer()
    x, t, context = inputs(1, 2, 20, 28, context_rows=2)
    fs = install(model, passes="cond", cache=cache)
    try:
        both = [run(model, torch.cat([x, x]), torch.cat([t, t]), context, name="both", step=s, sigma=sg,
                    rows=["uncond", "cond"]) for s, sg in ((0, 0.9), (1, 0.8), (2, 0.7))]
        fs.reset()
        apart = [(run(model, x, t, context[:1], "uncond", s, sg), run(model, x, t, context[1:], "cond", s, sg))
                 for s, sg in ((0, 0.9), (1, 0.8), (2, 0.7))]
    finally:
        fs.remove()
    for together, (uncond, cond) in zip(both, apart):
        assert err(together[:1], uncond) < 1e-5 and err(together[1:], cond) < 1e-5


@pytest.mark.parametrize("guidance, passes_stored", [(1.0, 1), (5.0, 2)])
def test_the_cache_is_sized_for_the_passes_that_run(guidance, passes_stored):
    """At guidance 1 diffusers' Wan pipelines make no unconditional call, so with passes
    cond_and_uncond the cache is planned for the conditional pass's features alone (one row of
    blocks x tokens x width values, float32 here); with guidance both passes' rows are planned."""
    model = tiny_transformer()
    x, t, context = inputs(1, 3, 20, 28)
    fs = install(model, passes="cond_and_uncond", cache=2, guidance_scale=guidance)
    try:
        run(model, x, t, context, "cond", 0, 0.9)
        planned = fs.run.report.cache_bytes
    finally:
        fs.remove()
    tokens = 3 * (20 // 2) * (28 // 2)
    assert planned == len(model.blocks) * tokens * HEADS * HEAD_DIM * 4 * passes_stored


def test_bad_inputs_are_refused_clearly():
    from freeswim_core.diffusers import CacheOptions, FreeSwim
    with pytest.raises(TypeError, match="WanTransformer3DModel"):
        FreeSwim(torch.nn.Linear(2, 2))
    model = tiny_transformer()
    with pytest.raises(ValueError, match="dual"):
        FreeSwim(model, dual=None, cache=CacheOptions())
    fs = install(model)
    try:
        with pytest.raises(ValueError, match="already installed"):
            install(model)
        x, t, context = inputs(2, 1, 16, 16)
        with pytest.raises(ValueError, match="freeswim_rows"):
            run(model, x, t, context, rows=["cond", "maybe"])
    finally:
        fs.remove()


def test_only_the_adapter_imports_diffusers():
    """The core and the nodes work without diffusers: importing every core module but the adapter
    leaves it unloaded, and no node module names it."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    code = ("import sys, pkgutil, importlib, freeswim_core\n"
            "for m in pkgutil.walk_packages(freeswim_core.__path__, 'freeswim_core.'):\n"
            "    if not m.name.startswith('freeswim_core.diffusers'):\n"
            "        importlib.import_module(m.name)\n"
            "assert 'diffusers' not in sys.modules, 'diffusers was imported'\n"
            "assert 'transformers' not in sys.modules, 'transformers was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for path in (root / "nodes").glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+(diffusers|freeswim_core\.diffusers|\.\.freeswim_core\.diffusers)",
                             path.read_text(), re.M), path.name


def test_self_attention_replaced_after_install_is_reported(caplog):
    """Another processor set on block 1's self-attention after FreeSwim (as a pack replacing the
    attention code would): that block is unwindowed, the report names it, the log says so once."""
    import logging

    from diffusers.models.transformers.transformer_wan import WanAttnProcessor
    caplog.set_level(logging.WARNING, logger="freeswim")
    model = tiny_transformer()
    x, t, context = inputs(1, 3, 20, 28)
    fs = install(model)
    try:
        run(model, x, t, context)
        assert fs.report.unreached_blocks == [] and not fs.report.warnings
        model.blocks[1].attn1.set_processor(WanAttnProcessor())
        run(model, x, t, context, step=1, sigma=0.8)
        run(model, x, t, context, step=2, sigma=0.7)
        assert fs.report.unreached_blocks == [1]
    finally:
        fs.remove()
    said = [r.getMessage() for r in caplog.records if "never reached FreeSwim" in r.getMessage()]
    assert len(said) == 1 and "1 of the model's 2 blocks (1)" in said[0]
    assert "attn1 processor is WanAttnProcessor" in said[0] and "before installing FreeSwim" in said[0]
