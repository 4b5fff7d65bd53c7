"""What every family's architecture computes the same way from its sizes.

A family's architecture (:class:`~.wan.WanArchitecture`, :class:`~.ltxv.LTXVArchitecture`) is a
frozen dataclass of sizes with its own parameter count (``block_parameters``,
``other_parameters``); the arithmetic on top of them, which the memory planner, the plan route
and the benchmarks read, is written once here.
"""
from __future__ import annotations

from dataclasses import asdict

from ..units import DTYPE_BYTES


class DiTArithmetic:
    """Needs ``dim``, ``head_dim``, ``blocks``, ``in_dim``, ``patch``, ``vae``, ``vae_temporal``,
    ``native``, ``family`` (the registry's name, which picks the memory planner's phase model) and
    the two parameter counts of the family's dataclass."""

    @property
    def heads(self) -> int:
        return self.dim // self.head_dim

    def weights_bytes(self, weight_dtype: str = "bf16") -> int:
        """Bytes of the weights on the device, every block resident (parameters ComfyUI keeps in
        float32, as Wan's patch embedding, at 4 bytes)."""
        wb = DTYPE_BYTES[weight_dtype]
        other, fp32 = self.other_parameters()
        return (self.blocks * self.block_parameters() + other) * wb + fp32 * 4

    def latent_shape(self, width: int, height: int, frames: int) -> tuple[int, int, int, int]:
        """(channels, frames, rows, columns) of the latent for a video of this size."""
        return (self.in_dim, (frames - 1) // self.vae_temporal + 1, height // self.vae, width // self.vae)

    def token_grid(self, width: int, height: int, frames: int) -> tuple[int, int, int]:
        _, t, h, w = self.latent_shape(width, height, frames)
        pt, ph, pw = self.patch
        return (t + pt - 1) // pt, (h + ph - 1) // ph, (w + pw - 1) // pw

    def native_window(self) -> tuple[int, int]:
        """FreeSwim's window in tokens (rows, columns) for the native size (the reference rule)."""
        from ..geometry import native_window
        win = native_window(self.native[0], self.native[1], self.vae * self.patch[1])
        return win.h, win.w

    def as_dict(self) -> dict:
        return asdict(self)
