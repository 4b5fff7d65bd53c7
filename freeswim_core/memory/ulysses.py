"""One rank's peak in the diffusers adapter's Wan call under Ulysses (N ranks): pure arithmetic.

Under ``ContextParallelConfig(ulysses_degree=N)`` every rank holds all weights and
1/N of the tokens through the blocks. What it holds, counted from diffusers' Wan code
(``WanTransformer3DModel.forward``, ``WanTransformerBlock.forward``) with FreeSwim's
processors, in units of ``u``, one row's hidden states of the rank's tokens (bf16):

* the block's peak is the larger of two moments, each about ``10 u`` or more per row:
  the FFN's float32 residual update (the block input, the cross-attention output still
  referenced, the FFN input and output, then ``hidden_states.float()``, the gated FFN
  output in float32 and their float32 sum: ``1 + 1 + 1 + 1 + 2 + 2 + 2``) and the FFN's
  hidden layer (those three tensors beside the projection and its GELU:
  ``3 + 2 * ffn_dim / dim``). FreeSwim's token exchange (q, k, v of the rank's tokens
  and every token of its heads, a send and a receive buffer) and window kernel stay
  within them;
* outside the blocks, whole-sequence tensors every rank holds: diffusers splits the
  patch embedding's output and the rotary tables as *views* of the whole ones, so each
  rank holds every token's embedded hidden states (one ``U`` per row, all tokens) until
  the first block returns, and the float32 cos and sin tables throughout; the window's
  block tables cover the whole grid. The first block's peak includes them all (every
  block has the same peak), so the call's peak does.

``harness/ulysses_memory.py`` traces the real model on a fake process group and
``benchmarks/memory.py --ulysses`` prints both.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from . import phases as P

ACT = P.ACT
RESIDUAL_UPDATE = 10          # rows of hidden states at the FFN's float32 residual update (see above)


@dataclass
class RankPlan:
    model: str
    width: int
    height: int
    frames: int
    mode: str                  # window | dual
    degree: int
    windowed: bool             # False: the grid fits the native window, FreeSwim changes nothing
    tokens: int
    rank_tokens: int           # the largest rank's share
    weights_bytes: int
    kept_bytes: int            # whole-sequence tensors every rank keeps (embedding, RoPE, block tables)
    block_bytes: int           # the block's peak on the rank's tokens
    peak_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def plan_rank(arch, width: int, height: int, frames: int = 81, degree: int = 1, mode: str = "window",
              weight_dtype: str = "bf16", window_backend: str = "flex") -> RankPlan:
    """The peak device bytes of one rank of ``degree`` in one conditional call of the diffusers
    adapter (``mode`` window: one row; dual: the row and its full-attention twin; ``window_backend``:
    flex keeps its block tables, NATTEN none, :func:`.phases.window_memory`)."""
    if mode not in ("window", "dual"):
        raise ValueError(f"mode {mode!r}: choose window or dual")
    if arch.heads % degree:
        raise ValueError(f"ulysses degree {degree} does not divide the {arch.heads} heads")
    t, h, w = arch.token_grid(width, height, frames)
    n = t * h * w
    window = arch.native_window()
    windowed = not (h <= window[0] and w <= window[1])     # else FreeSwim is a no-op: no twin, no tables
    rows = 2 if (mode == "dual" and windowed) else 1
    inputs = 1 + (rows if rows > 1 else 0)                 # the caller's row, and the expanded copy with its twin
    local = math.ceil(n / degree)
    u = local * arch.dim * ACT
    per_row = max(RESIDUAL_UPDATE, 3 + 2 * arch.ffn_dim / arch.dim)
    block = int(rows * per_row * u)
    c, lt, lh, lw = arch.latent_shape(width, height, frames)
    kept = (rows * n * arch.dim * ACT                       # the patch embedding's output, split as views
            + 2 * n * arch.head_dim * 4                     # RoPE cos and sin, float32, split as views
            + (P.window_memory(window_backend, arch.heads // degree, (t, h, w), arch.head_dim)[1]
               if windowed else 0)                          # the window's block tables
            + inputs * c * lt * lh * lw * ACT               # the caller's latent (and its rows with the twin)
            + inputs * arch.text_len * arch.text_dim * ACT  # the caller's text (and with the twin)
            + rows * arch.text_len * arch.dim * ACT)        # the text, embedded
    weights = arch.weights_bytes(weight_dtype)
    return RankPlan(arch.label or "custom", width, height, frames, mode, degree, windowed, n, local, weights, kept,
                    block, weights + kept + block)
