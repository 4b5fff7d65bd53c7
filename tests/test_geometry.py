"""Geometry: token grids, native windows, the window mask against the official one."""

import pytest
import torch
from safetensors.torch import load_file

from freeswim_core import (TokenGrid, Window, attention_scale, axis_windows, keys_per_query,
                           native_window, native_window_tokens, token_grid_from_latent)
from parity_model import PARITY, ParitySet
from reference import axis_allowed, dense_window_mask


def test_native_window_follows_reference_rule():
    # Wan2.1 480p: d_h = 480 // 16 // 2 = 15 -> 31 rows, d_w = 832 // 16 // 2 = 26 -> 53 columns.
    assert native_window(832, 480, 16) == Window(31, 53)
    # 720p 14B: 720 // 16 = 45 -> d 22 -> 45; 1280 // 16 = 80 -> d 40 -> 81.
    assert native_window(1280, 720, 16) == Window(45, 81)
    # Wan2.2 TI2V-5B: 16x VAE and 2x2 patches = 32 px per token: 704 // 32 = 22 -> 23; 1280 // 32 = 40 -> 41.
    assert native_window(1280, 704, 32) == Window(23, 41)
    with pytest.raises(ValueError):
        native_window_tokens(8, 16)


def test_token_grid_from_latent_rounds_up_like_patch_padding():
    assert token_grid_from_latent((1, 16, 21, 136, 240), (1, 2, 2)) == TokenGrid(21, 68, 120)
    # odd latent sizes are padded by the model to the next patch multiple
    assert token_grid_from_latent((2, 16, 5, 13, 9), (1, 2, 2)) == TokenGrid(5, 7, 5)
    with pytest.raises(ValueError):
        token_grid_from_latent((1, 16, 24, 40), (1, 2, 2))


@pytest.mark.parametrize("n,size", [(12, 7), (20, 11), (9, 4), (8, 8), (5, 9), (1, 3), (10, 1), (17, 6)])
@pytest.mark.parametrize("inward", [True, False])
def test_axis_windows_match_reference(n, size, inward):
    start, end = axis_windows(n, size, inward)
    got = torch.zeros(n, n, dtype=torch.bool)
    for c in range(n):
        got[c, int(start[c]):int(end[c]) + 1] = True
    assert torch.equal(got, axis_allowed(n, size, inward))
    if inward:
        assert bool(((end - start + 1) == min(size, n)).all()), "inward windows keep their full size"


def test_even_window_puts_extra_token_after_query():
    start, end = axis_windows(20, 6, inward=True)
    c = 10
    assert (int(start[c]), int(end[c])) == (c - 2, c + 3)


def test_window_mask_matches_official_parity_mask():
    ps = ParitySet()
    official = load_file(str(PARITY / "outputs.safetensors"))["window_mask"]
    # the set's grid and half sizes d_h, d_w give a (2 d_h + 1) x (2 d_w + 1) window
    assert ps.window == (2 * ps.half[0] + 1, 2 * ps.half[1] + 1)
    assert native_window(*ps.native_px, ps.px_per_token) == Window(*ps.window)
    ours = dense_window_mask(ps.grid, ps.window, inward=True)
    assert official.shape == ours.shape == (ps.tokens, ps.tokens)
    assert torch.equal(official, ours)
    # every query sees F * rows * cols keys, as the manifest states
    assert bool((keys_per_query(TokenGrid(*ps.grid), Window(*ps.window)) == ps.keys_per_query).all())
    assert int(official.sum(1).min()) == ps.keys_per_query


def test_library_mask_equals_official_mask():
    """The library's own per-axis bounds reproduce the official mask bit for bit."""
    ps = ParitySet()
    (F, H, W), (wh, ww) = ps.grid, ps.window
    official = load_file(str(PARITY / "outputs.safetensors"))["window_mask"]
    sh, eh = axis_windows(H, wh)
    sw, ew = axis_windows(W, ww)
    h = torch.arange(H)
    w = torch.arange(W)
    ah = (h[None] >= sh[:, None]) & (h[None] <= eh[:, None])
    aw = (w[None] >= sw[:, None]) & (w[None] <= ew[:, None])
    spatial = (ah[:, None, :, None] & aw[None, :, None, :]).reshape(H * W, H * W)
    assert torch.equal(spatial.repeat(F, F), official)


def test_no_inward_mask_differs_from_official_at_borders():
    ps = ParitySet()
    official = load_file(str(PARITY / "outputs.safetensors"))["window_mask"]
    clipped = dense_window_mask(ps.grid, ps.window, inward=False)
    assert not torch.equal(official, clipped)
    assert int(clipped.sum(1).min()) < ps.keys_per_query


def _find(tree, key):
    """First value stored under ``key`` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            found = _find(item, key)
            if found is not None:
                return found
    return None


def test_reference_attention_scale_matches_parity():
    import json
    manifest = json.loads((PARITY / "manifest.json").read_text())
    recorded = float(load_file(str(PARITY / "outputs.safetensors"))["attention_scale"][0])
    head_dim = ParitySet().head_dim
    assert attention_scale("reference", head_dim) == pytest.approx(recorded, rel=1e-6)
    assert attention_scale("reference", head_dim) == pytest.approx(_find(manifest, "attention_scale_float64"), rel=1e-12)
    assert attention_scale("none", 128) == pytest.approx(128 ** -0.5)
    # native mode with the 480p grid is the reference constant; with 720p it is smaller
    assert attention_scale("native", 128, 30 * 52) == pytest.approx(attention_scale("reference", 128))
    assert attention_scale("native", 128, 45 * 80) < attention_scale("reference", 128)
    with pytest.raises(ValueError):
        attention_scale("native", 128)
    with pytest.raises(ValueError):
        attention_scale("bogus", 128)
