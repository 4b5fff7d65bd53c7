"""What the FreeSwim nodes need from a model family in ComfyUI: one small interface.

Everything the nodes know about a family's ComfyUI classes sits behind it, in one module
per family (``wan.py``): how its model is recognised, the facts the planner needs once
per run, how a model call's arguments give its token grid, where the block replacement
goes and in which order a block makes its attention calls, the object patches that bound
its memory, the memory planner's view of it, and what it refuses. The hooks, the
override and the nodes call only this interface.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional

import torch

from ...freeswim_core.geometry import TokenGrid
from ...freeswim_core.planner import ModelFacts
from ...freeswim_core.settings import RefineOptions


# The transformer_options key where a model's forward publishes its token grid (ComfyUI 0.5+'s Wan).
GRID_SIZES = "grid_sizes"
DTYPE_NAMES = {torch.float8_e4m3fn: "fp8", torch.float8_e5m2: "fp8", torch.bfloat16: "bf16",
               torch.float16: "fp16", torch.float32: "fp32"}


def weight_dtype_name(weight) -> str:
    """The memory planner's name of the dtype a block weight is stored in (fp8 checkpoints keep fp8
    on the device); by the bytes per value for layouts the planner does not name (quantised tensors)."""
    dtype = getattr(weight, "dtype", torch.bfloat16)
    if dtype in DTYPE_NAMES:
        return DTYPE_NAMES[dtype]
    size = torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 2
    return {1: "fp8", 4: "fp32"}.get(size, "bf16")


@dataclass(frozen=True)
class ModelInfo:
    """What a node reads off a MODEL when it is applied (before sampling)."""

    family: str
    patch_size: tuple[int, int, int]
    vae_factor: int                 # the VAE's spatial factor
    vae_temporal: int               # the VAE's temporal factor
    dim: int
    heads: int
    layers: int
    native_px: tuple[int, int]      # (width, height) detected for "auto"
    native_label: str
    model_type: str = "t2v"         # the family's variant name as ComfyUI builds it
    in_dim: int = 16                # latent channels the patch embedding takes

    @property
    def px_per_token(self) -> int:
        return self.vae_factor * self.patch_size[1]

    @property
    def image_to_video(self) -> bool:
        return False


@dataclass(frozen=True)
class CallInputs:
    """A model call's latent and token grid, read off the executor's arguments."""

    x: torch.Tensor
    grid: TokenGrid
    ambiguous: bool = False         # some attention calls are placed by shape and the grid has a
                                    # conditioning's token count: window attention is skipped
    ref_frames: int = 0             # reference frames before the host's own grid
    skip: Optional[str] = None      # why FreeSwim leaves this call alone (logged once per run), if it does


class Family(abc.ABC):
    """One model family's ComfyUI knowledge."""

    name: str                       # the registry's family name (freeswim_core.families)
    label: str                      # for messages: "Wan 2.1/2.2"
    loader_hint: str                # how a user loads one, for messages
    latent_nodes: tuple = ()        # ComfyUI nodes that make this family's video latent (the panel's size)
    replace_key: tuple = ("dit", "double_block")    # patches_replace[...][(kind, i)] of its blocks
    transformer_options_arg: int    # position of transformer_options in the forward the wrapper sees
    refine_shift: float = RefineOptions.shift      # the refine's flow shift for "auto" (the reference recipe's 9)
    refine_shift_auto: str = "9.0, the reference recipe's"    # what "auto" means, for the refine's log

    @abc.abstractmethod
    def recognises(self, dm) -> bool:
        """Is ``dm`` (a ComfyUI diffusion model) of this family?"""

    @abc.abstractmethod
    def info(self, model) -> ModelInfo:
        """The node-time facts of a MODEL of this family."""

    @abc.abstractmethod
    def blocks(self, dm) -> int:
        """How many blocks carry FreeSwim's block replacement."""

    @abc.abstractmethod
    def model_facts(self, dm, info: ModelInfo) -> ModelFacts:
        """The planner's facts, read once per run (with every object patch applied)."""

    @abc.abstractmethod
    def call_inputs(self, dm, args, kwargs) -> CallInputs:
        """The latent and token grid of one model call."""

    @abc.abstractmethod
    def install(self, model, dm) -> None:
        """Object patches FreeSwim adds to a (cloned) ModelPatcher of this family; idempotent."""

    @abc.abstractmethod
    def memory_plan(self, dm, info: ModelInfo, window, facts, twins: int, mode: str, execution: str,
                    cache_precision: str, window_backend: str = "flex"):
        """The memory planner's plan of one call (``freeswim_core.memory.plan_memory``), its window
        kernel ``window_backend`` (``freeswim_core.attention.planned_backend``)."""

    @abc.abstractmethod
    def host_level_traits(self) -> dict:
        """The memory planner's host traits without a loaded model (the panel's)."""

    def refine_sampling(self, model, shift: float):
        """The model sampling the refine runs under: flow shift ``shift`` (sigma -> s*sigma / (1 + (s-1)*sigma)),
        or, for 0 (auto), the family's default. Returns a (cloned) ModelPatcher."""
        from comfy_extras.nodes_model_advanced import ModelSamplingSD3
        (shifted,) = ModelSamplingSD3().patch(model, shift or self.refine_shift)
        return shifted

    def refusal(self, dm) -> Optional[str]:
        """Why no FreeSwim node runs on this model of the family (None: they do)."""
        return None

    def dual_path_refusal(self, dm) -> Optional[str]:
        """Why the dual path cannot run on this model (None: it can)."""
        return None
