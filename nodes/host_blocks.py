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
    return getattr(type(obj), name, None) is getattr(cls, name)


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


def host_frees_block_inputs(dm) -> bool:
    """Does this model run ComfyUI's own ``WanModel.forward_orig``, which keeps no reference to a
    block's input once the block returns? (VACE keeps the first block's input; other variants have
    their own loops.) Then a block's output may be written into its input's memory."""
    from comfy.ldm.wan.model import WanModel
    return _own_forward(dm, WanModel, "forward_orig")
