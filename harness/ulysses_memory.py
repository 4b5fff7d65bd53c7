"""One rank's device memory in a diffusers Wan call under Ulysses, traced on a CPU.

diffusers' real ``WanTransformer3DModel`` at a Wan variant's sizes is built inside
``FakeTensorMode`` on a fake ``cuda`` device, with FreeSwim installed and diffusers'
context parallelism enabled over torch's *fake* process group (its collectives move no
data; the shapes are those of a rank of ``degree``). One conditional call runs while
:class:`harness.live_bytes.LiveBytes` counts the bytes live on the device. Nothing is
allocated: 14B at 4K traces in seconds per block.

As in ``harness/memory_trace.py``, kernels a GPU runs without a scores matrix allocate
their outputs only: SDPA (diffusers' native attention: the full-attention twins, the
text cross-attention) and the compiled window kernel (through the pack's probes). Two
blocks are traced; the whole model's weights are counted from its architecture.
"""
from __future__ import annotations

import unittest.mock
from dataclasses import asdict, dataclass

import torch

from freeswim_core.families import variant

MODES = ("plain", "window", "dual")


@dataclass
class RankTrace:
    model: str
    width: int
    height: int
    frames: int
    mode: str
    degree: int
    tokens: int                    # the call's tokens (all ranks)
    weights_bytes: int             # the whole model's weights on each rank (Ulysses keeps every weight)
    activation_peak_bytes: int     # traced: live bytes beyond the weights, at the peak
    peak_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def _sdpa_output(query, key, value, *args, **kwargs):
    """SDPA as a flash kernel allocates: its output only."""
    return torch.empty(query.shape[:-1] + (value.shape[-1],), dtype=query.dtype, device=query.device)


def _config(arch, blocks: int) -> dict:
    return dict(patch_size=tuple(arch.patch), num_attention_heads=arch.heads, attention_head_dim=arch.head_dim,
                in_channels=arch.in_dim, out_channels=arch.out_dim, text_dim=arch.text_dim, freq_dim=arch.freq_dim,
                ffn_dim=arch.ffn_dim, num_layers=blocks, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=1e-6, rope_max_seq_len=1024)


def _fake_group(degree: int):
    """torch's fake process group of ``degree`` ranks (this process rank 0) and diffusers' config on it."""
    import torch.distributed as dist
    from diffusers import ContextParallelConfig
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from freeswim_core.diffusers.ulysses import parallel_config
    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=degree)
    return parallel_config(ContextParallelConfig(ulysses_degree=degree), 0, degree, torch.device("cuda"))


def trace_rank(model: str, width: int, height: int, frames: int = 81, mode: str = "window", degree: int = 1,
               blocks: int = 2) -> RankTrace:
    """Trace one conditional call of the diffusers ``WanTransformer3DModel`` of ``model`` on one rank
    of ``degree`` (1: no parallelism), with FreeSwim's ``mode``."""
    import diffusers
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

    from freeswim_core import probes
    from freeswim_core.attention import flex
    from freeswim_core.diffusers import DualOptions, FreeSwim, WindowOptions
    from freeswim_core.diffusers.ulysses import apply_parallel_config

    from .live_bytes import LiveBytes
    from .memory_trace import _block_tables, _eager_dropout, _stub_flex

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    arch = variant(model).arch
    if arch.family != "wan":
        raise ValueError(f"{model}: the diffusers adapter runs Wan models")
    config = _fake_group(degree) if degree > 1 else None     # (made outside fake mode: it reads values)
    probe = probes.Probe(window_kernel=lambda device: _stub_flex,
                         block_tables=_block_tables(flex, unset_fake_temporarily), device_memory_unknown=True)
    try:
        with (FakeTensorMode(allow_non_fake_inputs=True), probes.probing(probe),
              unittest.mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", _sdpa_output),
              unittest.mock.patch.object(torch.nn.functional, "dropout", _eager_dropout)):
            torch.set_default_device("cuda")
            torch.set_default_dtype(torch.bfloat16)
            try:
                transformer = diffusers.WanTransformer3DModel(**_config(arch, blocks)).eval()
            finally:
                torch.set_default_device(None)
                torch.set_default_dtype(torch.float32)
            if config is not None:
                apply_parallel_config(transformer, config)
            fs = None
            if mode != "plain":
                fs = FreeSwim(transformer, window=WindowOptions(),
                              dual=DualOptions(execution="batched") if mode == "dual" else None, cache=None,
                              vae_scale_factor=arch.vae)
            x = torch.zeros(1, *arch.latent_shape(width, height, frames), device="cuda", dtype=torch.bfloat16)
            context = torch.zeros(1, arch.text_len, arch.text_dim, device="cuda", dtype=torch.bfloat16)
            timestep = torch.full((1,), 500.0, device="cuda")
            counter = LiveBytes()
            with counter, torch.inference_mode(), transformer.cache_context("cond", step_index=0, sigma=0.5):
                transformer(x, timestep, context, return_dict=False)
            # the counter saw the inputs created before it as no allocation: they are live all along
            inputs = sum(t.numel() * t.element_size() for t in (x, context, timestep))
            if fs is not None:
                fs.remove()
    finally:
        if degree > 1 and dist.is_initialized():
            dist.destroy_process_group()
    weights = arch.weights_bytes("bf16")
    activations = counter.peak + inputs
    grid = arch.token_grid(width, height, frames)
    return RankTrace(model, width, height, frames, mode, degree, grid[0] * grid[1] * grid[2], weights,
                     activations, weights + activations)
