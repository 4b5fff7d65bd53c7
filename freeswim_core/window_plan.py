"""The window of one model call: from the chosen native size to the attention's geometry and scale."""
from __future__ import annotations

from dataclasses import dataclass

from .geometry import TokenGrid, Window, native_window
from .native import native_tokens_per_frame, resolve_native
from .scale import attention_scale
from .settings import WindowOptions


@dataclass(frozen=True)
class WindowPlan:
    """How the self-attention calls of one model call are computed."""

    grid: TokenGrid
    window: Window
    inward: bool
    scale: float
    backend: str
    native_px: tuple[int, int] = (0, 0)      # the native (width, height) the window comes from

    @property
    def is_full(self) -> bool:
        """The window covers the grid: window attention is full attention (a no-op)."""
        return self.window.covers(self.grid)


def plan_window(options: WindowOptions, grid: TokenGrid, head_dim: int, detected_px: tuple[int, int],
                px_per_token: int, reference_tokens: int | None = None) -> WindowPlan:
    """The window plan for ``grid``: the native size (``options.native_size``; ``auto`` is
    ``detected_px`` in the grid's orientation) as tokens (``px_per_token``: VAE factor x patch),
    and the softmax scale of ``options.scale_mode`` for that native size (``reference_tokens``: see
    :func:`~freeswim_core.scale.attention_scale`)."""
    native_px = resolve_native(options.native_size, detected_px, options.custom_width, options.custom_height,
                               grid_hw=(grid.h, grid.w))
    window = native_window(native_px[0], native_px[1], px_per_token)
    scale = attention_scale(options.scale_mode, head_dim, native_tokens_per_frame(native_px, px_per_token),
                            reference_tokens)
    return WindowPlan(grid, window, options.inward, scale, options.backend, native_px)
