"""FreeSwim under ComfyUI 0.33's MultiGPU CFG Split, on a CPU.

The host's own MultiGPU code runs: ``comfy.multigpu.create_multigpu_deepclones`` gives a
second device a freshly loaded model, and ``CFGGuider`` runs each step's conditional and
unconditional work units in its thread pool, one thread per device, with one FreeSwim
sampling run shared by both threads. A CPU has one device, so the device list ComfyUI
enumerates names two (``cpu`` and ``cpu:1``: two keys, one memory). What a CPU cannot show
is two real devices' streams and memory (the cache's per-device stores are for those).

The reference is the same graph sampled on one device: window attention, the dual path
and the cache give the same latent whether cond and uncond run in one call or in two
threads. The host service the cache asks when it opens (free host RAM) is slowed down,
so that both threads plan their first call at the same time.
"""
import threading
import time

import pytest
import torch

from test_comfy_dual_path import LATENT, cache, dual, rel_err, windowed

SEED = 41


@pytest.fixture
def multigpu(comfy, monkeypatch):
    import importlib
    try:
        host_multigpu = importlib.import_module("comfy.multigpu")
    except ImportError:
        pytest.skip("this ComfyUI has no MultiGPU CFG Split (0.33+)")
    mm = importlib.import_module("comfy.model_management")
    monkeypatch.setattr(mm, "get_all_torch_devices",
                        lambda exclude_current=False: [torch.device("cpu"), torch.device("cpu", 1)])
    planning = comfy.pack_module("nodes.planning")
    slow = planning.free_host_bytes

    def free_host_bytes():
        time.sleep(0.05)
        return slow()
    monkeypatch.setattr(planning, "free_host_bytes", free_host_bytes)
    return host_multigpu


@pytest.fixture(scope="module")
def loaded(comfy):
    def load():
        return comfy.load_tiny_wan(seed=SEED)
    model = load()
    model.cached_patcher_init = (load, ())      # as ComfyUI's own loaders set it: MultiGPU reloads from it
    return model


def _record_threads(model):
    """A test-local DIFFUSION_MODEL wrapper: which thread ran which device's model, per call."""
    from comfy.patcher_extension import WrappersMP
    seen = []

    def wrapper(executor, *args, **kwargs):
        seen.append((threading.current_thread().name, id(executor.class_obj)))
        return executor(*args, **kwargs)
    m = model.clone()
    m.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test-threads", wrapper)
    return m, seen


def _reports(comfy):
    run_state = comfy.pack_module("nodes.run_state")
    after = (run_state.recent_reports() or [{"run": 0}])[-1]["run"]
    return lambda: [r for r in run_state.recent_reports() if r["run"] > after]


GRAPHS = {
    "window": lambda c, m: windowed(c, m),
    "dual batched": lambda c, m: dual(c, windowed(c, m)),
    "dual sequential": lambda c, m: dual(c, windowed(c, m), execution="sequential"),
    "cache": lambda c, m: cache(c, dual(c, windowed(c, m))),
}


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_cfg_split_over_two_devices_gives_the_one_device_result(comfy, multigpu, loaded, graph):
    patched = GRAPHS[graph](comfy, loaded)
    reports = _reports(comfy)
    one = comfy.ksample(patched, LATENT, seed=3, steps=4)
    split, seen = _record_threads(multigpu.create_multigpu_deepclones(patched, 2))
    two = comfy.ksample(split, LATENT, seed=3, steps=4)
    assert len({thread for thread, _ in seen}) == 2 and len({model for _, model in seen}) == 2
    assert rel_err(two, one) < 1e-4
    single, parallel = reports()
    assert parallel["model_calls"] == 2 * single["model_calls"]      # cond and uncond: a call each
    assert parallel["warnings"] == single["warnings"] == []
    if graph == "cache":
        # each device guides and reuses its own pass, and stores its own rows' features
        assert (single["guide_calls"], single["reuse_calls"]) == (2, 2)
        assert (parallel["guide_calls"], parallel["reuse_calls"]) == (4, 4)
        assert parallel["cache_bytes"] == single["cache_bytes"] > 0


def test_each_device_runs_its_own_weights(comfy, multigpu, loaded):
    """FreeSwim's object patches that hold modules (the token-sliced FFN, the token-major patch
    embedding) are rebuilt on the clone: no parameter of the clone is the main model's."""
    ffn_chunks = comfy.pack_module("nodes.ffn_chunks")
    embedding = comfy.pack_module("nodes.patch_embedding")
    split = multigpu.create_multigpu_deepclones(cache(comfy, dual(comfy, windowed(comfy, loaded))), 2)
    comfy.ksample(split, LATENT, seed=3, steps=2)
    (clone,) = split.get_additional_models_with_key("multigpu")
    main_params = {id(p) for p in split.model.diffusion_model.parameters()}
    clone_params = {id(p) for p in clone.model.diffusion_model.parameters()}
    assert main_params and clone_params and not (main_params & clone_params)
    ffns = [(k, p) for k, p in clone.object_patches.items() if isinstance(p, ffn_chunks.ChunkedFFN)]
    assert ffns
    for key, patch in ffns:
        assert patch[0] is not split.object_patches[key][0]
        assert all(id(p) in clone_params for p in patch.parameters())
    assert clone.object_patches[embedding.KEY].conv is clone.model.diffusion_model.patch_embedding


def test_two_samplings_at_once_in_threads_give_their_serial_results(comfy, loaded):
    """Two prompts' samplings of two models running at the same time share the pack's module
    state (the window backend's tables, the report list): each gets what it gets alone."""
    other = comfy.load_tiny_wan(seed=SEED + 1)
    graphs = [cache(comfy, dual(comfy, windowed(comfy, loaded))), dual(comfy, windowed(comfy, other))]
    serial = [comfy.ksample(g, LATENT, seed=5 + i, steps=3) for i, g in enumerate(graphs)]
    results = [None, None]

    def sample(i):
        with torch.inference_mode():
            results[i] = comfy.ksample(graphs[i], LATENT, seed=5 + i, steps=3)
    threads = [threading.Thread(target=sample, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for got, want in zip(results, serial):
        assert got is not None and torch.equal(got, want)
