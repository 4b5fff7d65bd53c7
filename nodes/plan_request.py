"""``POST /freeswim/plan``: the memory planner for the UI, from a JSON request.

One planner for the nodes, this route, the UI and the docs (``freeswim_core.memory``).
Every field is checked here, so a bad request gets a message naming the field (the
route answers it with HTTP 400), never a stack trace.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..freeswim_core import TokenGrid, Window, attention_cost
from ..freeswim_core.attention import BACKENDS, planned_backend
from ..freeswim_core.attention.natten_backend import natten_compiled, natten_module
from ..freeswim_core.families import VARIANTS, variant, variant_for_file
from ..freeswim_core.families import wan
from ..freeswim_core.families.wan import WanArchitecture
from ..freeswim_core.memory import (EXECUTIONS, HEADROOM, HostTraits, choose_execution, free_beside_weights,
                                    plan_memory)
from ..freeswim_core.native import NATIVE_PRESETS, resolve_native
from ..freeswim_core.units import DTYPE_BYTES
from .families import family_named

MODELS = tuple(v.name for v in VARIANTS)
MODES = ("window", "dual", "cache")
STORAGES = ("auto", "gpu", "cpu")
PRECISIONS = ("model", "bf16", "fp8")
ARCH_FIELDS = ("dim", "ffn_dim", "blocks", "in_dim", "out_dim", "head_dim", "vae")


class BadRequest(ValueError):
    """A request the planner cannot answer; the message names the field and the fix."""


def _int(body: dict, name: str, default=None, low=1, high=1 << 20) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not low <= value <= high:
        raise BadRequest(f"{name}: expected a whole number from {low} to {high}, got {value!r}")
    return int(value)


def _choice(body: dict, name: str, options, default):
    value = body.get(name, default)
    if value not in options:
        raise BadRequest(f"{name}: expected one of {', '.join(map(str, options))}, got {value!r}")
    return value


def _architecture(body: dict) -> tuple[str, WanArchitecture]:
    model = body.get("model")
    if model is None:           # the panel names the loader's file; the registry knows its variant
        file = body.get("model_file")
        if file is not None and not isinstance(file, str):
            raise BadRequest(f"model_file: expected a checkpoint's file name, got {file!r}")
        v = variant_for_file(file)
        return v.name, v.arch
    if isinstance(model, str):
        if model not in MODELS:
            raise BadRequest(f"model: expected one of {', '.join(MODELS)} or an object of architecture numbers "
                             f"({', '.join(ARCH_FIELDS)}), got {model!r}")
        return model, variant(model).arch
    if not isinstance(model, dict):
        raise BadRequest(f"model: expected a model name or an object of architecture numbers, got {model!r}")
    numbers = {k: _int(model, k, None, 1, 1 << 20) for k in ARCH_FIELDS if k in model}
    missing = [k for k in ("dim", "ffn_dim", "blocks") if k not in numbers]
    if missing:
        raise BadRequest(f"model: the architecture needs {', '.join(missing)}")
    if numbers["dim"] % numbers.get("head_dim", 128):
        raise BadRequest(f"model.dim: {numbers['dim']} is not a multiple of head_dim {numbers.get('head_dim', 128)}")
    if numbers.get("vae", 8) not in (8, 16):
        raise BadRequest("model.vae: expected 8 (Wan 2.1 VAE) or 16 (Wan2.2 TI2V VAE)")
    return "custom", WanArchitecture(**numbers, native=wan.FALLBACK_NATIVE[numbers.get("vae", 8)][0])


def _native(body: dict, arch: WanArchitecture, width: int, height: int) -> tuple[int, int]:
    native = body.get("native_size", "auto")
    if native == "auto" or native in NATIVE_PRESETS:      # the nodes' rule (auto turns portrait with the video)
        return resolve_native(native, tuple(arch.native), 0, 0, grid_hw=(height, width))
    if isinstance(native, str) and "x" in native:
        w, _, h = native.partition("x")
        if w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
            return int(w), int(h)
    raise BadRequest(f"native_size: expected auto, one of {', '.join(NATIVE_PRESETS)} or WIDTHxHEIGHT, got {native!r}")


def plan_from_request(body) -> dict:
    """The planner's answer for a UI request, with the window's share of full attention and plain
    warnings; raises :class:`BadRequest` naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    name, arch = _architecture(body)
    width, height = _int(body, "width", 1920, 16, 16384), _int(body, "height", 1088, 16, 16384)
    frames = _int(body, "frames", 81, 1, 1025)
    mode = _choice(body, "mode", MODES, "dual")
    execution = _choice(body, "execution", ("auto",) + EXECUTIONS, "auto")
    storage = _choice(body, "storage", STORAGES, "auto")
    precision = _choice(body, "precision", PRECISIONS, "model")
    weight_dtype = _choice(body, "weight_dtype", tuple(DTYPE_BYTES), "bf16")
    interval = _int(body, "cache_interval", 2, 1, 100)
    experts = _int(body, "experts", 1, 1, 2)
    backend = _choice(body, "backend", BACKENDS, "auto")
    inward = body.get("inward", True)
    if not isinstance(inward, bool):
        raise BadRequest(f"inward: expected true or false, got {inward!r}")
    vram = body.get("vram_gb")
    if vram is not None and (isinstance(vram, bool) or not isinstance(vram, (int, float))
                             or not math.isfinite(vram) or not 0 < vram <= 4096):
        raise BadRequest(f"vram_gb: expected a number of GB above 0, got {vram!r}")
    native = _native(body, arch, width, height)
    arch = replace(arch, native=native)
    # the window kernel a run on this server's GPU takes
    window_backend = planned_backend(backend, arch.token_grid(width, height, frames), arch.native_window(), inward)
    traits = family_named(arch.family).host_level_traits()     # the variant's family's host
    host = HostTraits(**traits)

    warnings = []
    multiple = arch.vae * arch.patch[1]
    if width % multiple or height % multiple:
        warnings.append(f"{width}x{height} is not a multiple of {multiple} px: use "
                        f"{width // multiple * multiple or multiple}x{height // multiple * multiple or multiple}"
                        f" or {(width // multiple + 1) * multiple}x{(height // multiple + 1) * multiple}.")
    vram_bytes = int(vram * 1e9) if vram is not None else None
    cache_precision = "bf16" if precision == "model" else precision

    def plan_of(chosen: str):
        return plan_memory(arch, width, height, frames, mode=mode, execution=chosen, weight_dtype=weight_dtype,
                           vram_bytes=vram_bytes, cache_storage=storage, cache_precision=cache_precision, host=host,
                           window_backend=window_backend)
    # the rule a run applies (memory.execution), on an idle GPU of this size
    _, plan = choose_execution(execution, plan_of, free_beside_weights(vram_bytes, arch.weights_bytes(weight_dtype)))
    out = plan.as_dict()
    out["model"] = name
    out["native_size"] = list(native)
    grid = TokenGrid(*plan.grid)
    window = Window(*plan.window)
    out["attention_share"] = (attention_cost(grid, window, arch.heads, arch.head_dim)["fraction_of_full"]
                              if plan.windowed else 1.0)
    out["headroom"] = HEADROOM
    missing = ("is not installed" if natten_module() is None else
               "has no compiled library (built without CUDA)" if torch.cuda.is_available() and not natten_compiled()
               else None)
    if backend == "natten" and missing:
        warnings.append(f"backend natten: NATTEN {missing} on this ComfyUI, so the run will stop. Install "
                        "NATTEN's wheel for your torch and CUDA (README) or choose backend auto.")
    out["cache_interval"] = interval
    out["host_traits"] = traits
    if not plan.windowed:
        warnings.append(f"{width}x{height} is not above the native {native[0]}x{native[1]}: the window covers the "
                        "whole frame and FreeSwim changes nothing here.")
    if plan.fits is False:
        hints = []
        if plan.execution == "batched":
            hints.append("execution sequential")
        if weight_dtype != "fp8":
            hints.append("fp8 weights")
        hints.append("a smaller size")
        warnings.append(f"will not fit: needs {plan.needed_bytes / 1e9:.1f} GB with {round((HEADROOM - 1) * 100)}% "
                        f"headroom, the GPU has {vram:g} GB. Try " + ", ".join(hints) + ".")
    if plan.cache is not None and plan.cache["storage"] is None:
        warnings.append(f"the cache ({plan.cache['bytes'] / 1e9:.1f} GB) fits neither the GPU nor host RAM: it "
                        "will be off (the full branch runs every step). Try precision fp8.")
    out["warnings"] = warnings
    out["experts"] = experts
    out["notes"] = [experts_note(plan.weights_bytes)] if experts == 2 else []
    return out


def experts_note(weights_bytes: int) -> str:
    """What two experts (Wan2.2 A14B, Latent Upscale Refine's model_high_noise) mean for memory: one
    architecture, so one call's plan covers either; ComfyUI's model management keeps the idle
    expert loaded only while it fits beside the running one's work (``load_models_gpu`` frees
    idle models until the memory it estimates for the running call is free)."""
    return (f"two experts: one plan covers either (one architecture); the idle expert's "
            f"{weights_bytes / 1e9:.1f} GB of weights stay on the GPU only while they fit, ComfyUI unloads them "
            "when the running expert needs the room.")
