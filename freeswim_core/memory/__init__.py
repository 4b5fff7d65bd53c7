"""The memory planner: will this model, at this size, with these FreeSwim options, fit?

Pure arithmetic, milliseconds per plan: the weights from the architecture
(its family's architecture in :mod:`freeswim_core.families`), the activations of one model
call phase by phase from what each step of ComfyUI's Wan code (:mod:`.phases`) or LTX-Video
code (:mod:`.ltxv`) holds with FreeSwim's patches, the cross-attention cache's size and where
it can live (:mod:`freeswim_core.dual.storage`).
``benchmarks/memory.py`` and the tests check it against a trace of the real model.

The answer is a :class:`MemoryPlan`, JSON-friendly (``as_dict``) for the UI.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from ..dual.storage import cache_bytes, choose_storage, host_cache_bytes
from . import ltxv
from . import phases as P
from ..families import variant
from ..families.ltxv import LTXVArchitecture
from ..families.wan import WanArchitecture
from ..units import DTYPE_BYTES
from .phases import HostTraits
from .vae import plan_vae

from .execution import HEADROOM, activation_bytes, choose_execution, fits_beside_weights, free_beside_weights

MODES = ("plain", "window", "dual", "cache")
EXECUTIONS = ("batched", "sequential")


@dataclass
class MemoryPlan:
    model: str
    width: int
    height: int
    frames: int
    mode: str
    execution: str
    weight_dtype: str
    grid: tuple
    window: tuple                   # the native window in tokens (rows, columns)
    windowed: bool                  # False: the grid fits the native window, FreeSwim changes nothing
    tokens: int
    rows: int                       # rows of the model call, full-attention twins included
    weights_bytes: int
    phases: dict = field(default_factory=dict)    # phase -> device bytes at its peak, weights included
    peak_phase: str = ""
    peak_bytes: int = 0
    needed_bytes: int = 0           # peak x HEADROOM: what the GPU must have free
    cache: Optional[dict] = None    # bytes, host_bytes, storage ("gpu", "cpu" or None: off), precision
    budget_bytes: Optional[int] = None
    fits: Optional[bool] = None     # None without a budget
    vae: Optional[dict] = None      # Wan 2.1 VAE: the decode and encode at this size (memory.vae), when
                                    # they run alone on the GPU (ComfyUI unloads the model for them)
    window_backend: str = "flex"    # the window kernel counted (phases.window_memory)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["grid"], d["window"] = list(self.grid), list(self.window)
        return d


def plan_memory(arch: WanArchitecture | LTXVArchitecture | str, width: int, height: int, frames: int = 81, *,
                mode: str = "dual", execution: str = "sequential", weight_dtype: str = "bf16",
                rows: int = 1, twins: Optional[int] = None, host: HostTraits = HostTraits(), vram_bytes: Optional[int] = None,
                host_ram_bytes: Optional[int] = None, cache_storage: str = "auto",
                cache_precision: str = "bf16", pinned: bool = True, with_vae: bool = True,
                window_backend: str = "flex") -> MemoryPlan:
    """Peak device memory of one model call of ``rows`` latent rows (1: the conditional call,
    which is the sampler's largest at sizes where memory matters; ``twins`` of them with a
    full-attention twin, all by default), and whether it fits ``vram_bytes``.

    ``mode``: ``plain`` (no FreeSwim), ``window``, ``dual`` (each row with a full-attention twin),
    ``cache`` (the dual path's guide call, features stored where ``cache_storage`` allows:
    ``host_ram_bytes`` free host RAM, ``vram_bytes`` minus the call's peak on the GPU).
    ``with_vae``: also plan the VAE's decode and encode at this size (the panel's; a sampling run
    plans its model calls only). ``window_backend``: the window kernel on the GPU, ``flex`` or
    ``natten`` (:func:`.phases.window_memory`; :func:`planned_backend` says which a run takes).
    """
    name = arch if isinstance(arch, str) else (arch.label or "custom")
    arch = variant(arch).arch if isinstance(arch, str) else arch
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if execution not in EXECUTIONS:
        raise ValueError(f"execution {execution!r}: choose one of {', '.join(EXECUTIONS)}")
    if weight_dtype not in DTYPE_BYTES:
        raise ValueError(f"weight dtype {weight_dtype!r}: choose one of {', '.join(DTYPE_BYTES)}")
    grid = arch.token_grid(width, height, frames)
    n = grid[0] * grid[1] * grid[2]
    U = n * arch.dim * P.ACT
    freeswim = mode != "plain"
    window_tokens = arch.native_window()
    # a grid inside the native window: window attention is a no-op, and so is the dual path
    windowed = freeswim and not (grid[1] <= window_tokens[0] and grid[2] <= window_tokens[1])
    twins = (rows if twins is None else min(twins, rows)) if windowed and mode in ("dual", "cache") else 0
    total = rows + twins
    token_major = freeswim and host.frees_block_inputs
    c, t, h, w = arch.latent_shape(width, height, frames)
    latent = c * t * h * w * P.ACT
    window = P.window_memory(window_backend, arch.heads, grid, arch.head_dim)    # (checks the name too)
    window = window if windowed else (0, 0)
    if arch.family == "ltxv":
        act, constant = ltxv.activations(arch, n, rows, twins, execution, windowed, freeswim, latent, window, host)
    else:
        act, constant = _wan_activations(arch, n, U, rows, twins, execution, windowed, freeswim, token_major,
                                         latent, window, host)
    weights = arch.weights_bytes(weight_dtype)

    cache = None
    resident_cache = 0
    if mode == "cache" and twins:
        eb = DTYPE_BYTES[cache_precision]
        blocks = arch.blocks
        need = cache_bytes(blocks, n, arch.dim, twins, eb)
        on_host = host_cache_bytes(blocks, n, arch.dim, twins, eb, pinned=pinned)
        peak_without = weights + max(act.values()) + constant
        # the GPU's room beside the call (none when no budget is given), the host's (unknown: no limit)
        free_gpu = 0 if vram_bytes is None else max(0, int(vram_bytes / HEADROOM) - peak_without)
        free_host = float("inf") if host_ram_bytes is None else host_ram_bytes
        storage = choose_storage(cache_storage, need, free_gpu, free_host, needed_host=on_host)
        resident_cache = need if storage == "gpu" else 0
        cache = {"bytes": need, "host_bytes": on_host, "storage": storage, "precision": cache_precision,
                 "blocks": blocks, "rows": twins}

    phase_bytes = {k: weights + constant + v + resident_cache for k, v in act.items()}
    peak_phase = max(phase_bytes, key=phase_bytes.get)
    peak = phase_bytes[peak_phase]
    needed = int(peak * HEADROOM)
    vae = None
    if with_vae and arch.vae == 8 and arch.out_dim == 16:       # the Wan 2.1 VAE's plan (the 2.2 VAE is not modelled)
        vae = {kind: plan_vae(kind, width, height, frames, vram_bytes, streamed=host.vae_streamed,
                              headroom=HEADROOM).as_dict()
               for kind in ("decode", "encode")}
    return MemoryPlan(name, width, height, frames, mode, execution if twins else "-", weight_dtype, grid,
                      window_tokens, windowed, n,
                      total, weights, phase_bytes, peak_phase, peak, needed, cache, vram_bytes,
                      None if vram_bytes is None else needed <= vram_bytes, vae, window_backend)


def _wan_activations(arch, n, U, rows, twins, execution, windowed, freeswim, token_major, latent, window, host):
    """(phase -> activation bytes at its peak, bytes alive through the call) of one Wan call
    (:mod:`.phases`); ``window``: the window kernel's transient bytes and what it keeps."""
    window_extra, block_tables = window
    total = rows + twins
    context_len = arch.text_len + (257 if arch.i2v else 0)            # I2V: CLIP image tokens first
    context = total * context_len * arch.dim * P.ACT + rows * arch.text_len * arch.text_dim * P.ACT
    constant = (n * arch.head_dim * 8                                # RoPE table, float32
                + (rows + total + (total if twins else 0)) * latent  # latent, padded, with twins
                + context
                + block_tables)
    hidden = total * U
    sa = ca = ff = 0
    for half in P.halves(rows, twins, U, execution == "sequential", windowed,
                         held=0 if host.frees_block_inputs else twins * U):
        sa = max(sa, P.self_attention(half, U, hidden, window_extra, copy0=not token_major, host=host,
                                      scaled=windowed))
        ca = max(ca, P.cross_attention(half, U, hidden, plain=not windowed, dual=bool(twins), host=host,
                                       image=arch.i2v))
        ff = max(ff, P.ffn(half, U, hidden, n, arch.dim, arch.ffn_dim, chunked=freeswim, host=host))
    act = {"embedding": P.embedding(total, U, latent), "self_attn": sa, "cross_attn": ca, "ffn": ff}
    return act, constant


__all__ = ["EXECUTIONS", "HEADROOM", "activation_bytes", "choose_execution", "fits_beside_weights",
           "free_beside_weights", "MODES", "HostTraits", "LTXVArchitecture", "MemoryPlan", "WanArchitecture",
           "plan_memory"]
