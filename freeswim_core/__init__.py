"""FreeSwim core: host-agnostic torch code for training-free high-resolution video DiTs.

Never imports ComfyUI. The stable entry point for other hosts and checks is
:func:`window_attention`.
"""
from .attention import BACKENDS, backend_for, window_attention
from .geometry import (TokenGrid, Window, attention_cost, axis_windows, keys_per_query,
                       native_window, native_window_tokens, token_grid_from_latent)
from .log import logger
from .scale import SCALE_MODES, attention_scale

__all__ = [
    "BACKENDS", "SCALE_MODES", "TokenGrid", "backend_for", "Window", "attention_cost", "attention_scale",
    "axis_windows", "keys_per_query", "logger", "native_window", "native_window_tokens",
    "token_grid_from_latent", "window_attention",
]
