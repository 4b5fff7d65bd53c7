"""Wan's patch embedding with its output laid out token-major: no copy of the hidden states at
the first block.

ComfyUI's ``WanModel.forward_orig`` embeds the latent with a strided Conv3d
(``[B, dim, T, H, W]``, channels first) and views it as tokens with
``flatten(2).transpose(1, 2)``: a ``[B, L, dim]`` view whose channels are not
innermost. The first block then makes it contiguous (``x.contiguous()``), a whole
activation of every row, while the view's own memory stays alive in the host's
loop: at 4K with the dual path that copy is the peak's largest removable term.

:class:`TokenMajorPatchEmbedding` replaces the embedding's ``forward`` (an object
patch on the module's ``forward`` attribute: the module, its weights, LoRA patches
and weight casting stay the host's) with the same convolution run over slices of
latent frames, each slice written into one output tensor whose memory is laid out
``[B, T, H, W, dim]``. The host's ``.to(dtype)`` keeps that layout and its
``flatten``/``transpose`` then give a contiguous ``[B, L, dim]``. The values are
the convolution's own: kernel == stride and no padding, so output frames depend
on disjoint input frames. Any other convolution runs unchanged.
"""
from __future__ import annotations

import torch

# Bytes one slice's convolution output may take before it is copied into place.
SLICE_BUDGET = 256 << 20
KEY = "diffusion_model.patch_embedding.forward"


class TokenMajorPatchEmbedding:
    """Callable set as the embedding module's ``forward``."""

    def __init__(self, conv: torch.nn.Module, previous=None):
        self.conv = conv
        self.previous = previous      # a ``forward`` another node set on the module before FreeSwim

    def _forward(self, x):
        return self.previous(x) if self.previous is not None else type(self.conv).forward(self.conv, x)

    def _slices_apply(self, x) -> bool:
        c = self.conv
        return (x.dim() == 5 and tuple(c.kernel_size) == tuple(c.stride) and not any(c.padding)
                and all(d == 1 for d in c.dilation) and c.padding_mode == "zeros")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self._slices_apply(x):
            return self._forward(x)
        kt = self.conv.kernel_size[0]
        frames = x.shape[2] // kt
        first = self._forward(x[:, :, :kt])
        B, C, _, H, W = first.shape
        per_frame = first.numel() * first.element_size()
        step = max(1, SLICE_BUDGET // max(1, per_frame))
        out = torch.empty((B, frames, H, W, C), dtype=first.dtype, device=first.device).permute(0, 4, 1, 2, 3)
        out[:, :, :1] = first
        del first
        for f0 in range(1, frames, step):
            f1 = min(frames, f0 + step)
            out[:, :, f0:f1] = self._forward(x[:, :, f0 * kt:f1 * kt])
        return out


def install_token_major_embedding(model, dm) -> None:
    """Object-patch the patch embedding's ``forward`` of a (cloned) ModelPatcher; idempotent. The
    family installs it where the model's own loop suits this layout (Wan: ``WanModel.forward_orig``)."""
    if not isinstance(getattr(dm, "patch_embedding", None), torch.nn.Conv3d):
        return
    current = model.object_patches.get(KEY)
    if isinstance(current, TokenMajorPatchEmbedding):
        return
    model.add_object_patch(KEY, TokenMajorPatchEmbedding(dm.patch_embedding, current))
