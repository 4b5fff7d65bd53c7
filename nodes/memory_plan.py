"""The memory planner for the model being sampled: its architecture, this host, this GPU.

``freeswim_core.memory`` plans from numbers; this module reads those numbers off the
loaded ComfyUI model (sizes, weight dtype, the host's traits) and the device (what is
free now, with the weights already loaded), and plans one run's model calls. The nodes
use the answer for their automatic choices: the dual path's ``auto`` execution and the
cache's ``auto`` storage; the run report carries it for the UI.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from ..freeswim_core.memory import HEADROOM, HostTraits, MemoryPlan, WanArchitecture, plan_memory
from .host_blocks import host_traits

DTYPE_NAMES = {torch.float8_e4m3fn: "fp8", torch.float8_e5m2: "fp8", torch.bfloat16: "bf16",
               torch.float16: "fp16", torch.float32: "fp32"}


def architecture_of(dm, info, native_px: tuple[int, int]) -> WanArchitecture:
    """The planner's view of a loaded Wan DiT, with the native size FreeSwim windows to."""
    from comfy.ldm.wan.model import WanI2VCrossAttention
    return WanArchitecture(dim=dm.dim, ffn_dim=dm.ffn_dim, blocks=len(dm.blocks), in_dim=dm.in_dim,
                           out_dim=dm.out_dim, head_dim=dm.dim // dm.num_heads, patch=tuple(dm.patch_size),
                           vae=info.vae_factor, i2v=isinstance(dm.blocks[0].cross_attn, WanI2VCrossAttention),
                           native=tuple(native_px), label=info.native_label)


def weight_dtype_of(dm) -> str:
    """The dtype the block weights are stored in (fp8 checkpoints keep fp8 on the device); by the
    bytes per value for layouts the planner does not name (quantised tensors)."""
    weight = getattr(getattr(dm.blocks[0].self_attn, "q", None), "weight", None)
    dtype = getattr(weight, "dtype", torch.bfloat16)
    if dtype in DTYPE_NAMES:
        return DTYPE_NAMES[dtype]
    size = torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 2
    return {1: "fp8", 4: "fp32"}.get(size, "bf16")


def free_device_bytes(device: torch.device) -> Optional[int]:
    """What ComfyUI says is free on ``device`` now (the weights of the model being sampled are
    already loaded). Callers treat None (a device with nothing to ask, as in the memory trace's
    fake one) as no limit."""
    import comfy.model_management as mm
    return int(mm.get_free_memory(device))


def plan_run(dm, info, native_px, latent_shape, rows: int, twins: int, mode: str, execution: str,
             cache_precision: str = "bf16") -> MemoryPlan:
    """The plan of one model call of this run at the latent's size, on this host."""
    _, _, t, h, w = latent_shape
    arch = architecture_of(dm, info, native_px)
    return plan_memory(arch, w * info.vae_factor, h * info.vae_factor, (t - 1) * 4 + 1, mode=mode,
                       execution=execution, weight_dtype=weight_dtype_of(dm), rows=rows, twins=twins,
                       host=HostTraits(**host_traits(dm)), cache_precision=cache_precision)


def activation_bytes(plan: MemoryPlan) -> int:
    """What the call needs beyond the weights, allocator headroom included."""
    return int((plan.peak_bytes - plan.weights_bytes) * HEADROOM)


def fits_now(plan: MemoryPlan, free: Optional[int]) -> bool:
    return free is None or activation_bytes(plan) <= free


def plan_for_call(opts, dm, x, grid_hw, twins: int, run) -> tuple[str, Optional[MemoryPlan]]:
    """The execution of this call's dual path (``auto``: batched where its plan fits what is free
    on the device now, else sequential) and the plan it runs under. Planned once per run and
    latent size; the run report keeps the plan, and a plan that does not fit is said once."""
    from .options import DUAL_NODE, WINDOW_NODE
    from .wan import resolve_native_px
    requested = opts.dual.execution if (opts.dual is not None and twins) else "sequential"
    key = (tuple(x.shape), twins, requested)
    if run is not None and run.memory_key == key:
        return run.memory_execution, run.memory_plan
    settings = opts.window
    native_px = resolve_native_px(settings.info, settings.native_size, settings.custom_width,
                                  settings.custom_height, grid_hw=grid_hw)
    mode = ("cache" if opts.cache is not None else "dual") if twins else "window"
    precision = opts.cache.precision if opts.cache is not None else "bf16"
    precision = {"model": "bf16"}.get(precision, precision)
    free = free_device_bytes(x.device)
    order = ["batched", "sequential"] if requested == "auto" else [requested]
    for execution in order:
        plan = plan_run(dm, settings.info, native_px, x.shape, x.shape[0], twins, mode, execution, precision)
        if fits_now(plan, free):
            break
    execution = execution if twins else requested
    if run is not None:
        run.memory_key, run.memory_execution, run.memory_plan = key, execution, plan
        run.report.memory = {**plan.as_dict(), "free_bytes": free, "activation_bytes": activation_bytes(plan),
                             "fits_free": fits_now(plan, free)}
        if twins:
            run.report.execution = execution
        if free is not None and not fits_now(plan, free):
            node = DUAL_NODE if twins else WINDOW_NODE
            run.say("memory:nofit", logging.WARNING,
                    "%s: one model call at %dx%dx%d needs about %.1f GB beyond the weights (%s peak, "
                    "execution %s, 10%% allocator headroom) but %.1f GB are free on %s. Expect an "
                    "out-of-memory error or ComfyUI offloading weights: use execution sequential, a "
                    "smaller size, or fp8 weights.", node, plan.width, plan.height, plan.frames,
                    activation_bytes(plan) / 1e9, plan.peak_phase, execution, free / 1e9, x.device)
    return execution, plan
