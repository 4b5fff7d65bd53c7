"""freeswim_core.dual: row layout, the guide/reuse decision, storage choice and the feature store."""
import pytest
import torch

from freeswim_core.dual import (CacheAction, DualLayout, FeatureStore, cache_bytes, choose_storage,
                                decide_cache_action, element_bytes, host_cache_bytes, is_guide_step,
                                pinned_bytes, row_keys, row_kinds, step_index, twin_rows)
from freeswim_core.dual.storage import CHUNK_BYTES, chunk_tokens

GB = 10**9


def test_cache_sizes_match_the_hand_computed_table():
    # NOTES.md: cache = blocks x tokens x model dim x bytes (bf16)
    assert cache_bytes(30, 21 * 68 * 120, 1536, 1, 2) / GB == pytest.approx(15.8, abs=0.05)     # 1.3B @ 1088p
    assert cache_bytes(30, 21 * 135 * 240, 1536, 1, 2) / GB == pytest.approx(62.7, abs=0.05)    # 1.3B @ 4K
    assert cache_bytes(40, 21 * 68 * 120, 5120, 1, 2) / GB == pytest.approx(70.2, abs=0.05)     # 14B @ 1088p
    assert cache_bytes(40, 21 * 135 * 240, 5120, 1, 2) / GB == pytest.approx(278.7, abs=0.05)   # 14B @ 4K
    assert element_bytes("model", torch.float32) == 4
    assert element_bytes("bf16", torch.float32) == 2 and element_bytes("fp8", torch.bfloat16) == 1


def test_rows_follow_comfyui_chunks_uncond_first():
    assert row_kinds([1, 0], 4) == [1, 1, 0, 0]
    assert row_kinds([0], 2) == [0, 0]
    assert row_keys(["u", "c"], 4) == [("u", 0), ("u", 1), ("c", 0), ("c", 1)]
    assert twin_rows([1, 1, 0, 0], "cond") == (2, 3)
    assert twin_rows([1, 0], "cond_and_uncond") == (0, 1)
    with pytest.raises(ValueError):
        row_kinds([0, 1], 3)
    with pytest.raises(ValueError):
        twin_rows([0], "both")


def test_layout_appends_twins_after_the_callers_rows():
    layout = DualLayout(rows=3, twin_sources=(0, 2))
    x = torch.arange(3.0)[:, None]
    assert layout.expand(x).flatten().tolist() == [0.0, 1.0, 2.0, 0.0, 2.0]
    assert layout.twin_of() == {0: 3, 2: 4} and layout.total_rows == 5


def test_guide_steps_from_the_runs_schedule():
    sched = [14.6, 9.0, 5.2, 2.1, 0.0]
    assert [step_index(s, sched) for s in (14.6, 9.0, 2.1)] == [0, 1, 3]
    assert step_index(7.3, sched) is None                    # a midpoint of a 2-stage sampler
    assert step_index(1.0, None) is None
    assert [is_guide_step(i, 2) for i in range(5)] == [True, False, True, False, True]
    assert not is_guide_step(None, 2)


G, R = CacheAction.GUIDE, CacheAction.REUSE


@pytest.mark.parametrize("stored_at,sigma,step,interval,expected", [
    ([None], 14.6, 0, 2, G),               # first call of a run: nothing stored
    ([14.6], 9.0, 1, 2, R),                # off-interval step: reuse
    ([14.6], 5.2, 2, 2, G),                # guide step
    ([5.2], 5.2, 2, 2, R),                 # cond and uncond split: the second call of a guide step
    ([5.2, None], 5.2, 2, 2, G),           # one row has nothing usable (new prompt chunk)
    ([5.2], 7.3, None, 2, R),              # a sampler's midpoint: never a guide step
    ([14.6], 9.0, 1, 1, G),                # interval 1: the full branch every step
    ([9.0], 2.1, 3, 5, R),
    ([9.0], 0.5, 5, 5, G),
    ([], 1.0, 1, 2, G),                    # no eligible rows told: compute
])
def test_guide_or_reuse_follows_the_hand_worked_table(stored_at, sigma, step, interval, expected):
    assert decide_cache_action(stored_at, sigma, step, interval) is expected


@pytest.mark.parametrize("mode,needed,accel,host,expected", [
    ("auto", 10, 100, 1000, "gpu"),
    ("auto", 90, 100, 1000, "cpu"),          # over the 25% headroom on the GPU
    ("auto", 900, 100, 1000, None),          # fits nowhere: run without the cache
    ("auto", 10, None, 1000, "gpu"),         # model on the CPU: its own device
    ("gpu", 90, 100, 1000, None),
    ("cpu", 10, 100, 1000, "cpu"),
    ("cpu", 900, 100, 1000, None),
])
def test_storage_choice(mode, needed, accel, host, expected):
    assert choose_storage(mode, needed, accel, host) == expected


