"""Device bytes of one Wan model call, phase by phase, counted from what each step holds
(LTX-Video's block: :mod:`.ltxv`).

One transformer block runs as ComfyUI's Wan code runs it, with FreeSwim's patches: the
terms below are the tensors alive at the largest moment of each phase, named after the
code that holds them. ``U`` is one row's hidden state (tokens x dim x 2 bytes, bf16).
Every block is the same, except that without the token-major patch embedding the first
block copies its input (``x.contiguous()``). The planner takes the largest phase.

With the dual path run ``sequential``, a block runs twice: the full-attention twins (its
"twins" half) and then the caller's rows (its "window" half), which hold the twins'
cross-attention hand-off through their self-attention. ``batched`` runs all rows at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..attention import natten_backend
from ..attention.flex import head_group      # the window backend's own head groups
from ..geometry import TokenGrid

ACT = 2                          # bf16 activations
# The token-chunked FFN (nodes/ffn_chunks.py) slices its tokens with ffn_slice_tokens: bytes the
# hidden state of one slice may take (its width x dtype size x 2, for the activation beside it),
# large enough that each slice is still a large matmul.
FFN_HIDDEN_BUDGET = 1 << 30
MIN_SLICE_TOKENS = 1024
BLOCK_SIZE = 128                 # FlexAttention's block


@dataclass(frozen=True)
class HostTraits:
    """How the running ComfyUI's Wan code spends memory (the nodes read it from the host)."""

    rope_in_float32: bool = False     # ComfyUI 0.3.x: RoPE of q and k through float32 copies (LTX: its
                                      # table built from float32 cos and sin, precompute_freqs_cis)
    frees_queries: bool = True        # attention outputs may be written over q (nodes/families/wan.py)
    frees_block_inputs: bool = True   # block outputs into their inputs; token-major patch embedding
    ffn_holds_hidden: bool = False    # ComfyUI 0.5+: the FFN keeps its hidden state through the down projection
    vae_streamed: bool = True         # ComfyUI 0.5+: the Wan VAE decoder streams its upsampling stages
    # LTX-Video's block (memory.ltxv; Wan's phases do not read these)
    ffn_chunked: bool = True          # the block calls the FFN FreeSwim chunks (ComfyUI 0.33's LTX FeedForward
                                      # calls its layers itself, past the patched ff.net)
    keeps_block_norm: bool = False    # ComfyUI 0.33's LTX block keeps its normed input (norm_x) until it returns
    keeps_first_input: bool = False   # ComfyUI 0.33's LTXVModel._forward keeps the patch embedding's output
                                      # through its block loop


@dataclass(frozen=True)
class Half:
    """Rows a block runs at once: ``window`` rows use window attention, ``full`` rows the host's full
    attention; ``handoff`` bytes and a finished half's output (``held``) stay alive beside them."""

    window: int
    full: int
    handoff: int = 0
    held: int = 0
    takes_handoff: bool = False       # the caller's rows of a sequential dual block
    gives_handoff: bool = False       # the twins of a sequential dual block

    @property
    def rows(self) -> int:
        return self.window + self.full


def halves(rows: int, twins: int, U: int, sequential: bool, windowed: bool, held: int = 0) -> list[Half]:
    """What a block runs at once (``U``: one row's hidden states): sequential, the twins (handing off
    their cross-attention) and then the caller's rows (taking it, beside ``held`` bytes of the twins'
    finished output); batched, all rows; not windowed, every row with the host's full attention."""
    if twins and sequential:
        return [Half(window=0, full=twins, gives_handoff=True),
                Half(window=rows, full=0, handoff=twins * U, takes_handoff=True, held=held)]
    if windowed:
        return [Half(window=rows, full=twins)]
    return [Half(window=0, full=rows)]


# the window backends the planner counts on a GPU (``chunked`` is counted as ``flex``: its copies
# have the same 1 GiB cap, and it holds no block tables)
WINDOW_BACKENDS = ("flex", "natten")


def window_extra_bytes(heads: int, tokens: int, head_dim: int) -> int:
    """The flex backend's transient copies for one row: q, k, v reordered and padded, and its output,
    in the backend's own head groups."""
    return 4 * head_group(heads, tokens, head_dim, ACT) * tokens * head_dim * ACT


