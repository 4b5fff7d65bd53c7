"""window_attention against a dense masked attention built independently (tests/reference.py)."""
import pytest
import torch

from freeswim_core import TokenGrid, Window, window_attention
from freeswim_core.attention.blocks import window_block_lists
from reference import dense_window_mask, full_attention, masked_attention

CASES = [
    # (B, heads, grid, window, inward)
    (1, 1, (3, 12, 20), (7, 11), True),      # parity set A geometry
    (2, 3, (2, 9, 13), (5, 7), True),        # B > 1, heads > 1
    (1, 2, (1, 10, 6), (4, 3), True),        # one frame, even x odd window
    (1, 2, (2, 7, 16), (6, 8), False),       # even windows, no-inward
    (1, 1, (3, 12, 20), (7, 11), False),     # no-inward on the parity geometry
    (2, 1, (4, 5, 11), (9, 4), True),        # window taller than grid: full rows
    (1, 2, (2, 16, 5), (3, 5), True),        # non-square, window as wide as grid
    (1, 1, (1, 1, 9), (1, 3), True),         # degenerate single row
]


def _qkv(B, NH, L, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, NH, L, D, generator=g).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("B,NH,grid,window,inward", CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
def test_chunked_matches_dense_reference(B, NH, grid, window, inward, dtype, tol):
    T, H, W = grid
    q, k, v = _qkv(B, NH, T * H * W, 32, dtype)
    scale = 0.18
    out = window_attention(q, k, v, grid, window, inward=inward, scale=scale, backend="chunked")
    ref = masked_attention(q, k, v, dense_window_mask(grid, window, inward), scale)
    assert out.shape == q.shape and out.dtype == dtype
    assert (out.double() - ref).abs().max().item() < tol


@pytest.mark.parametrize("B,NH,grid,window,inward", CASES[:4] + CASES[5:7])
@pytest.mark.parametrize("budget,additive", [(1 << 28, True), (20_000, False)])
def test_chunked_batched_tiles_match_dense_reference(B, NH, grid, window, inward, budget, additive):
    """Several tiles per SDPA call (the CUDA default), sharing one mask per window pattern: all tiles
    of a pattern at once, or as many as a small score budget allows; masks as additive biases with
    rows padded to 16 elements (the CUDA form) or boolean."""
    from freeswim_core.attention.chunked import chunked_window_attention
    T, H, W = grid
    q, k, v = _qkv(B, NH, T * H * W, 32, torch.float32, seed=5)
    out = chunked_window_attention(q, k, v, TokenGrid(*grid), Window(*window), inward=inward, scale=0.18,
                                   max_score_bytes=budget, batch_tiles=True, additive_masks=additive)
    ref = masked_attention(q, k, v, dense_window_mask(grid, window, inward), 0.18)
    assert (out.double() - ref).abs().max().item() < 2e-5


def test_chunked_respects_memory_budget_tiling():
    """A tiny score budget forces 1x1 tiles and one head per call; the result must not change."""
    from freeswim_core.attention.chunked import chunked_window_attention
    grid, window = TokenGrid(2, 9, 13), Window(5, 7)
    q, k, v = _qkv(2, 3, grid.tokens, 16, torch.float32, seed=3)
    small = chunked_window_attention(q, k, v, grid, window, max_score_bytes=64)
    ref = masked_attention(q, k, v, dense_window_mask((2, 9, 13), (5, 7)))
    assert (small.double() - ref).abs().max().item() < 2e-5


@pytest.mark.parametrize("backend", ["chunked", "auto", "flex"])
@pytest.mark.parametrize("grid,window", [((2, 6, 8), (6, 8)), ((1, 5, 7), (9, 9))])
def test_window_covering_grid_is_full_attention(backend, grid, window):
    T, H, W = grid
    q, k, v = _qkv(2, 2, T * H * W, 16, torch.float32, seed=1)
    out = window_attention(q, k, v, grid, window, backend=backend)
    assert (out.double() - full_attention(q, k, v)).abs().max().item() < 1e-5


def test_window_changes_the_result_when_smaller_than_grid():
    q, k, v = _qkv(1, 2, 3 * 12 * 20, 32, torch.float32)
    win = window_attention(q, k, v, (3, 12, 20), (7, 11), backend="chunked")
    assert (win.double() - full_attention(q, k, v)).abs().max().item() > 1e-2


def test_bad_inputs_are_rejected_clearly():
    q, k, v = _qkv(1, 1, 100, 16, torch.float32)
    with pytest.raises(ValueError, match="does not match the token grid"):
        window_attention(q, k, v, (2, 7, 7), (3, 3))
    with pytest.raises(ValueError, match="unknown window attention backend"):
        window_attention(q, k, v, (1, 10, 10), (3, 3), backend="magic")
    with pytest.raises(ValueError, match="one shape"):
        window_attention(q, k[:, :, :50], v, (1, 10, 10), (3, 3))
    with pytest.raises(ValueError):
        window_attention(q, k, v, (1, 10, 10), (0, 3))


# --- block-sparse structure (what the flex backend relies on), exact, no compile ----------

def _dense_of(num, idx, n):
    """[n, n] bool from per-row block counts and left-packed block indices."""
    out = torch.zeros(n, n, dtype=torch.bool)
    for r in range(n):
        out[r, idx[r, : int(num[r])].long()] = True
    return out


def _reorder_frame_innermost(mask, grid):
    T, H, W = grid
    perm = torch.arange(T * H * W).reshape(T, H, W).permute(1, 2, 0).reshape(-1)
    return mask[perm][:, perm]


@pytest.mark.parametrize("grid,window,inward,bs", [
    ((3, 12, 20), (7, 11), True, 128),
    ((21, 14, 24), (7, 11), True, 128),     # 21 frames: ~6 positions per block
    ((1, 30, 40), (11, 15), True, 128),     # one frame: blocks span rows
    ((2, 9, 13), (4, 6), False, 16),        # even, no-inward, small blocks
    ((5, 8, 3), (3, 9), True, 8),           # full-width windows: blocks straddle rows
    ((2, 10, 10), (5, 5), True, 64),
])
def test_block_lists_equal_blockwise_reduction_of_dense_mask(grid, window, inward, bs):
    T, H, W = grid
    L = T * H * W
    dense = _reorder_frame_innermost(dense_window_mask(grid, window, inward), grid)
    n = -(-L // bs)
    padded = torch.zeros(n * bs, n * bs, dtype=torch.bool)
    padded[:L, :L] = dense
    valid = torch.zeros(n * bs, n * bs, dtype=torch.bool)
    valid[:L, :L] = True
    blocks = padded.reshape(n, bs, n, bs)
    vblocks = valid.reshape(n, bs, n, bs)
    any_ref = blocks.any(3).any(1)
    # a block is full when every existing (query, key) pair in it is allowed
    all_ref = (blocks | ~vblocks).all(3).all(1) & vblocks.any(3).any(1)

    lists = window_block_lists(TokenGrid(*grid), Window(*window), inward=inward, block_size=bs)

    partial = _dense_of(lists.kv_num_blocks, lists.kv_indices, n)
    full = _dense_of(lists.full_kv_num_blocks, lists.full_kv_indices, n)
    assert not (partial & full).any()
    assert torch.equal(full, all_ref)
    assert torch.equal(partial | full, any_ref)
    # indices are ascending within each row
    for r in range(n):
        row = lists.kv_indices[r, : int(lists.kv_num_blocks[r])]
        assert bool((row[1:] > row[:-1]).all())


# --- flex backend, compiled on the CPU (inductor's C++ flex template) ---------------------

FLEX_CASES = [
    (2, 2, (3, 12, 20), (7, 11), True, torch.float32, 1e-5),   # L = 720: not a multiple of 128
    (1, 2, (1, 10, 24), (4, 9), False, torch.float32, 1e-5),   # even window, no-inward, T = 1
]


@pytest.mark.parametrize("B,NH,grid,window,inward,dtype,tol", FLEX_CASES)
def test_flex_matches_dense_reference(B, NH, grid, window, inward, dtype, tol):
    T, H, W = grid
    q, k, v = _qkv(B, NH, T * H * W, 32, dtype, seed=7)
    out = window_attention(q, k, v, grid, window, inward=inward, scale=0.2, backend="flex")
    ref = masked_attention(q, k, v, dense_window_mask(grid, window, inward), 0.2)
    assert (out.double() - ref).abs().max().item() < tol


def test_flex_head_groups_are_equal_and_bounded():
    """The flex backend runs one batch row and an equal head group per call (one compiled shape)
    whose reordered q, k, v and output fit its copy budget (1 GiB = 1.074 GB): 14B at 4K (40 heads
    x 680,400 tokens x 128, bf16) one head at a time (2 heads: 4 x 2 x 680,400 x 128 x 2 = 1.39 GB,
    over)."""
    from freeswim_core.attention.flex import COPY_BUDGET, _call_groups, head_group
    L = 21 * 135 * 240
    assert head_group(40, L, 128, 2) == 1                      # 4 x 1 x L x 128 x 2 = 0.70 GB <= 1 GiB
    assert head_group(40, L, 128, 2, budget=3 << 30) == 4      # 2.79 GB <= 3 GiB; 5 heads would be 3.48 GB
    assert head_group(12, 21 * 68 * 120, 128, 2) == 6          # 1.3B at 1088p: 4 x 6 x 171,360 x 128 x 2 = 1.05 GB
    for NH, L, D in [(40, 21 * 135 * 240, 128), (12, 21 * 68 * 120, 128), (12, 720, 128), (7, 10**6, 64)]:
        h = head_group(NH, L, D, 2)
        assert NH % h == 0
        assert 4 * h * L * D * 2 <= COPY_BUDGET or h == 1
        for B in (1, 2, 3):
            groups = list(_call_groups(B, NH, L, D, 2))
            assert {(bs.stop - bs.start, hs.stop - hs.start) for bs, hs in groups} == {(1, h)}
            covered = sorted((bs.start, n) for bs, hs in groups for n in range(hs.start, hs.stop))
            assert covered == [(b, n) for b in range(B) for n in range(NH)]


@pytest.mark.parametrize("grid,window,inward,bs", [
    ((3, 12, 20), (7, 11), True, 128),      # 720 tokens: 48 of padding
    ((5, 8, 3), (3, 9), True, 16),          # full-width windows reach the sequence end
    ((1, 30, 40), (30, 5), False, 128),     # 1200 tokens, full-height windows
])
def test_padded_block_lists_never_count_padding_as_full(grid, window, inward, bs):
    """With keys zero-padded to whole blocks, a key block is full only when every real query of
    the query block may see every one of its keys, padding included (padding is never visible);
    partial blocks are those with some visible real key."""
    T, H, W = grid
    L = T * H * W
    n = -(-L // bs)
    dense = torch.zeros(n * bs, n * bs, dtype=torch.bool)
    dense[:L, :L] = _reorder_frame_innermost(dense_window_mask(grid, window, inward), grid)
    real_q = torch.zeros(n * bs, dtype=torch.bool)
    real_q[:L] = True
    blocks = dense.reshape(n, bs, n, bs)
    any_ref = blocks.any(3).any(1)
    all_ref = (blocks | ~real_q.reshape(n, bs)[:, :, None, None]).all(3).all(1)
    lists = window_block_lists(TokenGrid(*grid), Window(*window), inward=inward, block_size=bs, padded=True)

    partial = _dense_of(lists.kv_num_blocks, lists.kv_indices, n)
    full = _dense_of(lists.full_kv_num_blocks, lists.full_kv_indices, n)
    assert L % bs and not full[:, n - 1].any()
    assert not (partial & full).any()
    assert torch.equal(full, all_ref)
    assert torch.equal(partial | full, any_ref)


# --- output written into a given tensor, q's own memory included ---------------------------

@pytest.mark.parametrize("backend", ["chunked", "flex"])
def test_output_written_over_the_queries_is_the_dense_result(backend, monkeypatch):
    """``out=q``: every head group's (flex) or tile's (chunked) queries are read before its output
    lands on them. Small budgets force many groups and tiles, so a group written too early would
    change the queries a later one reads."""
    import freeswim_core.attention.flex as flex
    monkeypatch.setattr(flex, "COPY_BUDGET", 1)                 # one head and one row per call
    grid, window = (3, 12, 20), (7, 11)
    q, k, v = _qkv(2, 3, 720, 32, torch.float32, seed=11)
    ref = masked_attention(q, k, v, dense_window_mask(grid, window, True), 0.2)
    kwargs = dict(max_score_bytes=1 << 20) if backend == "chunked" else {}     # 7 tiles per call
    if backend == "chunked":
        from freeswim_core.attention.chunked import chunked_window_attention as fn
        out = fn(q, k, v, TokenGrid(*grid), Window(*window), scale=0.2, out=q, batch_tiles=True, **kwargs)
    else:
        out = window_attention(q, k, v, grid, window, scale=0.2, backend=backend, out=q)
    assert out is q
    assert (q.double() - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("backend", ["chunked", "flex"])
def test_output_into_a_strided_tensor(backend):
    """``out`` may have any strides: here the ``[B, L, heads, D]`` memory the host merges heads from."""
    grid, window = (2, 9, 13), (5, 7)
    q, k, v = _qkv(1, 2, 234, 16, torch.float32, seed=12)
    dest = torch.full((1, 234, 2, 16), float("nan")).transpose(1, 2)
    out = window_attention(q, k, v, grid, window, backend=backend, out=dest)
    ref = masked_attention(q, k, v, dense_window_mask(grid, window, True))
    assert out is dest
    assert (dest.double() - ref).abs().max().item() < 1e-5


def test_output_over_keys_or_values_is_refused():
    q, k, v = _qkv(1, 1, 720, 16, torch.float32)
    for bad in (k, v[:, :, :]):
        with pytest.raises(ValueError, match="never k's or v's"):
            window_attention(q, k, v, (3, 12, 20), (7, 11), backend="chunked", out=bad)
    with pytest.raises(ValueError, match="out must match q"):
        window_attention(q, k, v, (3, 12, 20), (7, 11), backend="chunked", out=torch.empty(1, 1, 720, 8))


def test_a_failure_after_writing_over_the_queries_is_marked_and_keeps_its_type(monkeypatch):
    """If the kernel fails after some head groups were written over q (out of memory at 4K, say),
    the host's own handling must see the original error (ComfyUI frees models on an OOM), and it
    is marked so that no fallback backend recomputes from the overwritten queries."""
    import freeswim_core.attention.flex as flex
    monkeypatch.setattr(flex, "COPY_BUDGET", 1)                   # one head per call
    calls = []

    def kernel(q, k, v, block_mask, scale):
        calls.append(1)
        if len(calls) == fail_at:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return torch.zeros_like(q)

    from freeswim_core import probes
    for fail_at, partial in ((2, True), (1, False)):
        calls.clear()
        q, k, v = _qkv(1, 3, 720, 16, torch.float32)
        with pytest.raises(torch.OutOfMemoryError) as info, probes.probing(probes.Probe(window_kernel=lambda d: kernel)):
            flex.flex_window_attention(q, k, v, TokenGrid(3, 12, 20), Window(7, 11), out=q)
        assert getattr(info.value, flex.PARTIAL_OUTPUT, False) is partial


def test_auto_falls_back_only_when_the_kernel_does_not_compile(monkeypatch, caplog):
    """auto: a compile failure falls back to the exact chunked backend for that grid and dtype
    only (said once); an out-of-memory error is the host's to handle and propagates."""
    import freeswim_core.attention as attention
    from torch._dynamo.exc import BackendCompilerFailed
    monkeypatch.setattr(attention, "_flex_broken", set())
    # flex as auto's choice on this CPU, unless its kernel failed to compile for the key
    monkeypatch.setitem(attention._AUTO_CANNOT, "flex", lambda q, grid, window, inward, *others: (
        "did not compile" if (q.device.type, grid, q.dtype) in attention._flex_broken else None))
    failure = {}

    def flex(q, k, v, grid, window, **kw):
        raise failure["exc"]

    monkeypatch.setattr(attention, "flex_window_attention", flex)
    q, k, v = _qkv(1, 2, 720, 16, torch.float32)
    ref = masked_attention(q, k, v, dense_window_mask((3, 12, 20), (7, 11), True))
    failure["exc"] = torch.OutOfMemoryError("CUDA out of memory (test)")
    with pytest.raises(torch.OutOfMemoryError):
        window_attention(q, k, v, (3, 12, 20), (7, 11))
    assert not attention._flex_broken
    failure["exc"] = BackendCompilerFailed("inductor", RuntimeError("lowering failed (test)"), None)
    with caplog.at_level("WARNING", logger="freeswim"):
        out = window_attention(q, k, v, (3, 12, 20), (7, 11))
        again = window_attention(q, k, v, (3, 12, 20), (7, 11))
    assert (out.double() - ref).abs().max().item() < 1e-5 and torch.equal(out, again)
    assert attention._flex_broken == {("cpu", TokenGrid(3, 12, 20), torch.float32)}
    assert sum("could not compile" in r.message for r in caplog.records) == 1
    assert attention.backend_for(q, (3, 12, 20), (7, 11)) == "chunked"
    q2, k2, v2 = _qkv(1, 2, 234, 16, torch.float32)          # another grid still tries flex first
    failure["exc"] = RuntimeError("an unrelated launch failure (test)")
    with pytest.raises(RuntimeError, match="unrelated"):
        window_attention(q2, k2, v2, (2, 9, 13), (5, 7))


def test_flex_stays_compiled_past_dynamos_recompile_limit():
    """At dynamo's per-function recompile limit a new shape would run flex uncompiled (every score
    materialised: out of memory at 4K). With the limit at 2, a third grid still runs compiled
    (dynamo holds one fresh graph for the kernel) and every grid's result is the dense one."""
    import torch._dynamo
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    import freeswim_core.attention.flex as flex
    torch._dynamo.reset()
    flex._graph_keys.clear()
    with torch._dynamo.config.patch(recompile_limit=2):
        for i, (grid, window) in enumerate([((3, 12, 20), (7, 11)), ((2, 9, 13), (5, 7)), ((1, 10, 24), (4, 9))]):
            T, H, W = grid
            q, k, v = _qkv(1, 2, T * H * W, 16, torch.float32, seed=i)
            out = window_attention(q, k, v, grid, window, scale=0.3, backend="flex")
            ref = masked_attention(q, k, v, dense_window_mask(grid, window, True), 0.3)
            assert (out.double() - ref).abs().max().item() < 1e-5
        assert len(_debug_get_cache_entry_list(flex._window_kernel.__code__)) == 1
    torch._dynamo.reset()
    flex._graph_keys.clear()


def test_flex_is_inference_only():
    """Gradients take the chunked backend under auto; flex refuses them clearly instead of
    returning a result autograd cannot follow."""
    q, k, v = _qkv(1, 2, 720, 16, torch.float32)
    q.requires_grad_(True)
    with pytest.raises(ValueError, match="inference-only"):
        window_attention(q, k, v, (3, 12, 20), (7, 11), backend="flex")
    with torch.no_grad():
        window_attention(q, k, v, (3, 12, 20), (7, 11), backend="flex")


def test_chunked_call_sizes_at_4k():
    """Heads and tiles per SDPA call at 4K, 1.3B (12 heads, head dim 128, bf16; quarter-window tiles
    of 4 x 14 positions: 1,176 queries over 21 x 34 x 66 = 47,124 keys), by hand: the math kernel
    holds 1,176 x 47,124 = 55.4M scores per head, so one head per call under the 64M-score budget;
    the memory-efficient kernel holds no scores, one head of one tile gathers
    (2 x 1,176 + 2 x 47,124) x 128 x 2 B = 24.7 MB, so all 12 heads (296 MB) and 3 tiles fit 1 GiB."""
    from freeswim_core.attention.chunked import call_sizes
    nq, nk = 21 * 4 * 14, 21 * 34 * 66
    assert call_sizes(False, True, 1, 12, nq, nk, 128, 2, 64 << 20) == (1, 1)
    assert call_sizes(True, True, 1, 12, nq, nk, 128, 2, 64 << 20) == (12, 3)
    assert call_sizes(True, False, 1, 12, nq, nk, 128, 2, 64 << 20) == (12, 1)
    assert call_sizes(True, True, 2, 40, nq, nk, 128, 2, 64 << 20) == (21, 1)     # 2 rows: 49.4 MB a head
    assert call_sizes(False, True, 1, 2, 18, 312, 32, 4, 64 << 20) == (2, 5974)  # small: 64M // (2 x 18 x 312)


def test_chunked_fused_branch_makes_many_sdpa_calls(monkeypatch):
    """The fused branch (CUDA's memory-efficient kernel) restricts every SDPA call of a group to
    that kernel; a group makes several calls (tiles, head groups), so each call needs a context of
    its own (torch's ``sdpa_kernel`` can be entered once). Forced here on the CPU, with the math
    kernel allowed beside it (the CPU has no memory-efficient kernel); the result is the dense one."""
    import freeswim_core.attention.chunked as chunked
    calls = []
    real_sdpa = chunked.F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(chunked, "_fused", lambda *a: True)
    monkeypatch.setattr(chunked, "FUSED_BACKENDS", chunked.FUSED_BACKENDS + (torch.nn.attention.SDPBackend.MATH,))
    monkeypatch.setattr(chunked.F, "scaled_dot_product_attention", counting_sdpa)
    grid, window = (3, 12, 20), (7, 11)
    q, k, v = _qkv(1, 3, 720, 16, torch.float32, seed=9)
    out = chunked.chunked_window_attention(q, k, v, TokenGrid(*grid), Window(*window), scale=0.2,
                                           batch_tiles=False, additive_masks=False)   # a call per tile
    ref = masked_attention(q, k, v, dense_window_mask(grid, window, True), 0.2)
    assert len(calls) == 6 * 7      # tiles of 2 x 3 positions (a quarter of 7 x 11) over 12 x 20
    assert (out.double() - ref).abs().max().item() < 2e-5


def test_flex_compiles_one_graph_whatever_the_callers_grad_mode():
    """The kernel runs in inference mode; its BlockMask is built there too, so a mask made for a
    caller under ``no_grad`` (the diffusers adapter, benchmarks) and one made for a caller in
    inference mode (ComfyUI) are the same kind of tensor and share one compiled graph (dynamo's
    guards include dispatch keys: a mask of each kind would spend two of its 8 graphs)."""
    import torch._dynamo
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    import freeswim_core.attention as attention
    import freeswim_core.attention.flex as flex
    torch._dynamo.reset()
    flex._graph_keys.clear()
    attention.release_run_caches()
    grid, window = (3, 12, 20), (7, 11)
    q, k, v = _qkv(1, 2, 720, 16, torch.float32, seed=4)
    ref = masked_attention(q, k, v, dense_window_mask(grid, window, True), 0.3)
    for mode in (torch.no_grad, torch.inference_mode, torch.no_grad):
        attention.release_run_caches()              # a new run: the mask is built again
        with mode():
            out = window_attention(q, k, v, grid, window, scale=0.3, backend="flex")
        assert (out.double() - ref).abs().max().item() < 1e-5
    assert len(_debug_get_cache_entry_list(flex._window_kernel.__code__)) == 1
    torch._dynamo.reset()
    flex._graph_keys.clear()


_FLEX_IN_A_PROCESS = """
import sys, torch
sys.path.insert(0, sys.argv[2])
torch.set_num_threads(int(sys.argv[1]))
from freeswim_core import window_attention
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, 2, 5 * 30 * 52, 32, generator=g) for _ in range(3))
flex = window_attention(q, k, v, (5, 30, 52), (15, 27), backend="flex")
chunked = window_attention(q, k, v, (5, 30, 52), (15, 27), backend="chunked")
print((flex - chunked).abs().max().item())
"""


def test_a_cpu_flex_kernel_is_never_reused_by_a_process_with_another_thread_count(tmp_path):
    """Inductor bakes the CPU thread count into the flex kernel and, in torch 2.11, leaves it out of
    its on-disk cache key. Two processes share one cache folder: the first compiles the kernel with
    one thread, the second runs with two; it must compile its own (not load the first's, which
    writes past its per-thread buffers: a heap corruption) and match the chunked backend."""
    import os
    import subprocess
    import sys
    from harness.inprocess import REPO
    env = {k: v for k, v in os.environ.items() if k != "FREESWIM_INDUCTOR_CACHE"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    for threads in (1, 2):
        done = subprocess.run([sys.executable, "-c", _FLEX_IN_A_PROCESS, str(threads), str(REPO)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{threads} thread(s): exit {done.returncode}: {done.stderr[-400:]}"
        assert float(done.stdout.strip().splitlines()[-1]) < 1e-5


# --- NATTEN (optional; `make setup` installs it from source, without CUDA: its flex-fna kernel) ---------

def _natten():
    return pytest.importorskip("natten")


@pytest.mark.parametrize("B,NH,grid,window,inward", [c for c in CASES if c[4]])
def test_natten_matches_dense_reference(B, NH, grid, window, inward):
    _natten()
    from freeswim_core.attention import choose_backend
    T, H, W = grid
    q, k, v = _qkv(B, NH, T * H * W, 32, torch.float32)
    try:
        choose_backend(q, grid, window, "natten")
    except ValueError as exc:                # only what the backend says it cannot run: kernels of 1, even windows
        rows, cols = min(window[0], H), min(window[1], W)
        assert ("size 1" in str(exc) and min(rows, cols) == 1) or (
            "even window" in str(exc) and ((rows % 2 == 0 and rows < H) or (cols % 2 == 0 and cols < W)))
        return
    out = window_attention(q, k, v, grid, window, scale=0.18, backend="natten")
    ref = masked_attention(q, k, v, dense_window_mask(grid, window, True), 0.18)
    assert out.shape == q.shape
    assert (out.double() - ref).abs().max().item() < 2e-5


@pytest.mark.parametrize("grid,window", [((2, 9, 13), (5, 7)), ((4, 8, 10), (3, 5)), ((1, 10, 12), (5, 7))])
def test_natten_takes_the_hosts_layout_and_writes_over_q(grid, window):
    """The hosts' ``[B, L, heads * D]`` viewed as ``[B, heads, L, D]`` (what ComfyUI's calls give), the
    output written over q's memory; equal to the chunked backend."""
    _natten()
    T, H, W = grid
    g = torch.Generator().manual_seed(3)
    rows = [torch.randn(2, T * H * W, 3 * 16, generator=g) for _ in range(3)]
    q, k, v = (r.view(2, T * H * W, 3, 16).transpose(1, 2) for r in rows)
    want = window_attention(q, k, v, grid, window, scale=0.2, backend="chunked")
    got = window_attention(q, k, v, grid, window, scale=0.2, backend="natten", out=q)
    assert got.data_ptr() == rows[0].data_ptr()
    assert (got - want).abs().max().item() < 2e-5


def test_natten_head_groups_bound_its_copies_hand_computed():
    """NATTEN's tiles pad each axis (3-D: frames and columns to 8 at most, rows to 4); one call holds 5 padded
    bf16 copies of its heads, 2 float32 log-sum-exps, and where rows or columns were padded the unpadded
    output. 14B at 4K: (21, 135, 240) pads to 24 x 136 x 240 = 783,360 tokens; one head's call is 783,360 x
    (5 x 128 x 2 + 8) + 680,400 x 128 x 2 = 1.18 GB, above the 1 GiB budget: one head a call (the least).
    1.3B at 1088p: (21, 68, 120) pads to 24 x 68 x 120 = 195,840 (no row or column padding); 4 heads take
    4 x 195,840 x 1288 = 1.01 GB, 6 would take 1.51 GB."""
    _natten()
    from freeswim_core.attention import natten_backend as nb
    assert nb.padded_tokens(TokenGrid(21, 135, 240)) == 783_360
    assert nb.call_bytes(1, TokenGrid(21, 135, 240), 128) == 783_360 * 1288 + 680_400 * 256
    assert nb.head_group(40, TokenGrid(21, 135, 240), 128) == 1
    assert nb.padded_tokens(TokenGrid(21, 68, 120)) == 195_840
    assert nb.call_bytes(4, TokenGrid(21, 68, 120), 128) == 4 * 195_840 * 1288
    assert nb.head_group(12, TokenGrid(21, 68, 120), 128) == 4
    assert nb.padded_tokens(TokenGrid(1, 20, 30)) == 32 * 32             # one frame: 2-D tiles of 16


@pytest.mark.parametrize("head_dim", [64, 128])
def test_natten_tile_bound_covers_its_default_tiles(head_dim):
    """The padding bound holds for the tiles NATTEN's fused forwards take by default (read off NATTEN's own
    tables): every extent of the Hopper (bf16) and Blackwell default q and kv tiles divides the bound's, so
    no axis pads past it (CUTLASS FNA does not permute)."""
    _natten()
    from natten.backends.configs.cutlass_blackwell import _get_default_tile_shapes_forward
    from natten.backends.configs.cutlass_hopper import HOPPER_FORWARD_CONFIGS
    from freeswim_core.attention.natten_backend import TILE_BOUND
    for na, bound in TILE_BOUND.items():
        (hopper_q, hopper_kv), _ = HOPPER_FORWARD_CONFIGS[na][16][head_dim][0]
        for tile in (hopper_q, hopper_kv, *_get_default_tile_shapes_forward(na)):
            assert len(tile) == na and all(b % t == 0 for t, b in zip(tile, bound)), (na, tile, bound)


def test_natten_runs_one_row_and_head_group_a_call_written_over_q(monkeypatch):
    """With a budget of two heads' copies, 2 rows x 6 heads run as 6 calls of 2 heads (counted through a
    probe that calls NATTEN itself), each written over q as it finishes; the result is the dense masked
    attention's."""
    natten = _natten()
    from freeswim_core import probes
    from freeswim_core.attention import natten_backend as nb
    grid, window = TokenGrid(3, 9, 13), Window(5, 7)
    calls = []

    def counted(q, k, v, kernel_size, scale):
        calls.append(tuple(q.shape))
        return natten.na3d(q, k, v, kernel_size=kernel_size, scale=scale, backend="flex-fna")
    monkeypatch.setattr(nb, "COPY_BUDGET", nb.call_bytes(2, grid, 16, 4))
    g = torch.Generator().manual_seed(5)
    rows = [torch.randn(2, grid.tokens, 6 * 16, generator=g) for _ in range(3)]
    q, k, v = (r.view(2, grid.tokens, 6, 16).transpose(1, 2) for r in rows)
    ref = masked_attention(q, k, v, dense_window_mask(grid.as_tuple(), (window.h, window.w), True), 0.25)
    with probes.probing(probes.Probe(natten_kernel=counted)):
        got = window_attention(q, k, v, grid, window, scale=0.25, backend="natten", out=q)
    assert calls == [(1, 3, 9, 13, 2, 16)] * 6
    assert got.data_ptr() == rows[0].data_ptr()
    assert (got.double() - ref).abs().max().item() < 2e-5


def test_natten_refuses_the_no_inward_ablation_and_auto_says_why_it_passed_it_over():
    _natten()
    from freeswim_core.attention import choose_backend
    q, k, v = _qkv(1, 2, 3 * 12 * 20, 32, torch.float32)
    with pytest.raises(ValueError, match="backend 'natten' cannot run this call: inward=False"):
        window_attention(q, k, v, (3, 12, 20), (7, 11), inward=False, backend="natten")
    choice = choose_backend(q, (3, 12, 20), (7, 11), "auto")
    assert choice.backend == "chunked"                       # on a CPU
    reasons = dict(choice.passed_over)
    assert set(reasons) == {"natten", "flex"}
    assert "CUDA" in reasons["natten"] and "CUDA" in reasons["flex"]


def test_the_planner_counts_natten_only_where_auto_would_take_it(monkeypatch):
    """With NATTEN's compiled library, auto takes NATTEN for an inward, odd window (14B's native 45 x 81 at
    4K) and flex where NATTEN cannot run it (inward off; an even window); without it, flex. A backend named
    is counted as itself (chunked as flex)."""
    _natten()
    import freeswim_core.attention as attention
    grid = (21, 135, 240)
    monkeypatch.setattr(attention, "natten_compiled", lambda: True)
    assert attention.planned_backend("auto", grid, (45, 81)) == "natten"
    assert attention.planned_backend("auto", grid, (45, 81), inward=False) == "flex"
    assert attention.planned_backend("auto", grid, (44, 81)) == "flex"
    assert [attention.planned_backend(b, grid, (45, 81)) for b in ("natten", "flex", "chunked")] == [
        "natten", "flex", "flex"]
    monkeypatch.setattr(attention, "natten_compiled", lambda: False)
    assert attention.planned_backend("auto", grid, (45, 81)) == "flex"
