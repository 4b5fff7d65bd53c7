"""Parity of the diffusers adapter with the official FreeSwim code, on the same parity set as the
nodes (``$FREESWIM_PARITY_DIR``, by default public set A in tests/data/parity_a).

The set's tiny model is loaded by diffusers itself (``WanTransformer3DModel.from_pretrained`` on
a folder holding the set's config and weights), FreeSwim is installed with the reference settings
(the set's window from the native size that gives it, reference scale, inward), and each official
output is matched within the tolerance the set's manifest recommends. Pass kind, step and sigma
reach the adapter the way diffusers' pipelines give them: ``transformer.cache_context``.
"""
import pytest
import torch

from parity_model import PARITY, ParitySet, parity_tensors

diffusers = pytest.importorskip("diffusers")

SET = ParitySet()
TOL = SET.tol


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parity_model")
    (folder / "config.json").write_bytes((PARITY / "config.json").read_bytes())
    (folder / "diffusion_pytorch_model.safetensors").symlink_to(PARITY / "model.safetensors")
    model = diffusers.WanTransformer3DModel.from_pretrained(folder, dtype=torch.float32).eval()
    inputs, outputs = parity_tensors()
    return model, inputs, outputs


def install(model, passes, cache):
    from freeswim_core.diffusers import CacheOptions, DualOptions, FreeSwim, WindowOptions
    window = WindowOptions(native_size="custom", custom_width=SET.native_px[0], custom_height=SET.native_px[1],
                           inward=True, scale_mode="reference", backend="chunked")
    return FreeSwim(model, window=window, dual=DualOptions(passes=passes),
                    cache=CacheOptions(interval=2) if cache else None,
                    vae_scale_factor=SET.vae_factor)


def call(model, x, t, context, name=None, step=None, sigma=None):
    """The transformer's output; where the call had full-attention twins, with their rows after the
    caller's, as the pack's probe interface (freeswim_core.probes) shows them before they are cut."""
    import contextlib

    from freeswim_core import probes
    seen = []
    with torch.no_grad(), probes.probing(probes.Probe(on_output=lambda plan, out: seen.append(out))):
        with (model.cache_context(name, step_index=step, sigma=sigma) if name is not None
              else contextlib.nullcontext()):
            out = model(x, t, context, return_dict=False)[0]
    return seen[0] if seen else out


def close(a, b):
    return (a - b).abs().max().item()


def test_diffusers_loads_the_set_as_the_official_code_did(parity):
    model, inp, out = parity
    t = inp["timestep_guide"][:1]
    assert close(call(model, inp["latent"], t, inp["context"]), out["plain_cond_out"]) < TOL
    assert close(call(model, inp["latent"], t, inp["negative_context"]), out["plain_uncond_out"]) < TOL


@pytest.mark.parametrize("name,context_key,expected_key", [
    ("cond", "context", "nocache_cond_out"),
    ("uncond", "negative_context", "nocache_uncond_out"),   # the no-cache variant runs both rows for uncond too
])
def test_nocache_variant(parity, name, context_key, expected_key):
    model, inp, out = parity
    fs = install(model, "cond_and_uncond", cache=False)
    try:
        got = call(model, inp["latent"], inp["timestep_guide"][:1], inp[context_key], name, 0, SET.sigma_guide)
    finally:
        fs.remove()
    assert got.shape == out[expected_key].shape            # [window row, full row]
    assert close(got, out[expected_key]) < TOL


def test_cache_variant_guide_uncond_and_reuse(parity):
    model, inp, out = parity
    fs = install(model, "cond", cache=True)
    try:
        guide = call(model, inp["latent"], inp["timestep_guide"][:1], inp["context"], "cond", 0, SET.sigma_guide)
        assert close(guide, out["cache_guide_out"]) < TOL
        for block in range(SET.blocks):
            feats = fs.run.store.get(("cond", 0), ("block", block, "text"))
            assert close(feats.reshape(1, SET.tokens, SET.heads, SET.head_dim),
                         out[f"cache_guide_cross_block{block}"]) < TOL
        uncond = call(model, inp["latent"], inp["timestep_guide"][:1], inp["negative_context"], "uncond", 0,
                      SET.sigma_guide)
        assert uncond.shape[0] == 1                          # window-only: no twin row
        for row in (0, 1):
            assert close(uncond[0], out["cache_uncond_out"][row]) < TOL
        reuse = call(model, inp["latent_reuse"], inp["timestep_reuse"][:1], inp["context"], "cond", 1,
                     SET.sigma_reuse)
        for row in (0, 1):
            assert close(reuse[0], out["cache_reuse_out"][row]) < TOL
        # the reuse step does not read the text context at all
        again = call(model, inp["latent_reuse"], inp["timestep_reuse"][:1], inp["negative_context"], "cond", 1,
                     SET.sigma_reuse)
        assert torch.equal(reuse, again)
        assert (fs.report.guide_calls, fs.report.reuse_calls) == (1, 2)
    finally:
        fs.remove()


def test_removed_freeswim_leaves_stock_diffusers(parity):
    model, inp, out = parity
    fs = install(model, "cond", cache=True)
    call(model, inp["latent"], inp["timestep_guide"][:1], inp["context"], "cond", 0, SET.sigma_guide)
    fs.remove()
    got = call(model, inp["latent_reuse"], inp["timestep_reuse"][:1], inp["context"])
    assert close(got, out["plain_cond_reuse_inputs_out"]) < TOL
