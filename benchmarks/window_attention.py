"""Window-attention kernels side by side: time, memory, useful throughput, mask cost.

Backends
  flex       freeswim_core's FlexAttention backend (frame-innermost tokens,
             BlockMask from geometry, compiled)
  chunked    freeswim_core's exact tiled SDPA backend
  reference  the reference code's approach: frame-major tokens, BlockMask from
             ``create_block_mask`` over a mask function (compiled), compiled flex
  dense      full attention (SDPA), for scale; not a window

Useful FLOPs count only allowed (query, key) pairs: 4 * sum(keys per query) * D * heads.

Examples
  python benchmarks/window_attention.py                      # CPU, small grids
  python benchmarks/window_attention.py --preset gpu          # 1080p and 4K grids, 12 and 40 heads, bf16
  python benchmarks/window_attention.py --mask-only           # BlockMask construction at 1080p and 4K on CPU
  python benchmarks/window_attention.py --preset gpu --verify # and max abs error vs the exact chunked backend
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from freeswim_core import TokenGrid, Window, keys_per_query, window_attention  # noqa: E402
from harness.inductor_cache import cache_for_threads  # noqa: E402
from freeswim_core.attention.blocks import window_block_lists  # noqa: E402
from freeswim_core.families import variant  # noqa: E402

A13B, A14B = variant("1.3b").arch, variant("14b").arch    # native windows and heads (the registry's)
PRESETS = {
    # name: list of (label, grid, window, heads)
    "cpu": [
        ("tiny 3x12x20", (3, 12, 20), (7, 11), 2),
        ("small 5x30x52", (5, 30, 52), (15, 27), 2),
        ("480p-frames 9x30x52 w/ 240p window", (9, 30, 52), (15, 27), 4),
    ],
    "gpu": [
        ("1088x1920x81, 1.3B", (21, 68, 120), A13B.native_window(), A13B.heads),
        ("1088x1920x81, 14B", (21, 68, 120), A14B.native_window(), A14B.heads),
        ("2160x3840x81, 1.3B", (21, 135, 240), A13B.native_window(), A13B.heads),
        ("2160x3840x81, 14B", (21, 135, 240), A14B.native_window(), A14B.heads),
    ],
}
MASK_GRIDS = [("1088x1920x81", (21, 68, 120), A13B.native_window()),
              ("2160x3840x81", (21, 135, 240), A13B.native_window())]


def reference_mask_mod(grid: TokenGrid, window: Window):
    """The reference code's window rule as a mask_mod over frame-major token indices: the window
    centre clamped to ``[d, size - 1 - d]`` per axis, all frames."""
    T, H, W = grid.as_tuple()
    dh, dw = window.h // 2, window.w // 2

    def mask_mod(b, h, q_idx, kv_idx):
        qs, ks = q_idx % (H * W), kv_idx % (H * W)
        qh, qw, kh, kw = qs // W, qs % W, ks // W, ks % W
        ch = torch.clamp(qh, dh, H - 1 - dh)
        cw = torch.clamp(qw, dw, W - 1 - dw)
        return ((kh - ch).abs() <= dh) & ((kw - cw).abs() <= dw)

    return mask_mod


def reference_style(q, k, v, grid: TokenGrid, window: Window, scale):
    """Frame-major tokens, create_block_mask over the reference's mask rule, compiled flex."""
    from torch.nn.attention.flex_attention import create_block_mask
    mask_mod = reference_mask_mod(grid, window)
    t0 = time.perf_counter()
    bm = torch.compile(create_block_mask)(mask_mod, None, None, grid.tokens, grid.tokens, device=q.device)
    _sync(q.device)
    build = time.perf_counter() - t0
    flex = _compiled_flex()
    return (lambda: flex(q, k, v, block_mask=bm, scale=scale)), build, _block_mask_bytes(bm)


_FLEX = None


def _compiled_flex():
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention
        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def _block_mask_bytes(bm) -> int:
    return sum(t.numel() * t.element_size() for t in (bm.kv_num_blocks, bm.kv_indices,
                                                        bm.full_kv_num_blocks, bm.full_kv_indices,
                                                        bm.q_num_blocks, bm.q_indices,
                                                        bm.full_q_num_blocks, bm.full_q_indices)
               if t is not None)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeat):
    """(median seconds of ``repeat`` calls, seconds of the first call: compilation included)."""
    t0 = time.perf_counter()
    fn()  # warm-up / compile
    _sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first


