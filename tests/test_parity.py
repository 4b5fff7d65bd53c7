"""Parity with the official FreeSwim code (a parity set: ``$FREESWIM_PARITY_DIR``, by default
public set A in tests/data/parity_a).

The tiny diffusers Wan is loaded into ComfyUI's WanModel; the FreeSwim nodes are
applied with the reference settings (the set's window, from the native size that
gives it, reference scale, inward) and every official output is matched within
the tolerance the set's manifest recommends. Grid, window, head size, timesteps
and tolerance all come from the set's manifest and config.
"""
import pytest
import torch

from parity_model import ParitySet, load_parity_model, parity_tensors

SET = ParitySet()
TOL = SET.tol
SCHEDULE = SET.schedule              # guide step, reuse step (sigma = t / 1000)


@pytest.fixture(scope="module")
def parity(comfy):
    model = load_parity_model()
    inputs, outputs = parity_tensors()
    (windowed,) = comfy.run_node("FreeSwimWindowAttentionPatch", model=model, native_size="custom",
                                 custom_width=SET.native_px[0], custom_height=SET.native_px[1], inward=True,
                                 attention_scale="reference", backend="chunked")
    return comfy, model, windowed, inputs, outputs


def dual(comfy, model, passes, execution="batched"):
    (m,) = comfy.run_node("FreeSwimDualPathOverride", model=model, passes=passes,
                          override_image_cross=False, start_percent=0.0, end_percent=1.0,
                          execution=execution)
    return m


def cached(comfy, model, interval=2):
    (m,) = comfy.run_node("FreeSwimCrossAttnCache", model=model, guide_interval=interval,
                          storage="auto", precision="model")
    return m


def call(model, patched, x, t, context, to):
    with torch.no_grad():
        return model.model.diffusion_model(x, t, context, transformer_options=to)


def with_twins(comfy, run_call):
    """The output of ``run_call()`` with the full-attention twins' rows after the caller's, as the
    pack's probe interface (freeswim_core.probes) shows a model call's output before they are cut."""
    probes = comfy.pack_module("freeswim_core.probes")
    seen = []
    with probes.probing(probes.Probe(on_output=lambda plan, out: seen.append(out))):
        run_call()
    assert len(seen) == 1, "the call had no twin rows"
    return seen[0]


def close(a, b):
    return (a - b).abs().max().item()


def test_key_mapping_reproduces_stock_diffusers(parity):
    comfy, model, _, inp, out = parity
    t = inp["timestep_guide"][:1]
    assert close(call(model, None, inp["latent"], t, inp["context"], {}), out["plain_cond_out"]) < TOL
    assert close(call(model, None, inp["latent"], t, inp["negative_context"], {}), out["plain_uncond_out"]) < TOL
    assert close(call(model, None, inp["latent_reuse"], inp["timestep_reuse"][:1], inp["context"], {}),
                 out["plain_cond_reuse_inputs_out"]) < TOL


@pytest.mark.parametrize("execution", ["batched", "sequential"])
@pytest.mark.parametrize("kind,context_key,expected_key", [
    (0, "context", "nocache_cond_out"),
    (1, "negative_context", "nocache_uncond_out"),     # the no-cache variant runs both rows for uncond too
])
def test_nocache_variant(parity, kind, context_key, expected_key, execution):
    comfy, model, windowed, inp, out = parity
    patched = dual(comfy, windowed, "cond_and_uncond", execution)
    to = comfy.sampling_options(patched, cond_or_uncond=[kind], uuids=["a"], sigma=SET.sigma_guide,
                                sample_sigmas=SCHEDULE)
    got = with_twins(comfy, lambda: call(model, patched, inp["latent"], inp["timestep_guide"][:1], inp[context_key], to))
    assert got.shape == out[expected_key].shape            # [window row, full row]
    assert close(got, out[expected_key]) < TOL


@pytest.mark.parametrize("execution", ["batched", "sequential"])
def test_cache_variant_guide_uncond_and_reuse(parity, execution):
    comfy, model, windowed, inp, out = parity
    patched = cached(comfy, dual(comfy, windowed, "cond", execution))
    run = comfy.new_run()

    def step(kind, sigma, x, t, context):
        to = comfy.sampling_options(patched, cond_or_uncond=[kind], uuids=["pos" if kind == 0 else "neg"],
                                    sigma=sigma, sample_sigmas=SCHEDULE, run=run)
        return call(model, patched, x, t, context, to)

    guide = with_twins(comfy, lambda: step(0, SET.sigma_guide, inp["latent"], inp["timestep_guide"][:1], inp["context"]))
    assert close(guide, out["cache_guide_out"]) < TOL
    for block in range(SET.blocks):
        feats = run.store.get(("pos", 0), ("block", block, "text"))
        assert feats is not None
        assert close(feats.reshape(1, SET.tokens, SET.heads, SET.head_dim), out[f"cache_guide_cross_block{block}"]) < TOL

    uncond = step(1, SET.sigma_guide, inp["latent"], inp["timestep_guide"][:1], inp["negative_context"])
    assert uncond.shape[0] == 1                              # window-only: no twin row
    for row in (0, 1):
        assert close(uncond[0], out["cache_uncond_out"][row]) < TOL

    reuse = step(0, SET.sigma_reuse, inp["latent_reuse"], inp["timestep_reuse"][:1], inp["context"])
    for row in (0, 1):
        assert close(reuse[0], out["cache_reuse_out"][row]) < TOL
    # the reuse step does not read the text context at all
    reuse_neg = step(0, SET.sigma_reuse, inp["latent_reuse"], inp["timestep_reuse"][:1], inp["negative_context"])
    assert torch.equal(reuse, reuse_neg)
    assert run.report.guide_calls == 1 and run.report.reuse_calls == 2


def test_cache_guide_equals_nocache_cond(parity):
    """The official guide step is bitwise the no-cache conditional pass; ours is the same computation."""
    comfy, model, windowed, inp, out = parity
    a = dual(comfy, windowed, "cond")
    b = cached(comfy, a)
    outs = []
    for patched in (a, b):
        to = comfy.sampling_options(patched, cond_or_uncond=[0], uuids=["x"], sigma=SET.sigma_guide,
                                    sample_sigmas=SCHEDULE)
        outs.append(with_twins(comfy, lambda: call(model, patched, inp["latent"], inp["timestep_guide"][:1],
                                                   inp["context"], to)))
    assert torch.equal(outs[0], outs[1])


def test_repository_copy_of_set_a_is_the_shared_one():
    """The copy in tests/data is what make test uses without ../shared; where ../shared/parity
    exists (CI), every file must be byte-identical to it."""
    import hashlib
    import json
    from pathlib import Path

    from parity_model import PARITY_A
    manifest = json.loads((PARITY_A / "manifest.json").read_text())
    shared = Path(__file__).resolve().parents[2] / "shared" / "parity"
    for path in sorted(PARITY_A.iterdir()):
        if shared.is_dir():
            assert path.read_bytes() == (shared / path.name).read_bytes(), path.name
    hashes = json.dumps(manifest)
    for name in ("model.safetensors", "inputs.safetensors", "outputs.safetensors"):
        assert hashlib.sha256((PARITY_A / name).read_bytes()).hexdigest() in hashes, name