def test_storage_mode_is_validated():
    with pytest.raises(ValueError):
        choose_storage("disk", 1, 1, 1)


@pytest.mark.parametrize("precision,tol", [("model", 0.0), ("bf16", 1e-2), ("fp8", 7e-2)])
@pytest.mark.parametrize("storage", ["gpu", "cpu"])
def test_feature_store_round_trip(precision, tol, storage):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 64, generator=g) * 3
    store = FeatureStore(storage, precision, torch.device("cpu"))
    store.put(("u", 0), (0, "text"), x)
    x_before = x.clone()
    x.add_(1.0)                                          # the store must not alias the caller's tensor
    back = store.get(("u", 0), (0, "text"))
    assert back.dtype == torch.float32 and back.shape == (96, 64)
    rel = ((back - x_before).abs() / x_before.abs().amax(dim=-1, keepdim=True)).max().item()
    assert rel <= tol
    assert store.get(("u", 0), (1, "text")) is None
    assert store.nbytes() >= 96 * 64 * element_bytes(precision, torch.float32)
    store.clear()
    assert store.nbytes() == 0


def test_pinned_host_cache_counts_the_allocators_power_of_two_rounding():
    # PyTorch's caching host allocator pins every allocation as a power of two: one 14B block at
    # 3840x2160x81 in fp8 (680,400 x 5120 = 3,483,648,000 bytes) in one piece would pin 2**32
    assert 21 * 135 * 240 * 5120 == 3_483_648_000 and pinned_bytes(3_483_648_000) == 2**32
    assert pinned_bytes(2**20) == 2**20 and pinned_bytes(2**20 + 1) == 2**21 and pinned_bytes(0) == 0
    # the store keeps 64 MiB chunks: 1.3B bf16 rows are 3072 bytes, 21,845 tokens a chunk
    # (67,107,840 bytes, pinned as 2**26); 680,400 tokens = 31 full chunks + 3,205 tokens
    # (9,845,760 bytes, pinned as 2**24)
    assert CHUNK_BYTES == 2**26 and chunk_tokens(1536, 2) == 21_845
    assert 31 * 21_845 + 3_205 == 680_400
    raw = cache_bytes(30, 680_400, 1536, 1, 2)
    assert host_cache_bytes(30, 680_400, 1536, 1, 2, pinned=False) == raw
    assert host_cache_bytes(30, 680_400, 1536, 1, 2, pinned=True) == 30 * (31 * 2**26 + 2**24)
    # 14B fp8: 5120-byte rows, 13,107 tokens a chunk (67,107,840 bytes), 51 full chunks + 11,943
    # tokens (61,148,160 bytes, pinned as 2**26), and the float32 scales (2,721,600 bytes -> 2**22)
    assert chunk_tokens(5120, 1) == 13_107 and 51 * 13_107 + 11_943 == 680_400
    assert host_cache_bytes(40, 680_400, 5120, 1, 1, pinned=True) == 40 * (52 * 2**26 + 2**22)
    # fp8 adds a float32 scale per token
    assert host_cache_bytes(2, 100, 64, 1, 1, pinned=False) == 2 * (100 * 64 + 100 * 4)
    # what pinning adds is now under 1%, where whole blocks would have added 2.7% (1.3B) and 23% (14B)
    pinned = host_cache_bytes(30, 680_400, 1536, 1, 2, pinned=True)
    assert pinned < 1.01 * raw and 30 * pinned_bytes(680_400 * 3072) > 1.027 * raw
    assert choose_storage("auto", raw, 10 * 10**9, 85 * 10**9, needed_host=pinned) == "cpu"
    assert choose_storage("auto", raw, 10 * 10**9, int(pinned / 0.75) - 1, needed_host=pinned) is None


@pytest.mark.parametrize("precision", ["model", "bf16", "fp8"])
def test_feature_store_chunks_give_the_whole_blocks_result(precision, monkeypatch):
    """Features written and read in many small chunks (quantised chunk by chunk, with per-token
    scales) come back exactly as when the whole block is one chunk."""
    import freeswim_core.dual.store as store_mod
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 300, 48, generator=g) * 4
    whole = FeatureStore("cpu", precision, torch.device("cpu"))
    whole.put(("r", 0), 0, x)
    monkeypatch.setattr(store_mod, "chunk_tokens", lambda dim, eb: 7)    # 600 tokens: 86 chunks of 7
    small = FeatureStore("cpu", precision, torch.device("cpu"))
    small.put(("r", 0), 0, x)
    assert torch.equal(small.get(("r", 0), 0), whole.get(("r", 0), 0))
    assert small.get(("r", 0), 0).shape == x.shape


