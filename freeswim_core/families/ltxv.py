"""The LTX-Video family's facts: its architecture arithmetic and its released checkpoints.

LTX-Video (Lightricks, LTXV 0.9.x) is a DiT over a 128-channel latent of a VAE that
compresses 32x32 pixels and 8 frames into one latent pixel, patch size 1: one token per
latent pixel, frame-major. A block is self-attention (RoPE over all heads, q/k RMS-normed
across the full width), cross-attention to the T5 text (4096 wide, projected to the
model's width) and a 4x GELU feed-forward, modulated by six AdaLN rows. The parameter
count below follows the layers of ComfyUI's ``comfy.ldm.lightricks.model.LTXVModel``.

Native sizes: the 2B models default to 768x512 (ComfyUI's EmptyLTXVLatentVideo and
LTX-Video's own 2B defaults), the 13B models to 1216x704 (LTX-Video's 13B pipelines).
"""
from __future__ import annotations

from dataclasses import dataclass

from .arithmetic import DiTArithmetic


@dataclass(frozen=True)
class LTXVArchitecture(DiTArithmetic):
    """An LTX-Video DiT's sizes (the memory planner's interface, as :class:`~.wan.WanArchitecture`)."""

    dim: int
    blocks: int
    head_dim: int = 64
    ffn_mult: int = 4
    in_dim: int = 128
    out_dim: int = 128
    patch: tuple = (1, 1, 1)
    vae: int = 32
    vae_temporal: int = 8
    text_dim: int = 4096
    text_len: int = 128
    freq_dim: int = 256
    i2v: bool = False                 # image conditioning is by latent frames, never a CLIP cross-attention
    native: tuple = (768, 512)
    label: str = ""
    family: str = "ltxv"

    @property
    def ffn_dim(self) -> int:
        return self.ffn_mult * self.dim

    def block_parameters(self) -> int:
        d, f = self.dim, self.ffn_dim
        attention = 4 * (d * d + d) + 2 * d                       # q, k, v, out and the q/k RMSNorms
        ffn = d * f + f + f * d + d
        return 2 * attention + ffn + 6 * d                        # self, cross, FFN, AdaLN table

    def other_parameters(self) -> tuple[int, int]:
        """(parameters in the weight dtype, float32 parameters: none)."""
        d = self.dim
        patchify = self.in_dim * d + d
        time = self.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d
        caption = self.text_dim * d + d + d * d + d
        head = 2 * d + d * self.out_dim + self.out_dim
        return patchify + time + caption + head, 0


def _variants():
    from .variant import Variant
    return (
        Variant("ltxv-2b", "ltxv-2b", "ltxv", "LTX-Video 2B",
                LTXVArchitecture(dim=2048, blocks=28, head_dim=64, native=(768, 512), label="LTX-Video 2B"),
                files=("ltx", "2b")),
        Variant("ltxv-13b", "ltxv-13b", "ltxv", "LTX-Video 13B",
                LTXVArchitecture(dim=4096, blocks=48, head_dim=128, native=(1216, 704), label="LTX-Video 13B"),
                files=("ltx", "13b")),
    )


VARIANTS = _variants()
FALLBACK_NATIVE = {32: ((768, 512), "an unrecognised LTX-Video size; assuming the 2B native 768x512")}
