"""Device bytes of one LTX-Video model call, phase by phase, counted from what each step holds.

The LTX counterpart of :mod:`.phases` (Wan): one ``BasicTransformerBlock`` of ComfyUI's
``comfy/ldm/lightricks/model.py`` as it runs with FreeSwim's patches, the terms named after
the code that holds them. ``U`` is one row's hidden state (tokens x dim x 2 bytes, bf16),
``u`` the hidden states of the rows a block runs at once (a :class:`~.phases.Half`).

What differs from Wan's block:

* the RoPE table ``pe`` is per row of the call (the patchifier's coordinates carry the
  batch), bf16, ``[rows, tokens, dim / 2, 2, 2]``: 2 U per row, alive through every block;
  building it is the model's embedding phase (ComfyUI 0.3.x builds it from float32 cos and
  sin at the full width, ``precompute_freqs_cis``; 0.33 from half-width ones,
  ``freqs_cis_matrix``);
* the block adds its outputs into its input in place (``x.addcmul_``, ``x +=``): the twins'
  half of a sequential block leaves its output in the block's input, nothing is held
  beside it, and the block replacement joins the halves into a new tensor (``torch.cat``);
* ``attn1``'s q, k and v stay alive until ``to_out`` has run (locals of ``CrossAttention.forward``),
  and LTX's nodes never write an attention output over q (``ModelFacts.frees_queries`` is
  False for LTX), so a window row's output is a new tensor;
* its FFN is 4 x dim wide, a ``GELU_approx`` projection and a down projection; the nodes chunk
  the whole ``ff`` by tokens;
* no patch embedding in float32, no copy of the first block's input, no CLIP image tokens.

Host differences (:class:`~.phases.HostTraits`): ``rope_in_float32`` (the table's float32
build), ``keeps_block_norm`` (0.33's block keeps ``norm_x`` until it returns),
``keeps_first_input`` (0.33's ``_forward`` keeps the patch embedding's output through the
block loop), ``ffn_chunked`` and ``ffn_holds_hidden`` (0.33's ``FeedForward`` calls
``linear_input_act(net[2], net[0].proj(x))``, its projection alive through the activation and
the down projection, per token slice).
"""
from __future__ import annotations

from . import phases as P
from .phases import ACT, Half, HostTraits