def random_qkv(heads: int, tokens: int, head_dim: int, device, dtype, seed: int = 0):
    """q, k, v drawn on ``device`` in ``dtype`` (at 4K with 40 heads, 1e10 values: minutes on a CPU's
    generator, milliseconds on a GPU's), as inference tensors, as ComfyUI's activations are."""
    with torch.inference_mode():
        g = torch.Generator(device=device).manual_seed(seed)
        return [torch.randn(1, heads, tokens, head_dim, generator=g, device=device, dtype=dtype) for _ in range(3)]


def bench_case(label, grid, window, heads, backend, device, dtype, repeat, head_dim=128, verify=False):
    grid, window = TokenGrid(*grid), Window(*window)
    L = grid.tokens
    q, k, v = random_qkv(heads, L, head_dim, device, dtype)
    scale = head_dim ** -0.5
    useful = 4.0 * float(keys_per_query(grid, window).sum()) * head_dim * heads
    build, mask_bytes = 0.0, 0
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if backend == "reference":
        fn, build, mask_bytes = reference_style(q, k, v, grid, window, scale)
    elif backend == "dense":
        useful = 4.0 * L * L * head_dim * heads
        fn = lambda: F.scaled_dot_product_attention(q, k, v, scale=scale)  # noqa: E731
    else:
        if backend == "flex":
            t0 = time.perf_counter()
            lists = window_block_lists(grid, window, device=device)
            _sync(device)
            build, mask_bytes = time.perf_counter() - t0, lists.nbytes()
        fn = lambda: window_attention(q, k, v, grid, window, scale=scale, backend=backend)  # noqa: E731
    try:
        with torch.inference_mode():
            sec, first = _time(fn, device, repeat)
    except Exception as exc:  # a backend that cannot run this size is a result, not a crash
        return dict(label=label, backend=backend, heads=heads, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    err = None
    if verify and backend in ("flex", "reference"):
        # exact tiled reference on the same inputs; both backends return frame-major tokens
        with torch.inference_mode():
            got = fn()
            ref = window_attention(q, k, v, grid, window, scale=scale, backend="chunked")
            err = (got.float() - ref.float()).abs().max().item()
    return dict(label=label, backend=backend, heads=heads, tokens=L, ms=sec * 1e3, first_call_ms=first * 1e3,
                tflops=useful / sec / 1e12, mask_build_ms=build * 1e3, mask_mb=mask_bytes / 1e6,
                peak_gb=None if peak is None else peak / 1e9, max_err=err)



def center_clamp_mask(grid: TokenGrid, window: Window, device) -> torch.Tensor:
    """``[L, L]`` boolean: key visible to query, by :func:`reference_mask_mod` (odd windows only, where
    the reference rule is stated), evaluated over one frame's positions and repeated over frames."""
    if window.h % 2 == 0 or window.w % 2 == 0:
        raise ValueError("center_clamp_mask: the reference rule is stated for odd windows")
    T, H, W = grid.as_tuple()
    pos = torch.arange(H * W, device=device)
    spatial = reference_mask_mod(grid, window)(None, None, pos[:, None], pos[None])     # [query, key]
    return spatial[None, :, None, :].expand(T, H * W, T, H * W).reshape(grid.tokens, grid.tokens)


def backends_check(label, grid, window, heads, device, dtype, head_dim=128) -> list[dict]:
    """Every backend through ``window_attention`` against a dense attention masked by the reference
    rule (:func:`center_clamp_mask`), computed in float32 from the same inputs: max abs error and
    the relative error ``||out - ref|| / ||ref||``, per backend, with the time of one call."""
    from freeswim_core.attention import backend_for
    grid, window = TokenGrid(*grid), Window(*window)
    q, k, v = random_qkv(heads, grid.tokens, head_dim, device, dtype, seed=1)
    scale = head_dim ** -0.5
    rows = []
    with torch.inference_mode():
        mask = center_clamp_mask(grid, window, device)
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=scale)
        del mask
        from freeswim_core.attention.natten_backend import natten_module
        for backend in (("natten",) if natten_module() is not None else ()) + ("flex", "chunked", "auto"):
            try:
                fn = lambda: window_attention(q, k, v, grid, window, scale=scale, backend=backend)  # noqa: E731
                sec, first = _time(fn, device, 1)
                out = fn().float()
            except Exception as exc:
                rows.append(dict(label=label, backend=backend, check="vs dense masked",
                                 error=f"{type(exc).__name__}: {str(exc)[:200]}"))
                continue
            rows.append(dict(label=label, backend=backend, check="vs dense masked", heads=heads, tokens=grid.tokens,
                             used=backend_for(q, grid, window, backend), ms=sec * 1e3, first_call_ms=first * 1e3,
                             max_err=(out - ref).abs().max().item(),
                             rel_err=((out - ref).norm() / ref.norm()).item()))
            del out
    return rows


