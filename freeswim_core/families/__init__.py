"""The registry of model families: every fact about a released checkpoint, in one place.

Each family module holds its architecture arithmetic and its released variants
(:mod:`.wan`). The nodes, the planner, the plan route, the panel (served by the route),
the memory trace and the benchmarks read them here; no other table of model sizes
exists in the product. A new family adds a module and one line to :data:`FAMILIES`.
"""
from __future__ import annotations

from typing import Optional

from . import ltxv, wan
from .variant import FEATURES, Variant

FAMILIES = {"wan": wan, "ltxv": ltxv}
VARIANTS: tuple[Variant, ...] = tuple(v for module in FAMILIES.values() for v in module.VARIANTS)
DEFAULT = "wan2.1-1.3b"


def variant(name: str) -> Variant:
    """The variant called ``name`` (its route name or its short name); KeyError names the choices."""
    for v in VARIANTS:
        if name in (v.name, v.short):
            return v
    raise KeyError(f"unknown model {name!r}; choose one of {', '.join(v.name for v in VARIANTS)}")


def variant_for_file(filename: Optional[str]) -> Variant:
    """The variant a checkpoint's file name suggests (the panel's guess), else the default."""
    for v in VARIANTS:
        if filename and v.matches_file(filename):
            return v
    return variant(DEFAULT)


def detected_native(family: str, dim: int, vae_factor: int) -> tuple[tuple[int, int], str]:
    """(native (width, height), description) of a loaded ``family`` model of width ``dim`` whose
    VAE compresses space by ``vae_factor``: the first released variant with that width and VAE,
    else the family's fallback for that VAE."""
    for v in sorted(VARIANTS, key=lambda v: bool(getattr(v.arch, "i2v", False))):   # T2V's label first
        if v.family == family and v.arch.dim == dim and v.arch.vae == vae_factor:
            return tuple(v.arch.native), v.arch.label or v.label
    fallback = FAMILIES[family].FALLBACK_NATIVE
    return fallback.get(vae_factor, fallback[min(fallback)])


def shorts() -> list[str]:
    """The benchmarks' names: every variant sampled as one model (an A14B expert is the 14B)."""
    return [v.short for v in VARIANTS if v.experts == 1]


__all__ = ["FAMILIES", "FEATURES", "VARIANTS", "Variant", "detected_native", "shorts", "variant",
           "variant_for_file"]
