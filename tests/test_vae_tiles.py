"""The VAE paths have no seams in time: every frame in one piece, spatial tiles only when the memory
plan needs them; the VAE memory plan against the trace of the real Wan VAE; the workflows."""
import json
from pathlib import Path

import pytest
import torch

from freeswim_core.memory.vae import plan_vae, vae_call_bytes

REPO = Path(__file__).resolve().parents[1]
LATENT = torch.randn(1, 16, 21, 12, 16, generator=torch.Generator().manual_seed(0))   # 81 frames, 128x96 px


@pytest.fixture(scope="module")
def vae(comfy):
    import comfy.sd
    from harness.tiny_wan import tiny_wan_vae_state_dict
    return comfy.sd.VAE(sd=tiny_wan_vae_state_dict(dim=8, seed=5))


def _frame_errors(x, ref):
    d = (x.float() - ref.float()).abs().reshape(-1, *ref.shape[-3:])
    return d.flatten(1).amax(1)                 # the largest error of each frame


def _late_over_early(errors):
    """How much larger the errors of the frames after the first 56 are than those before (a temporal
    tile of 16 latent frames ends there)."""
    return (errors[56:].mean() / errors[:56].mean().clamp(min=1e-12)).item()


def test_decode_and_encode_take_every_frame_at_once(comfy, vae, monkeypatch):
    """Untiled where it fits: the node's decode and encode are ComfyUI's own, bit for bit. Forced into
    spatial tiles, every frame keeps the same spatial-seam error (no frame later in the clip is
    worse), while a temporal tile of 16 latent frames (the old setting) breaks the clip at frame 56."""
    tiles = comfy.pack_module("nodes.vae_tiles")
    plan_mod = comfy.pack_module("freeswim_core.memory.vae")
    with torch.inference_mode():
        ref = vae.decode(LATENT)
        ours, plan = tiles.decode(vae, LATENT, "test")
        assert plan.tile is None and torch.equal(ours, ref)
        frames = ref.reshape(-1, *ref.shape[-3:])
        encoded, plan = tiles.encode(vae, frames, "test")
        assert plan.tile is None and torch.equal(encoded, vae.encode(frames))

        monkeypatch.setattr(plan_mod, "MIN_TILE", 64)
        monkeypatch.setattr(plan_mod, "TILE_STEP", 32)
        monkeypatch.setattr(plan_mod, "MIN_OVERLAP", 16)
        traits = tiles.vae_traits(vae)
        budget = int(vae_call_bytes("decode", 64, 64, 81, **traits) * 1.1) + 1
        monkeypatch.setattr(tiles, "vae_budget_bytes", lambda v: budget)
        tiled, plan = tiles.decode(vae, LATENT, "test")
        assert plan.tile == (64, 64) and plan.tiles == 6 and plan.fits
        old = vae.decode_tiled(LATENT, tile_x=64, tile_y=64, overlap=8, tile_t=16, overlap_t=2)
    assert tiled.shape == ref.shape
    spatial = _frame_errors(tiled, ref)
    assert spatial.min() > 0                      # really tiled
    assert _late_over_early(spatial) < 1.5
    assert _late_over_early(_frame_errors(old, ref)) > 100


@pytest.mark.parametrize("kind,width,height,frames", [("decode", 1920, 1088, 81), ("decode", 1536, 1536, 81),
                                                      ("encode", 3840, 2160, 81), ("encode", 1024, 768, 49)])
def test_vae_plan_agrees_with_the_trace(comfy, kind, width, height, frames):
    from comfy.ldm.wan.vae import Decoder3d
    from harness.vae_trace import trace_vae
    r = trace_vae(kind, width, height, frames)
    planned = vae_call_bytes(kind, width, height, frames, streamed=hasattr(Decoder3d, "run_up"))
    assert abs(planned / r.peak_bytes - 1) < 0.10, (planned / 1e9, r.peak_bytes / 1e9)


def test_vae_plan_tiles_only_in_space_and_only_when_needed():
    """4K decode of 81 frames in one piece needs 60.6 GB: on a 24 GB card it is tiled in space
    (every frame at once), on a 80 GB card it is not."""
    whole = plan_vae("decode", 3840, 2160, 81, 80 * 10**9)
    assert whole.tile is None and whole.fits and 60e9 < whole.peak_bytes < 61e9
    tiled = plan_vae("decode", 3840, 2160, 81, 24 * 10**9)
    assert tiled.tile is not None and tiled.fits and tiled.peak_bytes * 1.1 <= 24e9
    assert tiled.overlap >= 64 and tiled.tile[0] % 64 == 0
    bigger = (tiled.tile[0] + 64, min(tiled.tile[1] + 64, 2160))
    assert vae_call_bytes("decode", *bigger, 81) * 1.1 > 24e9         # the largest tile that fits
    assert plan_vae("encode", 1920, 1088, 81, 24 * 10**9).tile is None


def test_workflows_never_tile_the_vae_in_time():
    """Every tiled VAE node in the shipped workflows takes all the clip's frames at once."""
    for path in sorted((REPO / "workflows").glob("*.json")):
        graph = json.loads(path.read_text())
        nodes = graph["nodes"]
        lengths = [n["widgets_values"][2] for n in nodes
                   if n["type"] in ("EmptyHunyuanLatentVideo", "WanImageToVideo", "EmptyLTXVLatentVideo")]
        tiled = [n for n in nodes if n["type"] in ("VAEDecodeTiled", "VAEEncodeTiled")]
        for n in tiled:
            temporal_size = n["widgets_values"][2]
            assert temporal_size >= max(lengths), f"{path.name}: {n['type']} tiles {max(lengths)} frames in time"


def test_planned_tiles_have_fewer_and_smaller_seams_than_the_default(comfy, vae):
    """At 1920x1088 the plan for an 81-frame clip on a 12 GB GPU (two 1280x1088 tiles, 136 px
    overlap) against ComfyUI's default VAE Decode (Tiled) settings (512 px tiles, 64 px overlap):
    fewer seams, and a lower mean and max error per seam against the untiled decode."""
    from benchmarks.vae_seams import compare
    r = compare(vae, 1920, 1088, 1, 12)
    plan, default = r["plan"], r["default"]
    assert plan["tile"] == [1280, 1088] and 0 < len(plan["seams"]) < len(default["seams"])
    assert plan["seam_mean"] < default["seam_mean"] and plan["seam_max"] < default["seam_max"]
