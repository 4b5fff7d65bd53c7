"""Softmax scale options for FreeSwim self-attention.

The reference multiplies the logits by ``sqrt(log(2N) / log(N) / head_dim)``
with N = 30 * 52 = 1560, the per-frame token count of Wan2.1's 480p native grid,
on both the window and the full branch. The form resembles entropy-aware length
scaling (Jin et al. 2023) with the key count doubled; the constant is kept as the
default for parity. ``native`` evaluates the same formula with the per-frame token
count of the model's actual native grid (3600 for a 720p model), and ``none``
keeps the ordinary ``1 / sqrt(head_dim)``.
"""
from __future__ import annotations

import math

REFERENCE_NATIVE_TOKENS = 30 * 52
SCALE_MODES = ("reference", "native", "none")


def entropy_scale(head_dim: int, native_tokens: int) -> float:
    if native_tokens < 2:
        raise ValueError(f"native token count must be at least 2, got {native_tokens}")
    return math.sqrt(math.log(2 * native_tokens) / math.log(native_tokens) / head_dim)


def attention_scale(mode: str, head_dim: int, native_tokens: int | None = None,
                    reference_tokens: int | None = None) -> float:
    """Softmax scale for ``mode`` in :data:`SCALE_MODES`.

    ``native_tokens`` is the per-frame token count of the chosen native grid; only the
    ``native`` mode reads it. ``reference_tokens`` is the count the ``reference`` mode uses:
    the official constant (Wan2.1 1.3B's 1560) unless a model family names its own (the per-frame
    token count of its released native size: LTX-Video's).
    """
    if mode == "none":
        return 1.0 / math.sqrt(head_dim)
    if mode == "reference":
        return entropy_scale(head_dim, reference_tokens or REFERENCE_NATIVE_TOKENS)
    if mode == "native":
        if native_tokens is None:
            raise ValueError("attention scale mode 'native' needs the native grid's token count")
        return entropy_scale(head_dim, native_tokens)
    raise ValueError(f"unknown attention scale mode {mode!r}; choose one of {', '.join(SCALE_MODES)}")
