"""Wan 2.1 / 2.2 in ComfyUI (``comfy.ldm.wan.model``): everything the nodes know about its classes.

* Recognised by ComfyUI's own classes (``WanModel`` with ``WanSelfAttention``), so a model
  that is not a Wan DiT is refused before sampling starts.
* A block is ``patches_replace["dit"][("double_block", i)]``; it makes its self-attention
  call, then its cross-attention call(s): I2V blocks (``WanI2VCrossAttention``) the CLIP
  image call, then the text call. VACE blocks run outside the replacement.
* The token grid of a call mirrors ``WanModel._forward``: latent frames, plus frames
  concatenated in time, plus one frame of reference tokens.
* What the running ComfyUI's Wan code does that FreeSwim relies on is read off the code
  itself, not a version number that forks and backports would make wrong: whether its
  forward publishes ``transformer_options["grid_sizes"]`` (0.5 and later; FreeSwim then
  confirms its grid), and which tensors it drops after use (so FreeSwim may reuse their
  memory).
* Object patches: the token-chunked FFN on every block and the token-major patch embedding.
"""
from __future__ import annotations

from typing import Optional

import comfy.latent_formats
import torch
from comfy.ldm.wan.model import (CameraWanModel, VaceWanModel, WanI2VCrossAttention, WanModel, WanSelfAttention,
                                 WanT2VCrossAttention)

from ...freeswim_core.families import detected_native
from ...freeswim_core.families.wan import WanArchitecture
from ...freeswim_core.geometry import TokenGrid, token_grid_from_latent
from ...freeswim_core.memory import HostTraits, plan_memory
from ...freeswim_core.planner import ModelFacts
from ..ffn_chunks import install_chunked_ffn
from ..patch_embedding import install_token_major_embedding
from .base import GRID_SIZES, CallInputs, Family, ModelInfo, weight_dtype_name

# Positions of WanModel.forward's arguments as ComfyUI's executor passes them.
ARG_X, ARG_CONTEXT, ARG_CLIP_FEA, ARG_TIME_DIM_CONCAT, ARG_TRANSFORMER_OPTIONS = 0, 2, 3, 4, 5
BLOCK_GROUPS = ("blocks", "vace_blocks")
# Wan variants whose blocks make exactly one self-attention call followed by their cross-attention
# call(s); S2V, HuMo and Animate add audio/face attention in between.
DUAL_PATH_MODELS = (WanModel, VaceWanModel, CameraWanModel)


class WanInfo(ModelInfo):
    @property
    def image_to_video(self) -> bool:
        """Takes a start image: Wan2.1 I2V ("i2v", CLIP image tokens) or Wan2.2 I2V A14B, which ComfyUI
        builds as "t2v" with 36 input channels (16 noise, 4 mask, 16 image latent)."""
        return self.model_type == "i2v" or (self.vae_factor == 8 and self.in_dim == 36)


