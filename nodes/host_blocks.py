"""What the running ComfyUI's Wan code does that FreeSwim relies on: does it tell the blocks the
token grid, and which of its tensors does it drop after use (so FreeSwim may reuse their memory).

Current ComfyUI (0.5 and later) sets ``transformer_options["grid_sizes"]`` (the
latent's token grid after patch embedding) before the first block; 0.3.x does
not. Where the model's own forward sets it, FreeSwim confirms the grid it derived
from the latent against it before windowing anything. (Blocks themselves are
identified by FreeSwim's block replacement, on every host.)

The check reads the string constants of the model class's ``forward_orig``: the
key the host's own code writes, not a version number that forks and backports
would make wrong.
"""
from __future__ import annotations

GRID_SIZES = "grid_sizes"

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
    from comfy.ldm.wan.model import WanI2VCrossAttention, WanSelfAttention, WanT2VCrossAttention
    blocks = list(dm.blocks) + list(getattr(dm, "vace_blocks", None) or [])
    return bool(blocks) and all(
        _own_forward(b.self_attn, WanSelfAttention, "forward")
        and any(_own_forward(b.cross_attn, c, "forward") for c in (WanT2VCrossAttention, WanI2VCrossAttention))
        for b in blocks)


def writable_in_place(t) -> bool:
    """May a tensor the host dropped be overwritten now: not part of an autograd graph, and not an
    inference tensor outside inference mode (which torch refuses to write)."""
    import torch
    return (isinstance(t, torch.Tensor) and not t.requires_grad
            and (torch.is_inference_mode_enabled() or not t.is_inference()))


def host_frees_block_inputs(dm) -> bool:
    """Does this model run ComfyUI's own ``WanModel.forward_orig``, which keeps no reference to a
    block's input once the block returns? (VACE keeps the first block's input; other variants have
    their own loops.) Then a block's output may be written into its input's memory."""
    from comfy.ldm.wan.model import WanModel
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
    import torch
    ffn = getattr(dm.blocks[0], "ffn", None)
    ffn = getattr(ffn, "_original", (ffn,))[0]       # under FreeSwim's token-chunked FFN
    return type(ffn).forward is not torch.nn.Sequential.forward


def host_traits(dm) -> dict:
    """What the memory planner (``freeswim_core.memory.HostTraits``) needs to know about the host,
    for this model (its own forwards, possibly patched by other nodes)."""
    return {**host_level_traits(), "frees_queries": host_frees_queries(dm),
            "frees_block_inputs": host_frees_block_inputs(dm), "ffn_holds_hidden": ffn_holds_hidden(dm)}


def host_level_traits() -> dict:
    """The host traits that do not depend on a loaded model, for plans made before one is loaded
    (the UI's): ComfyUI's own Wan classes, whose forwards drop q and block inputs."""
    import comfy.ldm.wan.model as wan
    from comfy.ldm.wan.vae import Decoder3d
    return dict(rope_in_float32=rope_in_float32(), frees_queries=True, frees_block_inputs=True,
                ffn_holds_hidden=hasattr(wan, "WanFeedForward"), vae_streamed=hasattr(Decoder3d, "run_up"))
