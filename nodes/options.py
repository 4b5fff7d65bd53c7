"""What the FreeSwim nodes put on a model: their settings, and the keys they use.

The three patch nodes merge their settings into one :class:`FreeSwimOptions` in
``transformer_options["freeswim"]``, so they apply in any order and any number of
times; per sampling run and per model call the hooks add their own entries under
the other keys (the plan of the call, the block being run, the run's state).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..freeswim_core.settings import CacheOptions, DualOptions, WindowOptions
from .wan import WanInfo

OPTIONS_KEY = "freeswim"
RUN_KEY = "freeswim_run"          # RunState of the sampling run (OUTER_SAMPLE wrapper)
PLAN_KEY = "freeswim_plan"        # CallPlan of the model call (DIFFUSION_MODEL wrapper)
CURSOR_KEY = "freeswim_cursor"    # CallCursor of the model call
SCOPE_KEY = "freeswim_block"      # BlockScope of the block being run (block replacement)
# Diagnostic: when set in transformer_options, a dual-path call also returns the
# full-branch twin rows (after the caller's rows). Used by the parity checks.
KEEP_TWINS_KEY = "freeswim_keep_twins"
WRAPPER_KEY = "freeswim"
OVERRIDE_SLOT = "optimized_attention_override"

WINDOW_NODE = "FreeSwim Window Attention Patch"
DUAL_NODE = "Dual-Path Override"
CACHE_NODE = "Cross-Attn Cache"


@dataclass(frozen=True)
class WindowSettings(WindowOptions):
    """What the user chose on FreeSwim Window Attention Patch, and the model it was applied to."""

    info: Optional[WanInfo] = None


# What the user chose on Dual-Path Override and Cross-Attn Cache: the core's settings as they are.
DualPathSettings = DualOptions
CacheSettings = CacheOptions


@dataclass(frozen=True)
class FreeSwimOptions:
    """Everything the FreeSwim patches put on a model, in one place."""

    window: Optional[WindowSettings] = None
    dual: Optional[DualPathSettings] = None
    cache: Optional[CacheSettings] = None
    inner_override: Optional[Callable] = None     # the override that was in the slot before FreeSwim's
    blocks: int = 0                               # blocks that carry FreeSwim's block replacement


def options_of(to) -> Optional[FreeSwimOptions]:
    return to.get(OPTIONS_KEY) if isinstance(to, dict) else None
