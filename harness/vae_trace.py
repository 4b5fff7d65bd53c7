"""GPU memory of the Wan VAE's decode and encode at real sizes, traced on a CPU (nothing allocated).

ComfyUI's real Wan 2.1 VAE class (``comfy.ldm.wan.vae.WanVAE``, 96 base channels as released)
is built under ``FakeTensorMode`` on a fake ``cuda`` device, and one decode (a latent of
``frames`` video frames) or encode (that many frames of pixels) of one spatial tile runs
while a dispatch-mode counter (``harness.live_bytes``) counts the live device bytes: the peak of one call of the VAE, its
weights, input and output included. ComfyUI's tiled paths call it once per tile and move
each tile's output to the CPU, so this is the peak of a tiled run with tiles of that size. The
VAE's attention (one head over each frame's positions) is counted as on a GPU: ComfyUI's
``pytorch_attention`` copies and a memory-efficient kernel's output.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

KINDS = ("decode", "encode")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
WAN21_VAE = dict(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)


@dataclass
class VaeTrace:
    kind: str
    width: int            # the tile's size in pixels
    height: int
    frames: int
    dtype: str
    weights_bytes: int
    peak_bytes: int       # weights included

    def as_dict(self) -> dict:
        return asdict(self)


def _gpu_vae_attention(q, k, v):
    """ComfyUI's VAE attention as it runs on a GPU (``pytorch_attention``): heads-first contiguous
    copies of q, k, v and a memory-efficient SDPA kernel, counted as allocating its output."""
    shape = q.shape
    B, C = shape[:2]
    q, k, v = (t.view(B, 1, C, -1).transpose(2, 3).contiguous() for t in (q, k, v))
    out = torch.empty_like(q)
    return out.transpose(2, 3).reshape(shape)


def trace_vae(kind: str, width: int, height: int, frames: int = 81, dtype: str = "bf16") -> VaeTrace:
    """Trace one call of the Wan 2.1 VAE on a ``width`` x ``height`` tile of ``frames`` frames.
    Needs the in-process host (``harness.inprocess.comfy_ready``)."""
    from comfy.ldm.wan.vae import WanVAE
    from torch._subclasses.fake_tensor import FakeTensorMode
    from harness.live_bytes import LiveBytes

    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
    dt = DTYPES[dtype]
    dev = torch.device("cuda")
    latent_t = (frames - 1) // 4 + 1
    with FakeTensorMode(allow_non_fake_inputs=True), contextlib.ExitStack():
        default = torch.get_default_dtype()
        torch.set_default_dtype(dt)
        try:
            with torch.device(dev):
                vae = WanVAE(**WAN21_VAE)
        finally:
            torch.set_default_dtype(default)
        for m in vae.modules():
            if hasattr(m, "optimized_attention"):
                m.optimized_attention = _gpu_vae_attention
        weights = sum(p.numel() * p.element_size() for p in vae.parameters())
        if kind == "decode":
            x = torch.zeros(1, 16, latent_t, height // 8, width // 8, dtype=dt, device=dev)
        else:
            x = torch.zeros(1, 3, frames, height, width, dtype=dt, device=dev)
        counter = LiveBytes("cuda")
        with torch.inference_mode(), counter:
            out = vae.decode(x) if kind == "decode" else vae.encode(x)
            del out
    total = weights + x.numel() * x.element_size() + counter.peak
    return VaeTrace(kind, width, height, frames, dtype, weights, total)