def window_memory(backend: str, heads: int, grid: tuple, head_dim: int) -> tuple[int, int]:
    """(transient bytes of one row's window kernel, bytes it keeps through the call) of ``backend``:
    flex, its reordered copies and its block tables; natten, NATTEN's tiled copies of one head group
    (:func:`freeswim_core.attention.natten_backend.call_bytes`) and nothing kept."""
    if backend not in WINDOW_BACKENDS:
        raise ValueError(f"window backend {backend!r}: choose one of {', '.join(WINDOW_BACKENDS)}")
    tokens = math.prod(grid)
    if backend == "natten":
        g = TokenGrid(*grid)
        return natten_backend.call_bytes(natten_backend.head_group(heads, g, head_dim, ACT), g, head_dim, ACT), 0
    return window_extra_bytes(heads, tokens, head_dim), block_table_bytes(tokens)


def block_table_bytes(tokens: int) -> int:
    """The window BlockMask's tables: two [query blocks, key blocks] int32 index tables padded to
    the full key width, and their two counts."""
    q = math.ceil(tokens / BLOCK_SIZE)
    return 2 * q * q * 4 + 2 * q * 4


def ffn_slice_tokens(ffn_dim: int, element_bytes: int = ACT, budget: int = FFN_HIDDEN_BUDGET) -> int:
    """Tokens per FFN slice so that a slice's hidden state (and its activation) fits ``budget``."""
    return max(MIN_SLICE_TOKENS, budget // (2 * ffn_dim * element_bytes))


def self_attention(h: Half, U: int, hidden: int, window_extra: int, copy0: bool, host: HostTraits,
                   scaled: bool) -> int:
    u = h.rows * U
    base = hidden + h.handoff + h.held + u + (u if copy0 else 0)     # + the attention input
    kqv = base + 3 * u                                                # q, k (and its norm or RoPE), v
    rope = base + u + (6 * u if host.rope_in_float32 else 2 * u)      # q; k: normed, float32 copy, product, result
    kernel = 0
    if h.window:
        kernel += window_extra + (0 if host.frees_queries else h.window * U)
    if h.full:
        kernel += h.full * U                                          # the host kernel's output
        if scaled and not host.frees_queries:
            kernel += h.full * U                                      # q scaled out of place
    if h.window and h.full and not host.frees_queries:
        kernel += u                                                   # both outputs joined
    o_proj = base + 3 * u + (0 if host.frees_queries else u)          # q (or the output), k, o's output
    return max(kqv, rope, kqv + kernel, o_proj)


def cross_attention(h: Half, U: int, hidden: int, plain: bool, dual: bool, host: HostTraits,
                    image: bool = False) -> int:
    """``image``: I2V blocks attend to the CLIP image tokens first (with the same q) and add that
    output to the text attention's before the output projection."""
    u = h.rows * U
    base = hidden + h.held + 2 * u                                    # x after self-attention, its norm3
    img = 2 * u if image else 0                                       # the image attention's output, the sum
    q_proj = base + h.handoff + 2 * u                                 # q's projection and its norm
    if h.takes_handoff:                                               # rows assembled from the hand-off
        attn = base + h.handoff + u + (0 if host.frees_queries else u) + img // 2
        o_proj = base + u + u + (0 if host.frees_queries else u) + img
    elif dual and not plain and not h.gives_handoff:                  # batched: twins computed, rows copied
        attn = base + u + h.full * U + (0 if host.frees_queries else u) + img // 2
        o_proj = base + u + u + (0 if host.frees_queries else u) + img
    else:                                                             # the host's own cross-attention
        attn = base + u + u + img // 2
        o_proj = base + 3 * u + img
    return max(q_proj, attn, o_proj)


def _ffn_call(hidden_bytes: int, out_bytes: int, host: HostTraits) -> int:
    """One call of the FFN's layers: its hidden state and activation; then the activation (and the
    hidden state, where the host keeps it) beside the output."""
    if host.ffn_holds_hidden:
        return 2 * hidden_bytes + out_bytes
    return max(2 * hidden_bytes, hidden_bytes + out_bytes)


def ffn(h: Half, U: int, hidden: int, tokens: int, dim: int, ffn_dim: int, chunked: bool,
        host: HostTraits) -> int:
    u = h.rows * U
    base = hidden + h.held + 2 * u                                    # x after cross-attention, FFN input
    if h.gives_handoff:
        base += h.full * U                                            # the hand-off, kept for the window half
    step = ffn_slice_tokens(ffn_dim)
    if chunked and tokens > step:
        inner = h.rows * step                                         # the output, and one slice
        return base + u + _ffn_call(inner * ffn_dim * ACT, inner * dim * ACT, host)
    return base + _ffn_call(h.rows * tokens * ffn_dim * ACT, u, host)


def embedding(rows: int, U: int, latent_bytes: int) -> int:
    """The patch embedding: the latent in float32, the float32 convolution output, its bf16 copy."""
    return rows * (2 * latent_bytes + 2 * U + U)