class Wan(Family):
    name = "wan"
    label = "Wan 2.1/2.2"
    loader_hint = "Load Diffusion Model with a wan2.1_* or wan2.2_* file"
    latent_nodes = ("EmptyHunyuanLatentVideo", "WanImageToVideo", "EmptyLatentVideo", "Wan22ImageToVideoLatent")
    transformer_options_arg = ARG_TRANSFORMER_OPTIONS

    def recognises(self, dm) -> bool:
        return isinstance(dm, WanModel) and any(isinstance(m, WanSelfAttention) for m in dm.modules())

    def info(self, model) -> WanInfo:
        dm = model.model.diffusion_model
        latent_format = getattr(model.model, "latent_format", None)
        vae_factor = 16 if isinstance(latent_format, comfy.latent_formats.Wan22) else 8
        native_px, label = detected_native(self.name, dm.dim, vae_factor)
        return WanInfo(family=self.name, patch_size=tuple(dm.patch_size), vae_factor=vae_factor, vae_temporal=4,
                       dim=dm.dim, heads=dm.num_heads, layers=len(dm.blocks), native_px=native_px,
                       native_label=label, model_type=str(getattr(dm, "model_type", "t2v")),
                       in_dim=int(getattr(dm.patch_embedding, "in_channels", 0)))

    def blocks(self, dm) -> int:
        return len(dm.blocks)

    def model_facts(self, dm, info: ModelInfo) -> ModelFacts:
        groups = [b for g in BLOCK_GROUPS for b in (getattr(dm, g, None) or [])]
        return ModelFacts(family=self.name, blocks=len(groups), dim=dm.dim, heads=dm.num_heads,
                          head_dim=dm.dim // dm.num_heads, px_per_token=info.px_per_token, native_px=info.native_px,
                          native_label=info.native_label, cross_per_block=2 if _image_cross(dm) else 1,
                          check_grid=sets_grid_sizes(dm), frees_queries=host_frees_queries(dm),
                          frees_block_inputs=host_frees_block_inputs(dm))

    def call_inputs(self, dm, args, kwargs) -> CallInputs:
        def arg(i, name):
            return kwargs[name] if name in kwargs else (args[i] if len(args) > i else None)
        x, time_dim_concat = arg(ARG_X, "x"), arg(ARG_TIME_DIM_CONCAT, "time_dim_concat")
        grid = token_grid_from_latent(x.shape, dm.patch_size)
        t = grid.t
        if time_dim_concat is not None:
            t += token_grid_from_latent(time_dim_concat.shape, dm.patch_size).t
        ref = 1 if "reference_latent" in kwargs and getattr(dm, "ref_conv", None) is not None else 0
        grid = TokenGrid(t + ref, grid.h, grid.w)
        ambiguous = bool(getattr(dm, "vace_blocks", None)) and grid.tokens in _cross_lengths(
            arg(ARG_CONTEXT, "context"), arg(ARG_CLIP_FEA, "clip_fea"))
        return CallInputs(x, grid, ambiguous, ref)

    def install(self, model, dm) -> None:
        install_chunked_ffn(model, dm, BLOCK_GROUPS)
        if host_frees_block_inputs(dm):      # the host loop this layout is known to suit
            install_token_major_embedding(model, dm)

    def memory_plan(self, dm, info, window, facts, twins, mode, execution, cache_precision, window_backend="flex"):
        _, _, t, h, w = facts.shape
        arch = WanArchitecture(dim=dm.dim, ffn_dim=dm.ffn_dim, blocks=len(dm.blocks), in_dim=dm.in_dim,
                               out_dim=dm.out_dim, head_dim=dm.dim // dm.num_heads, patch=tuple(dm.patch_size),
                               vae=info.vae_factor, i2v=_image_cross(dm), native=tuple(window.native_px),
                               label=info.native_label)
        return plan_memory(arch, w * info.vae_factor, h * info.vae_factor, (t - 1) * info.vae_temporal + 1,
                           mode=mode, execution=execution, weight_dtype=weight_dtype_of(dm), rows=facts.rows,
                           twins=twins, host=HostTraits(**host_traits(dm)), cache_precision=cache_precision,
                           with_vae=False, window_backend=window_backend)

    def host_level_traits(self) -> dict:
        """ComfyUI's own Wan classes, whose forwards drop q and block inputs."""
        import comfy.ldm.wan.model as wan
        from comfy.ldm.wan.vae import Decoder3d
        return dict(rope_in_float32=rope_in_float32(), frees_queries=True, frees_block_inputs=True,
                    ffn_holds_hidden=hasattr(wan, "WanFeedForward"), vae_streamed=hasattr(Decoder3d, "run_up"))

    def dual_path_refusal(self, dm) -> Optional[str]:
        if type(dm) in DUAL_PATH_MODELS:
            return None
        return (f"{type(dm).__name__} adds attention layers between a block's self- and cross-attention, which "
                "the dual path does not support yet. Use FreeSwim Window Attention Patch alone with this model.")


WAN = Wan()


def _image_cross(dm) -> bool:
    return isinstance(dm.blocks[0].cross_attn, WanI2VCrossAttention)


