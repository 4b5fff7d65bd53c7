"""FreeSwim for diffusers' Wan pipelines, from the same core as the ComfyUI nodes.

``FreeSwim(pipe.transformer, ...)`` installs window attention, the dual path and
the cross-attention cache on a ``WanTransformer3DModel`` (settings and defaults
are the nodes': :mod:`freeswim_core.settings`); :func:`generate` runs the
coarse-to-fine recipe; ``python -m freeswim_core.diffusers --help`` is its CLI.

Importing this package needs diffusers; nothing else in ``freeswim_core`` (and
nothing in the ComfyUI nodes) imports it.
"""
from __future__ import annotations

from ..settings import CacheOptions, DualOptions, RefineOptions, WindowOptions


def __getattr__(name):
    if name == "FreeSwim":
        from . import install
        return getattr(install, name)
    if name in ("generate", "GenerateRequest"):
        from . import recipe
        return getattr(recipe, name)
    raise AttributeError(name)


__all__ = ["CacheOptions", "DualOptions", "FreeSwim", "GenerateRequest", "RefineOptions", "WindowOptions",
           "generate"]
