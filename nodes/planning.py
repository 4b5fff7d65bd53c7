"""ComfyUI's side of the core planner: what it answers the planner, and the facts of a call.

A sampling run's planner (:class:`freeswim_core.planner.Run`) is created by the OUTER_SAMPLE
wrapper (:func:`new_run`) and made ready at its first model call (:func:`ready`): the
model's facts are read then, once, with every object patch of the run applied. Each model
call's facts are read off the executor's arguments and ComfyUI's ``transformer_options``
(:func:`call_facts`): the token grid by the model's family, the rows' passes and cache keys
from ComfyUI's ``cond_or_uncond`` and ``uuids``, the sigma and its step in the run's schedule.
"""
from __future__ import annotations

import functools

from ..freeswim_core.attention import planned_backend
from ..freeswim_core.dual import row_keys, row_kinds, step_index
from ..freeswim_core.host_reads import first_value
from ..freeswim_core.planner import CallFacts, HostServices, Run
from .errors import InvalidInput
from .families import CallInputs, Family
from .options import NAMES, FreeSwimOptions


def free_device_bytes(device) -> int:
    """What ComfyUI says is free on ``device`` now (the weights of the model being sampled are
    already loaded)."""
    import comfy.model_management as mm
    return int(mm.get_free_memory(device))


def free_host_bytes() -> int:
    import psutil
    return int(psutil.virtual_memory().available)


def new_run() -> Run:
    """A sampling run's planner; the model's settings and facts come at its first call (:func:`ready`)."""
    return Run()


def ready(run: Run, opts: FreeSwimOptions, family: Family, dm) -> Run:
    """``run`` with the model's facts and ComfyUI's services, read once per run: a sampling run
    samples one model (Latent Upscale Refine's two experts are two sampling runs), whose object
    patches ComfyUI applied when it loaded the model, before the first call."""
    with run.lock:                          # MultiGPU CFG Split: a thread per device, one run
        if run.model is None:
            run.window, run.dual, run.cache = opts.window, opts.dual, opts.cache
            if opts.window is None:         # nothing windowed: nothing to plan (the chain check says why)
                return run
            info = opts.window.info
            run.host = HostServices(names=NAMES, free_device_bytes=free_device_bytes,
                                    free_host_bytes=free_host_bytes,
                                    plan_memory=functools.partial(_memory_plan, family, dm, info),
                                    invalid=InvalidInput)
            run.model = family.model_facts(dm, info)        # last: a run with a model is ready
    return run


def _memory_plan(family: Family, dm, info, window, *args):
    """The family's memory plan of a call, counting the window kernel a GPU run takes for it."""
    backend = planned_backend(window.backend, window.grid, window.window, window.inward)
    return family.memory_plan(dm, info, window, *args, window_backend=backend)


def call_facts(run: Run, inputs: CallInputs, to: dict) -> CallFacts:
    """The planner's facts of one model call."""
    x = inputs.x
    rows = x.shape[0]
    kinds, keys, sigma, step = (), (), None, None
    if run.dual is not None:          # what only the dual path reads (the sigma: a device read per step)
        chunks = to.get("cond_or_uncond") or [0]
        kinds = tuple(row_kinds(chunks, rows))
        keys = tuple(row_keys(to.get("uuids") or [None] * len(chunks), rows))
        sigma = first_value(to.get("sigmas"), run.reads)
        schedule = to.get("sample_sigmas")
        step = step_index(sigma, run.reads.floats(schedule)) if sigma is not None and schedule is not None else None
    return CallFacts(grid=inputs.grid, rows=rows, kinds=kinds, keys=keys, sigma=sigma, step=step,
                     channels=int(x.shape[1]), dtype=x.dtype, device=x.device, shape=tuple(x.shape),
                     ambiguous=inputs.ambiguous, ref_frames=inputs.ref_frames)
