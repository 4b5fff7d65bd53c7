"""LTX-Video in ComfyUI (``comfy.ldm.lightricks.model.LTXVModel``): everything the nodes know about its classes.

* Recognised by ComfyUI's own class. LTX-2 (``LTXAVModel``, audio and video in one model) is
  refused by name: its blocks take the video and audio streams together (a tuple of hidden
  states, compressed timesteps) and interleave six attention calls per block, so neither the
  twin rows nor the placement of attention calls by their order carries over.
* Tokens: ``SymmetricPatchifier(1)``, one token per latent pixel, frame-major, so the token grid
  of a call is the latent's ``(T, H, W)``. Guide frames that LTXVAddGuide appends to the latent
  are latent frames of the same height and width: they are frames of that grid, windowed like
  the video frames (every query sees every frame, inside its spatial window).
* Calls FreeSwim leaves alone (logged once per run): ComfyUI 0.33's guide attention masks
  (LTXVAddGuide with a strength other than 1 or a pixel mask split a block's self-attention into
  masked calls by rows) and guides that drop tokens from the grid (dilated IC-LoRA guides).
* A block (``patches_replace["dit"][("double_block", i)]``) makes its self-attention call
  (``attn1``), then its text cross-attention call (``attn2``, also under ``cross_attention_adaln``),
  then its feed-forward; the cross call may carry the text's attention mask.
* Object patches: the token-chunked feed-forward (``ff``, the whole module: ComfyUI 0.33's
  ``FeedForward.forward`` calls its layers itself) on every block.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from comfy.ldm.lightricks.model import LTXVModel

from ...freeswim_core.families import detected_native
from ...freeswim_core.families.ltxv import LTXVArchitecture
from ...freeswim_core.geometry import TokenGrid
from ...freeswim_core.memory import HostTraits, plan_memory
from ...freeswim_core.planner import ModelFacts
from ...freeswim_core.native import native_tokens_per_frame
from ..ffn_chunks import hidden_width, install_chunked_ffn
from .base import CallInputs, Family, ModelInfo, weight_dtype_name

# LTXVModel.forward(x, timestep, context, attention_mask, frame_rate, transformer_options, keyframe_idxs, ...)
ARG_X, ARG_TRANSFORMER_OPTIONS, ARG_KEYFRAME_IDXS = 0, 5, 6
BLOCKS = "transformer_blocks"
VAE_FACTOR, VAE_TEMPORAL = 32, 8
SUPPORTED = "LTX-Video 0.9.x (2B, 13B)"


def _is_ltx2(dm) -> bool:
    return type(dm).__name__ == "LTXAVModel"


class LTXV(Family):
    name = "ltxv"
    label = "LTX-Video"
    loader_hint = "Load Diffusion Model or Load Checkpoint with an ltxv-2b-* or ltxv-13b-* file"
    latent_nodes = ("EmptyLTXVLatentVideo", "LTXVImgToVideo")
    transformer_options_arg = ARG_TRANSFORMER_OPTIONS
    refine_shift_auto = "the model's own sampling (ComfyUI's LTXV: log-shift 2.37, a flow shift of 10.7)"

    def recognises(self, dm) -> bool:
        return isinstance(dm, LTXVModel)

    def refusal(self, dm) -> Optional[str]:
        if _is_ltx2(dm):
            return (f"the connected model is LTX-2 ({type(dm).__name__}, audio and video in one model), which "
                    f"FreeSwim does not support: its blocks run the audio and video streams together. Use an "
                    f"{SUPPORTED} model.")
        return None

    def info(self, model) -> ModelInfo:
        dm = model.model.diffusion_model
        attn = dm.transformer_blocks[0].attn1
        dim = attn.heads * attn.dim_head
        native_px, label = detected_native(self.name, dim, VAE_FACTOR)
        return ModelInfo(family=self.name, patch_size=(1, 1, 1), vae_factor=VAE_FACTOR, vae_temporal=VAE_TEMPORAL,
                         dim=dim, heads=attn.heads, layers=len(dm.transformer_blocks), native_px=native_px,
                         native_label=label, model_type="t2v",
                         in_dim=int(getattr(dm.patchify_proj, "in_features", 128)))

    def blocks(self, dm) -> int:
        return len(dm.transformer_blocks)

    def model_facts(self, dm, info: ModelInfo) -> ModelFacts:
        return ModelFacts(family=self.name, blocks=len(dm.transformer_blocks), dim=info.dim, heads=info.heads,
                          head_dim=info.dim // info.heads, px_per_token=info.px_per_token, native_px=info.native_px,
                          native_label=info.native_label, cross_per_block=1,
                          reference_tokens=native_tokens_per_frame(info.native_px, info.px_per_token))

    def call_inputs(self, dm, args, kwargs) -> CallInputs:
        x = kwargs["x"] if "x" in kwargs else args[ARG_X]
        _, _, t, h, w = x.shape
        keyframes = kwargs.get("keyframe_idxs", args[ARG_KEYFRAME_IDXS] if len(args) > ARG_KEYFRAME_IDXS else None)
        return CallInputs(x, TokenGrid(t, h, w), skip=_skip_reason(dm, keyframes, kwargs))

    def refine_sampling(self, model, shift: float):
        """LTX samples as a Flux-type flow model (``ModelSamplingFlux``: the model takes sigma, not
        sigma x 1000), whose shift ``mu`` is a log: flow shift ``s`` is ``mu = ln s``, the same curve
        as Wan's. 0 (auto) keeps the model's own sampling: ComfyUI's default for LTXV, or what a
        ModelSamplingLTXV node upstream set."""
        import comfy.model_sampling
        if not shift:
            return model

        class FluxSampling(comfy.model_sampling.ModelSamplingFlux, comfy.model_sampling.CONST):
            pass
        sampling = FluxSampling(model.model.model_config)
        sampling.set_parameters(shift=math.log(shift))
        m = model.clone()
        m.add_object_patch("model_sampling", sampling)
        return m

    def install(self, model, dm) -> None:
        install_chunked_ffn(model, dm, (BLOCKS,), attr="ff")

    def memory_plan(self, dm, info, window, facts, twins, mode, execution, cache_precision, window_backend="flex"):
        _, _, t, h, w = facts.shape
        arch = architecture_of(dm, info, tuple(window.native_px))
        weight_dtype = weight_dtype_name(dm.transformer_blocks[0].attn1.to_q.weight)
        return plan_memory(arch, w * VAE_FACTOR, h * VAE_FACTOR, (t - 1) * VAE_TEMPORAL + 1, mode=mode,
                           execution=execution, weight_dtype=weight_dtype, rows=facts.rows, twins=twins,
                           host=HostTraits(**self.host_level_traits()), cache_precision=cache_precision,
                           with_vae=False, window_backend=window_backend)

    def host_level_traits(self) -> dict:
        """How the running ComfyUI's LTX code spends memory (``freeswim_core.memory.ltxv``), read off its
        classes. Its ``CrossAttention`` keeps q, k and v until ``to_out`` and the nodes never write over q
        (``frees_queries``); the block adds its outputs into its input in place and the sequential dual
        path joins the halves into a new tensor (``frees_block_inputs``). The memory trace
        (``harness/memory_trace.py``) holds the planner to these on both built hosts."""
        import comfy.ldm.lightricks.model as ltx
        ffn_names = ltx.FeedForward.forward.__code__.co_names
        # 0.33: linear_input_act(net[2], net[0].proj(x)): the projection kept through the activation and
        # the down projection (per token slice: the nodes chunk the whole ``ff``); 0.3.x: self.net(x)
        layers_called = "linear_input_act" in ffn_names or "proj" in ffn_names
        table = getattr(ltx, "precompute_freqs_cis", None)      # 0.3.x: float32 cos, sin at full width
        return dict(rope_in_float32=table is not None and "repeat_interleave" in table.__code__.co_names,
                    frees_queries=False, frees_block_inputs=False, ffn_holds_hidden=layers_called,
                    vae_streamed=False, ffn_chunked=True,
                    keeps_block_norm="norm_x" in ltx.BasicTransformerBlock.forward.__code__.co_varnames,
                    # 0.33: the loop in _process_transformer_blocks, _forward holding its input
                    keeps_first_input=hasattr(ltx.LTXVModel, "_process_transformer_blocks"))


LTXV_FAMILY = LTXV()


def architecture_of(dm, info: ModelInfo, native: tuple) -> LTXVArchitecture:
    block = dm.transformer_blocks[0]
    return LTXVArchitecture(dim=info.dim, blocks=len(dm.transformer_blocks), head_dim=block.attn1.dim_head,
                            ffn_mult=max(1, hidden_width(block.ff) // info.dim), in_dim=info.in_dim, out_dim=info.in_dim,
                            native=native, label=info.native_label)


def drops_guide_tokens(dm) -> bool:
    """Does this host's LTX forward drop guide tokens whose noise mask is negative (ComfyUI 0.33's
    ``grid_mask`` for dilated IC-LoRA guides)? Read off its code, not a version number."""
    code = getattr(getattr(type(dm), "_process_input", None), "__code__", None)
    return code is not None and "grid_mask" in code.co_consts + code.co_names + code.co_varnames


def _skip_reason(dm, keyframes, kwargs) -> Optional[str]:
    """Why FreeSwim leaves this model call alone (None: it runs)."""
    entries = kwargs.get("guide_attention_entries") or ()
    if any(e.get("strength", 1.0) != 1.0 or e.get("pixel_mask") is not None for e in entries
           if isinstance(e, dict)):
        return ("this LTX model call carries a guide attention mask (LTXVAddGuide with a strength other than 1 "
                "or with a mask), which splits self-attention into masked calls")
    denoise = kwargs.get("denoise_mask")
    if (isinstance(keyframes, torch.Tensor) and keyframes.dim() >= 3 and keyframes.shape[2] > 0
            and isinstance(denoise, torch.Tensor) and drops_guide_tokens(dm) and bool((denoise < 0).any())):
        return ("this LTX model call's guides drop tokens from the video grid (a dilated IC-LoRA guide), so its "
                "tokens are not a grid")
    return None
