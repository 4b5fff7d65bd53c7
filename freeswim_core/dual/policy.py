"""Guide or reuse: the cross-attention cache's decision for one model call.

The subtlest rule of the method, in one pure function. The reference code
computes the full branch on every ``interval``-th scheduler step (a *guide* step)
and reuses its per-block cross-attention features on the steps between. A host
does not tell the model which step it is on, so the step is found from the
sigma in the run's own schedule; calls at sigmas that are not in the schedule
(the extra evaluations of multi-stage samplers) are never guide steps. Also here:
the dual path's active range, as sigmas, the same in every host.
"""
from __future__ import annotations

import enum
import math
from typing import Optional, Sequence


class CacheAction(enum.Enum):
    """What a cached dual-path call does."""

    GUIDE = "guide"   # run the full-attention twins, hand their features over, and store them
    REUSE = "reuse"   # no twins: the window rows read the stored features of each block


def step_index(sigma: float, sample_sigmas: Optional[Sequence[float]], rel_tol: float = 1e-5) -> Optional[int]:
    """Index of ``sigma`` in the run's schedule, or None when it is not a scheduled sigma
    (the extra evaluations of multi-evaluation samplers)."""
    if sample_sigmas is None:
        return None
    for i, s in enumerate(sample_sigmas):
        s = float(s)
        if math.isclose(s, sigma, rel_tol=rel_tol, abs_tol=1e-9):
            return i
    return None


def flow_sigma_at_percent(percent: float, shift: float) -> float:
    """The sigma at which ``percent`` of a flow-matching schedule under flow ``shift`` has run: what
    ComfyUI's flow models give for ``start_percent``/``end_percent`` (1 at 0, 0 at 1, the shifted
    time in between), so that a percent means the same sigma in every host."""
    if percent <= 0.0:
        return 1.0
    if percent >= 1.0:
        return 0.0
    t = 1.0 - percent
    return t if shift == 1.0 else shift * t / (1.0 + (shift - 1.0) * t)


def dual_sigma_range(start_percent: float, end_percent: float, shift: float) -> tuple[float, float]:
    """``(sigma_start, sigma_end)`` of the dual path's active range on a flow schedule under
    ``shift``; a ValueError that says the fix unless ``0 <= start < end <= 1``."""
    if not 0.0 <= start_percent < end_percent <= 1.0:
        raise ValueError(f"start_percent ({start_percent}) must be below end_percent ({end_percent}), "
                         f"both between 0 and 1")
    if not shift > 0:
        raise ValueError(f"flow shift {shift}: must be positive")
    return flow_sigma_at_percent(start_percent, shift), flow_sigma_at_percent(end_percent, shift)


def dual_active(sigma: Optional[float], sigma_start: float, sigma_end: float) -> bool:
    """Whether the dual path runs at ``sigma``: inside ``[sigma_end, sigma_start]`` (the sigmas of the
    start and end percents), or always when the call's sigma is not known."""
    return sigma is None or sigma_end <= sigma <= sigma_start


def is_guide_step(step: Optional[int], interval: int) -> bool:
    """Guide steps are every ``interval`` scheduled steps counted from the run's first
    step (a sliced schedule, as KSamplerAdvanced passes, starts its own count)."""
    return step is not None and step % max(1, interval) == 0


def decide_cache_action(stored_at: Sequence[Optional[float]], sigma: Optional[float],
                        step: Optional[int], interval: int) -> CacheAction:
    """Guide or reuse for one model call.

    Args:
        stored_at: per eligible row (one that would get a twin), the sigma at which its
            stored features were computed, or None when it has none that fit this call
            (none yet, or computed for another grid, channel count or dtype).
        sigma: this call's sigma (None when the host gave none).
        step: index of ``sigma`` in the run's schedule (``step_index``), None off-schedule.
        interval: guide every ``interval`` scheduled steps.

    GUIDE when any row lacks usable features (the first call of a run, a new size,
    a new prompt chunk), or on a scheduled guide step, unless every row's features
    were computed at this very sigma: ComfyUI can split cond and uncond into separate
    calls, or call twice at one sigma, and the second call of a guide step reuses
    what the first computed. REUSE otherwise.
    """
    if not stored_at or any(s is None for s in stored_at):
        return CacheAction.GUIDE
    computed_here = sigma is not None and all(s == sigma for s in stored_at)
    if is_guide_step(step, interval) and not computed_here:
        return CacheAction.GUIDE
    return CacheAction.REUSE


def cache_action_for_call(store, keys: Sequence, rows: Sequence[int], signature: tuple, sigma: Optional[float],
                          step: Optional[int], interval: int) -> CacheAction:
    """Guide or reuse for a model call whose ``rows`` (window rows that would get a twin) have cache
    keys ``keys[row]``; on a guide call the rows' features are marked as computed at ``sigma`` for
    calls of this ``signature`` (grid, channels, dtype), before the blocks store them."""
    stored_at = [store.computed_at(keys[r]) if store.valid_for(keys[r], signature) else None for r in rows]
    action = decide_cache_action(stored_at, sigma, step, interval)
    if action is CacheAction.GUIDE:
        for r in rows:
            store.mark(keys[r], sigma, signature)
    return action