def mask_only():
    """BlockMask construction on CPU, each grid in a fresh process for a clean peak-memory reading."""
    rows = []
    for label, grid, window in MASK_GRIDS:
        code = (
            "import sys, time, resource, json, torch; sys.path.insert(0, %r)\n"
            "from freeswim_core import TokenGrid, Window, keys_per_query\n"
            "from freeswim_core.attention.blocks import window_block_lists\n"
            "window_block_lists(TokenGrid(2, 12, 20), Window(7, 11))\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "import psutil; rss0 = psutil.Process().memory_info().rss\n"
            "t = time.perf_counter(); bl = window_block_lists(TokenGrid(*%r), Window(*%r)); dt = time.perf_counter() - t\n"
            "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
            "print(json.dumps(dict(s=dt, extra_mb=(peak - rss0) / 1e6, lists_mb=bl.nbytes() / 1e6,\n"
            "     visited=bl.visited_blocks(), full=int(bl.full_kv_num_blocks.sum()), qblocks=bl.num_q_blocks,\n"
            "     useful=float(keys_per_query(TokenGrid(*%r), Window(*%r)).sum()))))\n"
        ) % (str(Path(__file__).resolve().parents[1]), grid, window, grid, window)
        res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        check=True).stdout.strip().splitlines()[-1])
        rows.append((label, grid, window, res))
    print("| grid | tokens | window | build (s) | peak extra RSS (MB) | block lists (MB) | visited blocks "
          "| full blocks | useful share of computed pairs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, grid, window, r in rows:
        print(f"| {label} ({grid[0]}x{grid[1]}x{grid[2]}) | {grid[0] * grid[1] * grid[2]:,} | {window[0]}x{window[1]} "
              f"| {r['s']:.3f} | {r['extra_mb']:.0f} | {r['lists_mb']:.0f} | {r['visited']:,} "
              f"| {r['full'] / r['visited']:.1%} | {r['useful'] / (r['visited'] * 128 * 128):.1%} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    ap.add_argument("--backends", default=None, help="comma list of flex,chunked,reference,dense")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mask-only", action="store_true")
    ap.add_argument("--verify", action="store_true",
                    help="also report max abs error against the exact chunked backend (slow at 4K)")
    a = ap.parse_args()
    if a.mask_only:
        mask_only()
        return
    cache_for_threads()      # the reference-style flex compiles on the CPU too: one cache per thread count
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = a.preset or ("gpu" if device.type == "cuda" else "cpu")
    dtype = getattr(torch, a.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    backends = (a.backends or ("flex,reference,dense" if device.type == "cuda" else
                               "chunked,flex,reference,dense")).split(",")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}; dtype {str(dtype).split('.')[-1]}; head dim 128; "
          f"median of {a.repeat} after one warm-up (compile) call")
    print("| case | backend | heads | tokens | time (ms) | useful TFLOP/s | mask build (ms) | mask (MB) "
          "| peak GPU (GB) | max abs err vs chunked |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, grid, window, heads in PRESETS[preset]:
        for backend in backends:
            r = bench_case(label, grid, window, heads, backend, device, dtype, a.repeat, verify=a.verify)
            if "error" in r:
                print(f"| {label} | {backend} | {heads} | | failed: {r['error']} | | | | |")
                continue
            peak = "" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
            err = "" if r["max_err"] is None else f"{r['max_err']:.2e}"
            print(f"| {label} | {backend} | {heads} | {r['tokens']:,} | {r['ms']:.1f} | {r['tflops']:.3f} "
                  f"| {r['mask_build_ms']:.1f} | {r['mask_mb']:.1f} | {peak} | {err} |", flush=True)


if __name__ == "__main__":
    main()
