"""One sampling run's planner called for several devices (ComfyUI's MultiGPU CFG Split runs the
conditional and unconditional passes on two devices, one thread each): each device gets its own
feature store on that device, the cache can be off on one device and on for the other, and the
run's end drops and counts every store. Devices here: the CPU and PyTorch's ``meta`` device
(shapes only), so two stores with two compute devices exist on a machine without a GPU."""
import threading

import torch

from freeswim_core.geometry import TokenGrid
from freeswim_core.planner import CallFacts, HostServices, Mode, ModelFacts, Run
from freeswim_core.settings import CacheOptions, DualOptions, WindowOptions

MODEL = ModelFacts(family="wan", blocks=2, dim=64, heads=2, head_dim=32, px_per_token=16, native_px=(96, 64),
                   native_label="custom")
GRID = TokenGrid(3, 10, 14)


def new_run(free_device_bytes):
    return Run(model=MODEL, window=WindowOptions(native_size="custom", custom_width=96, custom_height=64,
                                                 backend="chunked"),
               dual=DualOptions(passes="cond_and_uncond"), cache=CacheOptions(interval=2, storage="gpu"),
               host=HostServices(free_device_bytes=free_device_bytes))


def facts(device, kind, step):
    name = ("cond", "uncond")[kind]
    return CallFacts(grid=GRID, rows=1, kinds=(kind,), keys=((name, 0),), sigma=1.0 - 0.1 * step, step=step,
                     channels=16, dtype=torch.float32, device=torch.device(device), shape=(1, 16, 3, 20, 28))


def planned(run, device, kind, step):
    """Plan a call; on a guide call its blocks store their features, as the attention calls do."""
    plan = run.plan_call(facts(device, kind, step))
    if plan.mode is Mode.GUIDE:
        for block in range(MODEL.blocks):
            plan.store.put(plan.keys[0], ("block", block, "text"),
                           torch.zeros(GRID.tokens, MODEL.dim, device=device))
    return plan


def test_each_device_has_its_own_store_and_schedule():
    run = new_run(lambda device: 1 << 40)
    actions = []
    for step in range(4):
        for device, kind in (("cpu", 0), ("meta", 1)):
            plan = planned(run, device, kind, step)
            assert plan.store.device == torch.device(device)
            actions.append((device, plan.mode))
    assert sorted(run.stores) == ["cpu", "meta"]
    assert actions == [(d, m) for m in (Mode.GUIDE, Mode.REUSE) * 2 for d in ("cpu", "meta")]
    run.close()
    assert run.stores == {}


def test_the_cache_can_be_off_on_one_device_only():
    """The meta device has no room: it runs the full branch every step; the CPU keeps its cache."""
    run = new_run(lambda device: 0 if device.type == "meta" else 1 << 40)
    modes = {"cpu": [], "meta": []}
    for step in range(2):
        for device, kind in (("cpu", 0), ("meta", 1)):
            modes[device].append(planned(run, device, kind, step).mode)
    assert modes == {"cpu": [Mode.GUIDE, Mode.REUSE], "meta": [Mode.DUAL, Mode.DUAL]}
    assert list(run.stores) == ["cpu"] and run.report.cache_off_reason


def test_threads_planning_at_once_open_one_store_per_device():
    run = new_run(lambda device: 1 << 40)
    start = threading.Barrier(4)
    plans = []

    def plan(device, kind):
        start.wait()
        plans.append(run.plan_call(facts(device, kind, 0)))
    threads = [threading.Thread(target=plan, args=(d, k)) for d, k in (("cpu", 0), ("meta", 1)) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(run.stores) == ["cpu", "meta"] and run.report.model_calls == 4
    assert len({id(p.store) for p in plans}) == 2
