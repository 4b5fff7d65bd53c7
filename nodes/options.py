"""What the FreeSwim nodes put on a model: their settings, their names, and the keys they use.

The three patch nodes merge their settings into one :class:`FreeSwimOptions` in
``transformer_options["freeswim"]``, so they apply in any order and any number of
times; per sampling run and per model call the hooks add their own entries under
the other keys (the run's planner, the plan of the call, the block being run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..freeswim_core.planner import Names
from ..freeswim_core.settings import CacheOptions, DualOptions, WindowOptions
from .families.base import ModelInfo

OPTIONS_KEY = "freeswim"
LATER_KEY = "freeswim_later_override"   # an override another node set after FreeSwim's (composed per run)
RUN_KEY = "freeswim_run"          # the sampling run's planner (freeswim_core.planner.Run; OUTER_SAMPLE wrapper)
PLAN_KEY = "freeswim_plan"        # CallPlan of the model call (DIFFUSION_MODEL wrapper)
CURSOR_KEY = "freeswim_cursor"    # CallCursor of the model call
SCOPE_KEY = "freeswim_block"      # BlockScope of the block being run (block replacement)
WRAPPER_KEY = "freeswim"
OVERRIDE_SLOT = "optimized_attention_override"

# The nodes' display names: every message a node raises or logs starts with its own.
WINDOW_NODE = "FreeSwim Window Attention Patch"
DUAL_NODE = "Dual-Path Override"
CACHE_NODE = "Cross-Attn Cache"
REFINE_NODE = "Latent Upscale Refine"
NAMES = Names(window=WINDOW_NODE, dual=DUAL_NODE, cache=CACHE_NODE,
              unreached_hint="Another node or pack computes their self-attention itself (raylight's sequence "
                             "parallelism replaces Wan's self-attention code): remove it from this model's chain, "
                             "or FreeSwim stays off in those blocks.")


@dataclass(frozen=True)
class WindowSettings(WindowOptions):
    """What the user chose on FreeSwim Window Attention Patch, and the model it was applied to."""

    info: Optional[ModelInfo] = None


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
    family: str = "wan"                           # the model's family (nodes.families)


def options_of(to) -> Optional[FreeSwimOptions]:
    return to.get(OPTIONS_KEY) if isinstance(to, dict) else None