def _cross_lengths(context, clip_fea) -> set[int]:
    lengths = set()
    for t, axis in ((context, 1), (clip_fea, -2)):
        if isinstance(t, torch.Tensor) and t.dim() >= 2:
            lengths.add(int(t.shape[axis]))
    return lengths


# --- what the running ComfyUI's Wan code does ---------------------------------------------------

_constants: dict[type, frozenset] = {}   # per model class (a plain dict: torch.compile traces it)


def _forward_constants(cls) -> frozenset:
    found = _constants.get(cls)
    if found is None:
        code = getattr(getattr(cls, "forward_orig", None), "__code__", None)
        found = frozenset(c for c in (code.co_consts if code is not None else ()) if isinstance(c, str))
        _constants[cls] = found
    return found


def sets_grid_sizes(dm) -> bool:
    """Does this model's forward set ``transformer_options["grid_sizes"]``?"""
    return GRID_SIZES in _forward_constants(type(dm))


def _own_forward(obj, cls, name: str) -> bool:
    """Does ``obj.name`` run ``cls.name`` itself: not a subclass's override and not a function
    another node set on the object (``add_object_patch("...forward", fn)``)? A method that
    ComfyUI put back after such a patch is the class's own again."""
    bound = getattr(obj, name, None)
    return getattr(bound, "__func__", None) is getattr(cls, name)


def host_frees_queries(dm) -> bool:
    """Do this model's attention modules run ComfyUI's own forwards (``WanSelfAttention``,
    ``WanT2VCrossAttention``, ``WanI2VCrossAttention``), which read q after their last attention
    call only to pass it to ``attn1_patch`` patches? Then FreeSwim may write that call's output
    over q (where no such patch is set)."""
    blocks = [b for g in BLOCK_GROUPS for b in (getattr(dm, g, None) or [])]
    return bool(blocks) and all(
        _own_forward(b.self_attn, WanSelfAttention, "forward")
        and any(_own_forward(b.cross_attn, c, "forward") for c in (WanT2VCrossAttention, WanI2VCrossAttention))
        for b in blocks)


def host_frees_block_inputs(dm) -> bool:
    """Does this model run ComfyUI's own ``WanModel.forward_orig``, which keeps no reference to a
    block's input once the block returns? (VACE keeps the first block's input; other variants have
    their own loops.) Then a block's output may be written into its input's memory."""
    return _own_forward(dm, WanModel, "forward_orig")


def rope_in_float32() -> bool:
    """Does the host's RoPE (``comfy.ldm.flux.math.apply_rope1``) compute through float32 copies of
    q and k (ComfyUI 0.3.x) rather than a fused kernel (``comfy_kitchen``, ComfyUI 0.5+)?"""
    import comfy.ldm.flux.math as rope
    return "ck" not in rope.apply_rope1.__code__.co_names


def ffn_holds_hidden(dm) -> bool:
    """Does the host's Wan FFN keep its hidden state alive through the down projection (ComfyUI
    0.5+'s ``WanFeedForward``: ``linear(act(hidden))``) rather than run as a plain
    ``nn.Sequential`` (which drops it once the activation exists)?"""
    ffn = getattr(dm.blocks[0], "ffn", None)
    ffn = getattr(ffn, "_original", (ffn,))[0]       # under FreeSwim's token-chunked FFN
    return type(ffn).forward is not torch.nn.Sequential.forward


def host_traits(dm) -> dict:
    """What the memory planner (``freeswim_core.memory.HostTraits``) needs to know about the host,
    for this model (its own forwards, possibly patched by other nodes)."""
    return {**WAN.host_level_traits(), "frees_queries": host_frees_queries(dm),
            "frees_block_inputs": host_frees_block_inputs(dm), "ffn_holds_hidden": ffn_holds_hidden(dm)}


def weight_dtype_of(dm) -> str:
    """The dtype Wan's block weights are stored in (see :func:`.base.weight_dtype_name`)."""
    return weight_dtype_name(getattr(getattr(dm.blocks[0].self_attn, "q", None), "weight", None))