def rope_table_bytes(tokens: int, dim: int) -> int:
    """One row's ``pe``: a 2x2 rotation per pair of channels, bf16."""
    return tokens * (dim // 2) * 4 * ACT


def rope_build_bytes(tokens: int, dim: int, host: HostTraits) -> int:
    """One row's transient peak while the table is built, the finished table included."""
    freqs = tokens * 3 * (dim // 6) * 4                    # generate_freqs / freqs: [tokens, 3 x dim // 6] float32
    half = tokens * (dim // 2) * ACT                        # cos, sin (and -sin) at half width, bf16
    if host.rope_in_float32:
        # precompute_freqs_cis: cos and sin repeat_interleave'd to float32, padded to the full width
        # by torch.cat (dim % 6 != 0); at the pad of sin: freqs, cos padded, sin and sin padded
        rep = 2 * freqs
        padded = tokens * dim * 4 if dim % 6 else rep
        at_pad = freqs + padded + rep + (padded if dim % 6 else 0)
        # then the bf16 halves, -sin, the two inner stacks and the table (the float32 ones dropped)
        at_stack = freqs + 3 * half + 2 * 2 * half + rope_table_bytes(tokens, dim)
        return max(at_pad, at_stack)
    # freqs_cis_matrix: cos and sin cast to bf16, -sin, then one stack of the four
    return freqs + 3 * half + rope_table_bytes(tokens, dim)


def embedding(total: int, tokens: int, dim: int, U: int, host: HostTraits) -> int:
    """``patchify_proj``'s output (the hidden states) and the RoPE table's build, less the finished
    table (counted with the call's constants)."""
    return total * (U + rope_build_bytes(tokens, dim, host) - rope_table_bytes(tokens, dim))


def self_attention(h: Half, U: int, hidden: int, window_extra: int, scaled: bool, host: HostTraits) -> int:
    u = h.rows * U
    # x (every row), the twins' hand-off waiting for the window rows' attn2, attn1's input (attn1_input / norm_x)
    base = hidden + (h.handoff if h.takes_handoff else 0) + u
    # q, k, v (normed and rotated: 0.3.x one at a time, 0.33's fused apply_rope both at once, its
    # inputs beside: at most q, k, v and two more, as at to_out below)
    qkv = base + 3 * u
    kernel = 0
    if h.window:                                                     # window_rows: its output, the flex copies
        kernel = max(kernel, h.window * U + window_extra)
    if h.full:                                                       # full_rows: q scaled out of place, the host's output
        kernel = max(kernel, (h.window * U) + (h.full * U if scaled else 0) + h.full * U)
    if h.window and h.full:                                          # self_attention_rows: torch.cat of both
        kernel = max(kernel, h.window * U + h.full * U + u)
    to_out = qkv + u + u                                             # the attention output, to_out's
    return max(qkv + kernel, to_out)


def cross_attention(h: Half, U: int, hidden: int, host: HostTraits) -> int:
    u = h.rows * U
    base = hidden + (u if host.keeps_block_norm else 0)              # x; 0.33: norm_x
    # to_q's output and q_norm's; then q_norm's, the attention output (the host's, or the rows
    # assembled from the twins' in cross_rows), to_out's
    peak = base + 3 * u
    if h.takes_handoff:                                              # the hand-off, until placed in the rows
        peak = max(peak, base + h.handoff + 2 * u)
    return peak


def ffn(h: Half, U: int, hidden: int, tokens: int, dim: int, ffn_dim: int, chunked: bool,
        host: HostTraits) -> int:
    u = h.rows * U
    base = hidden + (u if host.keeps_block_norm else 0) + u          # x, (norm_x), y: the FFN's input
    if h.gives_handoff:
        base += h.full * U                                           # the twins' hand-off, kept for the window half
    step = P.ffn_slice_tokens(ffn_dim)

    def call(slice_tokens: int) -> int:                              # one call of net: its hidden states, output
        inner = h.rows * slice_tokens
        return P._ffn_call(inner * ffn_dim * ACT, inner * dim * ACT, host)

    if chunked and host.ffn_chunked and tokens > step:
        # ChunkedFFN.forward: the first slice, then its output beside the whole output (torch.empty),
        # then each later slice (the second is the largest of them) beside the whole output
        second = min(step, tokens - step)
        return base + max(call(step), u + h.rows * step * dim * ACT, u + call(second))
    return base + P._ffn_call(h.rows * tokens * ffn_dim * ACT, u, host)


def activations(arch, tokens: int, rows: int, twins: int, execution: str, windowed: bool, freeswim: bool,
                latent: int, window: tuple[int, int], host: HostTraits) -> tuple[dict, int]:
    """(phase -> activation bytes at its peak, bytes alive through the call) of one LTX call of
    ``rows`` rows and ``twins`` full-attention twins; ``window``: the window kernel's transient bytes
    and what it keeps (:func:`.phases.window_memory`), zeros where the call is not windowed."""
    window_extra, block_tables = window
    n, dim = tokens, arch.dim
    U = n * dim * ACT
    total = rows + twins
    sequential = bool(twins) and execution == "sequential"
    context = total * arch.text_len * dim * ACT + rows * arch.text_len * arch.text_dim * ACT
    constant = (total * rope_table_bytes(n, dim)                           # pe
                + (rows + total + (total if twins else 0)) * latent        # latent, patchified, with twins
                + context + block_tables)
    # x; where the block replacement joins its halves into a new tensor (sequential) and the host's
    # _forward keeps the patch embedding's output, every block after the first holds that one too
    hidden = total * U * (2 if sequential and host.keeps_first_input else 1)
    sa = ca = ff = 0
    for half in P.halves(rows, twins, U, sequential, windowed):
        sa = max(sa, self_attention(half, U, hidden, window_extra, scaled=windowed, host=host))
        ca = max(ca, cross_attention(half, U, hidden, host))
        ff = max(ff, ffn(half, U, hidden, n, dim, arch.ffn_dim, chunked=freeswim, host=host))
    act = {"embedding": embedding(total, n, dim, U, host), "self_attn": sa, "cross_attn": ca, "ffn": ff}
    return act, constant
