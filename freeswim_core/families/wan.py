"""The Wan family's facts: its architecture arithmetic and its released checkpoints.

Pure arithmetic on the architecture (no model, no torch): the parameter count follows the
layers of a Wan DiT (ComfyUI and diffusers build the same ones), so the weights of a
checkpoint that is not on this machine are known exactly. :data:`VARIANTS` is the one
table of Wan checkpoints in the repository (sizes, native resolution, what the panel
recognises in a file name); the registry (:mod:`freeswim_core.families`) serves it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .arithmetic import DiTArithmetic


@dataclass(frozen=True)
class WanArchitecture(DiTArithmetic):
    """A Wan DiT's sizes. ``vae`` is the VAE's spatial factor (8 for Wan 2.1, 16 for Wan2.2 TI2V);
    the VAE's temporal factor is 4 for both."""

    dim: int
    ffn_dim: int
    blocks: int
    in_dim: int = 16
    out_dim: int = 16
    head_dim: int = 128
    patch: tuple = (1, 2, 2)
    vae: int = 8
    vae_temporal: int = 4
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    i2v: bool = False
    native: tuple = (832, 480)        # training size in pixels (width, height): the window's source
    label: str = ""
    family: str = "wan"

    def block_parameters(self) -> int:
        d, f = self.dim, self.ffn_dim
        attention = 4 * (d * d + d) + 2 * d                       # q, k, v, o and the q/k RMSNorms
        cross = attention + (2 * (d * d + d) + d if self.i2v else 0)   # I2V: image k, v and norm
        ffn = d * f + f + f * d + d
        return attention + cross + ffn + 2 * d + 6 * d            # norm3 (affine), modulation

    def other_parameters(self) -> tuple[int, int]:
        """(parameters in the weight dtype, float32 parameters: the patch embedding)."""
        d = self.dim
        patch = self.patch[0] * self.patch[1] * self.patch[2]
        text = self.text_dim * d + d + d * d + d
        time = self.freq_dim * d + d + d * d + d
        projection = d * 6 * d + 6 * d
        head = 2 * d + d * self.out_dim * patch + self.out_dim * patch
        image = (1280 * 2 + 1280 * 1280 + 1280 + 1280 * d + d + 2 * d) if self.i2v else 0
        return text + time + projection + head + image, self.in_dim * d * patch + d


def _variants():
    from .variant import Variant
    w14 = WanArchitecture(dim=5120, ffn_dim=13824, blocks=40, native=(1280, 720), label="Wan 14B")
    # In file-name order: the first variant whose pieces a file name holds is the panel's guess.
    return (
        Variant("wan2.1-1.3b", "1.3b", "wan", "Wan2.1 T2V 1.3B",
                WanArchitecture(dim=1536, ffn_dim=8960, blocks=30, label="Wan2.1 T2V 1.3B"), files=("1.3b",)),
        Variant("wan2.2-5b", "5b", "wan", "Wan2.2 TI2V 5B",
                WanArchitecture(dim=3072, ffn_dim=14336, blocks=30, in_dim=48, out_dim=48, vae=16,
                                native=(1280, 704), label="Wan2.2 TI2V 5B"), files=("5b",), not_files=("14b",)),
        Variant("wan2.1-14b-i2v", "14b-i2v", "wan", "Wan2.1 I2V 14B 720p",
                WanArchitecture(dim=5120, ffn_dim=13824, blocks=40, in_dim=36, i2v=True, native=(1280, 720),
                                label="Wan2.1 I2V 14B 720p"), files=("14b", "i2v")),
        Variant("wan2.2-a14b", "a14b", "wan", "Wan2.2 A14B", w14, files=("14b", "wan2.2"), experts=2),
        Variant("wan2.1-14b", "14b", "wan", "Wan 14B", w14, files=("14b",)),
    )


VARIANTS = _variants()
# A Wan whose width no variant has: the native size of the VAE's smallest released model.
FALLBACK_NATIVE = {8: ((832, 480), "an unrecognised Wan size; assuming the 1.3B native 832x480"),
                   16: ((1280, 704), "an unrecognised Wan2.2 size; assuming the TI2V-5B native 1280x704")}
