"""The one rule for the dual path's ``auto`` execution, for the runs and the panel alike.

``auto`` runs ``batched`` (every block once, twins beside the caller's rows: fastest) where
that call's activations, with the allocator headroom, fit the device memory free beside the
model's loaded weights, and ``sequential`` (twins, then the caller's rows, per block) otherwise.
A run asks the device what is free now (ComfyUI has loaded the weights); the panel has a
GPU size and takes the weights off it with the same headroom, which is the planner's
``fits`` (peak x headroom within the GPU) exactly. A real run has a little less free than
that (the CUDA context, other models), so near the line the panel's batched can be a run's
sequential.
"""
from __future__ import annotations

from typing import Callable, Optional

HEADROOM = 1.10       # allocator headroom on top of the planned peak (fragmentation, the CUDA context)


def activation_bytes(plan) -> int:
    """What a model call needs beyond the weights, allocator headroom included (the plan's
    ``needed_bytes`` less the weights' share, so that :func:`free_beside_weights` of a GPU size
    gives the planner's own ``fits``)."""
    return int(plan.peak_bytes * HEADROOM) - int(plan.weights_bytes * HEADROOM)


def fits_beside_weights(plan, free: Optional[int]) -> bool:
    """Do the call's activations fit ``free`` bytes beside the weights (None: no limit known)?"""
    return free is None or activation_bytes(plan) <= free


def free_beside_weights(vram_bytes: Optional[int], weights_bytes: int) -> Optional[int]:
    """The bytes an idle GPU of ``vram_bytes`` has beside a model's weights (headroom included)."""
    return None if vram_bytes is None else vram_bytes - int(weights_bytes * HEADROOM)


def choose_execution(requested: str, plan_of: Callable[[str], object], free: Optional[int]):
    """(execution, its plan) a run takes: ``requested`` as asked, or for ``auto`` batched where
    :func:`fits_beside_weights` with ``free`` bytes, else sequential. ``plan_of(execution)`` plans
    one call."""
    order = ("batched", "sequential") if requested == "auto" else (requested,)
    for execution in order:
        plan = plan_of(execution)
        if fits_beside_weights(plan, free):
            break
    return execution, plan