@pytest.mark.parametrize("precision", ["model", "bf16", "fp8"])
def test_prefetched_blocks_read_back_as_the_stored_ones(precision):
    """With prefetch, reading a block uploads the key's next block ahead of its read. Whatever the
    order of reads (in order, a block skipped, a key interleaved, a block read twice), every read
    gives what the store gives without prefetch."""
    g = torch.Generator().manual_seed(2)
    plain = FeatureStore("cpu", precision, torch.device("cpu"))
    ahead = FeatureStore("cpu", precision, torch.device("cpu"), prefetch=True)
    for key in (("c", 0), ("u", 0)):
        for block in range(5):
            x = torch.randn(1, 40, 24, generator=g) * 3
            plain.put(key, (block, "text"), x)
            ahead.put(key, (block, "text"), x)
    reads = [(("c", 0), 0), (("u", 0), 0), (("c", 0), 1), (("u", 0), 1), (("c", 0), 3), (("c", 0), 4),
             (("u", 0), 2), (("u", 0), 2), (("u", 0), 3), (("c", 0), 0), (("c", 0), 1)]
    for key, block in reads:
        assert torch.equal(ahead.get(key, (block, "text")), plain.get(key, (block, "text")))
    # uploaded ahead of their read: c1, u1, c4 (after c3), u2 (after u1), u3 (after the second u2), c1
    assert ahead.prefetched == 6
    ahead.clear()
    assert ahead.nbytes() == 0 and not ahead._ahead
    assert not FeatureStore("gpu", precision, torch.device("cpu"), prefetch=True).prefetch


def test_prefetch_only_from_host_memory_with_room_for_one_block_per_row():
    from freeswim_core.dual import prefetch_fits
    # 14B at 4K, fp8: one block of one row is 680,400 x 5120 x 1 = 3.48 GB; 3/4 of 5 GB is 3.75 GB
    assert prefetch_fits("cpu", 5 * 10**9, 680_400, 5120, 1, 1)
    assert not prefetch_fits("cpu", 4 * 10**9, 680_400, 5120, 1, 1)          # 3.0 GB of room
    assert not prefetch_fits("cpu", 5 * 10**9, 680_400, 5120, 2, 1)          # two rows: 6.97 GB
    assert not prefetch_fits("gpu", 10**12, 680_400, 5120, 1, 1)             # stored on the device
    assert not prefetch_fits("cpu", None, 680_400, 5120, 1, 1)               # the model runs on the CPU


def test_features_stored_again_replace_an_upload_made_ahead():
    """A block uploaded ahead, then stored again (a run stopped part-way and guided again), reads
    back as stored the second time."""
    store = FeatureStore("cpu", "model", torch.device("cpu"), prefetch=True)
    old, new = torch.zeros(1, 8, 4), torch.ones(1, 8, 4)
    for block in range(3):
        store.put(("c", 0), block, old)
    store.get(("c", 0), 0)                                 # uploads block 1 ahead
    store.put(("c", 0), 1, new)
    assert torch.equal(store.get(("c", 0), 1), new)


def test_rows_a_run_stores_per_block():
    from freeswim_core.dual import cached_rows
    assert cached_rows(1, 1, "cond") == 1                      # cond gets a twin; uncond never stores
    assert cached_rows(1, 1, "cond_and_uncond") == 2           # uncond comes in its own call, one row too
    assert cached_rows(2, 2, "cond_and_uncond") == 2           # both passes in this call
    assert cached_rows(2, 1, "cond", entries_per_block=2) == 4  # I2V, the image cross-attention overridden


@pytest.mark.parametrize("storage,compute,releases", [("cpu", "cuda", 1), ("gpu", "cuda", 0), ("cpu", "cpu", 0)])
def test_a_store_that_pinned_gives_the_host_allocators_cache_back_when_cleared(storage, compute, releases,
                                                                                monkeypatch):
    """Features kept in host RAM for a CUDA model are page-locked through PyTorch's caching host
    allocator, which keeps freed blocks for reuse: clearing the store (a run's end) empties that
    cache once, so the memory goes back to the system. A store that pinned nothing leaves it alone.
    On a fake CUDA device (as the memory trace runs), where pinning is recorded but nothing runs."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    emptied = []
    monkeypatch.setattr(torch._C, "_host_emptyCache", lambda: emptied.append(1), raising=False)
    with FakeTensorMode(allow_non_fake_inputs=True):
        store = FeatureStore(storage, "model", torch.device(compute))
        for block in range(3):
            store.put(("cond",), block, torch.ones(1, 40, 8, device=compute))
        store.clear()
        store.clear()                      # nothing pinned since: no second release
    assert len(emptied) == releases
