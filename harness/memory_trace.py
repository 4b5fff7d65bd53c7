"""GPU memory of one model call at real sizes (Wan, LTX-Video), traced on a CPU without allocating anything.

ComfyUI's real model (``WanModel``, ``LTXVModel``) is built inside ``FakeTensorMode`` on a fake ``cuda``
device, detected and wrapped by ComfyUI as it would load a checkpoint, patched by
the FreeSwim nodes, and called once the way the sampler calls it, while
``torch.distributed._tools.mem_tracker.MemTracker`` counts the live bytes on the
device. Nothing is allocated: 14B at 4K traces in seconds.

Kernels that never materialise a scores matrix on a GPU are counted as allocating
their outputs only: the host's attention (flash/SDPA on a GPU) through an attention
override installed before the FreeSwim nodes (FreeSwim keeps and calls it for
full attention and cross-attention), and the compiled FlexAttention kernel of the
window backend by a stand-in returning its output. Everything around those kernels
(the flex backend's reordered copies and padding, RoPE, norms, projections, the
FFN) runs as the real code does. With ``backend="natten"`` the window runs through
NATTEN's own Hopper FNA forward (its token permute of q, k and v into padded tiles,
its un-permute of the output), only the compiled kernel (absent from a build without
CUDA) replaced by what NATTEN registers as that kernel's fake: its output and
log-sum-exp.

Blocks are identical, so ``blocks`` of them are traced (two by default) and the
weights of the full model are counted from its architecture: the peak of the call
is the weights of every block plus the traced activation peak.
"""
from __future__ import annotations

import unittest.mock
from dataclasses import asdict, dataclass, field

import torch

from freeswim_core.families import variant

MODES = ("plain", "window", "dual", "cache")
BACKENDS = ("flex", "natten")
WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}
GB = 1e9


@dataclass
class Trace:
    model: str
    width: int
    height: int
    frames: int
    mode: str
    execution: str
    weight_dtype: str
    tokens: int
    rows: int                      # rows in the traced call (1, or 2 with a full-attention twin)
    weights_bytes: int             # the whole model's weights in the device
    activation_peak_bytes: int     # traced: live bytes beyond the weights, at the peak
    peak_bytes: int                # weights + activations
    phases: dict = field(default_factory=dict)   # module kind -> device bytes at its peak (weights included)
    host_traits: dict = field(default_factory=dict)   # what the planner needs to know of this host
    backend: str = "flex"          # the window backend traced

    def as_dict(self) -> dict:
        return asdict(self)


def _stub_attention(func, q, k, v, heads=None, mask=None, **kwargs):
    """The host's attention as a flash kernel allocates: its output only (LTX's text mask, positional
    on ComfyUI 0.3.x, is an additive bias the kernel reads)."""
    return torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)


def _stub_flex(q, k, v, *args, **kwargs):
    return torch.empty_like(q)


def _natten_hopper(q, k, v, kernel_size, scale):
    """NATTEN's Hopper FNA forward (``natten.backends.hopper_fna``) on its default tiles, its compiled
    kernel stood in by the allocations of NATTEN's registered fake of it."""
    import inspect

    from natten.backends import hopper_fna
    from natten.backends.configs.cutlass_hopper import HOPPER_BACKWARD_CONFIGS, HOPPER_FORWARD_CONFIGS

    def kernel(query, key, value, *args):
        return (torch.empty(query.shape[:-1] + (value.shape[-1],), dtype=query.dtype, device=query.device),
                torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device))
    na = q.dim() - 3
    if q.shape[-1] not in HOPPER_FORWARD_CONFIGS[na][16]:
        raise ValueError(f"NATTEN's Hopper FNA has no kernel for head dim {q.shape[-1]} (it has "
                         f"{', '.join(map(str, HOPPER_FORWARD_CONFIGS[na][16]))})")
    fn = hopper_fna.CutlassHopperFNAAutogradFns[na]
    forward = inspect.unwrap(fn.forward)
    ops = forward.__closure__[forward.__code__.co_freevars.index("FORWARD_OPS")].cell_contents
    configs = (HOPPER_FORWARD_CONFIGS[na][16][q.shape[-1]][0], HOPPER_BACKWARD_CONFIGS[na][16][q.shape[-1]][0])
    with unittest.mock.patch.dict(ops, {na: kernel}):
        out, _ = fn.apply(q, k, v, kernel_size, (1,) * na, (1,) * na, (False,) * na,
                          scale or q.shape[-1] ** -0.5, *configs)
    return out


_dropout = torch.nn.functional.dropout


def _eager_dropout(input, p=0.5, training=True, inplace=False):
    """``F.dropout`` as eager torch runs it outside training: the input itself. Under FakeTensorMode
    ``aten.dropout`` allocates a new output, which a GPU never does for ComfyUI's models (built in
    ``eval()`` mode): LTX's ``to_out`` and ``FeedForward.net`` end in a Dropout."""
    if not training or p == 0:
        return input
    return _dropout(input, p, training, inplace)


def _latent(arch, width: int, height: int, frames: int, device) -> torch.Tensor:
    """The latent of one row as the family's empty-latent node makes it (its architecture's shape)."""
    return torch.zeros(1, *arch.latent_shape(width, height, frames), dtype=torch.bfloat16, device=device)


class _Wan:
    """What the trace needs of ComfyUI's ``WanModel``: its state dict, block list, call and module names."""

    blocks_attr = "blocks"
    phase_modules = {"self_attn": "self_attn", "cross_attn": "cross_attn", "ffn": "ffn"}
    # the phases of the largest traced block: the first copies its input where the patch embedding is not
    # token-major; the window's block tables, built in the first block's self-attention, are alive in the next
    phase_blocks = None

    @staticmethod
    def state_dict(arch, blocks: int) -> dict:
        from harness.tiny_wan import tiny_wan_state_dict
        return tiny_wan_state_dict(dim=arch.dim, layers=blocks, ffn_dim=arch.ffn_dim, in_dim=arch.in_dim,
                                   out_dim=arch.out_dim, i2v=arch.i2v, device="meta")

    @staticmethod
    def inputs(arch, dev) -> tuple[tuple, dict]:
        """The call's arguments after the latent: timestep, T5 text (512 tokens), I2V's CLIP image."""
        t = torch.full((1,), 900.0, device=dev)
        ctx = torch.zeros(1, 512, 4096, dtype=torch.bfloat16, device=dev)
        extra = {"clip_fea": torch.zeros(1, 257, 1280, dtype=torch.bfloat16, device=dev)} if arch.i2v else {}
        return (t, ctx), extra

    @staticmethod
    def host_traits(host, dm) -> dict:
        return host.pack_module("nodes.families.wan").host_traits(dm)


class _LTXV:
    """ComfyUI's ``LTXVModel``: T5 text of ``text_len`` tokens with its (all ones) mask, sigma timesteps."""

    blocks_attr = "transformer_blocks"
    phase_modules = {"self_attn": "attn1", "cross_attn": "attn2", "ffn": "ff"}
    # the phases of the largest traced block: ComfyUI 0.33's LTXVModel._forward keeps the patch
    # embedding's output through its block loop, so where the blocks return new hidden states (the
    # dual path run sequential) every block after the first holds one more
    phase_blocks = None

    @staticmethod
    def state_dict(arch, blocks: int) -> dict:
        from harness.tiny_ltxv import HEADS, tiny_ltxv_state_dict
        if arch.dim != HEADS * arch.head_dim:
            raise ValueError(f"ComfyUI reads LTXV checkpoints as {HEADS} heads: dim {arch.dim} with head width "
                             f"{arch.head_dim} cannot be built")
        return tiny_ltxv_state_dict(dim=arch.dim, layers=blocks, device="meta")

    @staticmethod
    def inputs(arch, dev) -> tuple[tuple, dict]:
        """The call's arguments after the latent: sigma, T5 text and its mask (1: keep; the forward
        requires one), the frame rate."""
        t = torch.full((1,), 0.9, device=dev)
        ctx = torch.zeros(1, arch.text_len, arch.text_dim, dtype=torch.bfloat16, device=dev)
        mask = torch.ones(1, arch.text_len, dtype=torch.int64, device=dev)
        return (t, ctx, mask), {"frame_rate": 25}

    @staticmethod
    def host_traits(host, dm) -> dict:
        return dict(host.pack_module("nodes.families.ltxv").LTXV_FAMILY.host_level_traits())


FAMILIES = {"wan": _Wan, "ltxv": _LTXV}


def _block_params(dm, blocks_attr: str) -> tuple[int, int]:
    """(bytes of one block's parameters, bytes of everything else)."""
    def size(m):
        return sum(p.numel() * p.element_size() for p in m.parameters())
    blocks = getattr(dm, blocks_attr)
    block = size(blocks[0])
    return block, size(dm) - block * len(blocks)


def trace(model: str, width: int, height: int, frames: int = 81, mode: str = "dual", *,
          execution: str = "sequential", weight_dtype: str = "bf16", blocks: int = 2,
          backend: str = "flex") -> Trace:
    """Trace one conditional model call (the sampler's largest: cond and uncond are separate
    calls at these sizes) of ``model`` at ``width`` x ``height`` x ``frames`` with the FreeSwim
    nodes of ``mode``, the window through ``backend`` (``flex``, or ``natten``: NATTEN's fused
    kernels, which need NATTEN installed). Needs the in-process host (``harness.inprocess.comfy_ready``)."""
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.utils
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
    from torch.distributed._tools.mem_tracker import MemTracker

    import harness.inprocess as host

    v = variant(model)
    arch, family = v.arch, FAMILIES[v.family]
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    sd = family.state_dict(arch, blocks)
    config = comfy.model_detection.model_config_from_unet(sd, "")
    weights_dtype = WEIGHT_DTYPES[weight_dtype]
    # as ComfyUI loads fp8 checkpoints: fp8 storage, layers cast to bf16 one at a time to compute
    config.set_inference_dtype(weights_dtype, None if weights_dtype == torch.bfloat16 else torch.bfloat16)
    dev = torch.device("cuda")
    flex = host.pack_module("freeswim_core.attention.flex")
    probes = host.pack_module("freeswim_core.probes")
    # stand-ins through the pack's probe interface: the fake device cannot run the compiled kernel,
    # and has no allocator to ask (the planner sees no free-memory limit)
    probe = probes.Probe(window_kernel=lambda device: _stub_flex,
                         block_tables=_block_tables(flex, unset_fake_temporarily),
                         natten_kernel=_natten_hopper if backend == "natten" else None, device_memory_unknown=True)
    with (FakeTensorMode(allow_non_fake_inputs=True), probes.probing(probe),
          unittest.mock.patch.object(torch.nn.functional, "dropout", _eager_dropout)):
        base = config.get_model({}, "", device=dev)
        dm = base.diffusion_model
        patcher = comfy.model_patcher.ModelPatcher(base, load_device=dev, offload_device=dev)
        patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = _stub_attention
        patcher = _apply_nodes(host, patcher, arch, mode, execution, backend)
        for key, obj in patcher.object_patches.items():
            comfy.utils.set_attr(base, key, obj)
        x = _latent(arch, width, height, frames, dev)
        with unset_fake_temporarily():
            to = host.sampling_options(patcher, cond_or_uncond=[0], uuids=["cond"], sigma=0.9,
                                       sample_sigmas=[0.9, 0.8, 0.0])
        # the schedule as host numbers: a fake tensor has no value to read
        to.update(sigmas=(0.9,), sample_sigmas=[0.9, 0.8, 0.0])
        run = to[host.pack_module("nodes.options").RUN_KEY]
        if mode == "cache":       # the features live in host RAM at these sizes (see the planner)
            store_mod = host.pack_module("freeswim_core.dual.store")
            run.store = store_mod.FeatureStore("cpu", "bf16", dev)
        args, kwargs = family.inputs(arch, dev)
        for p in dm.parameters():      # MemTracker hooks every parameter (ComfyUI builds them frozen)
            p.requires_grad_(True)
        tracker = MemTracker()
        tracker.track_external(dm)
        with tracker, torch.inference_mode():
            dm(x, *args, transformer_options=to, **kwargs)
        peak = tracker.get_tracker_snapshot("peak")
        phases = _phase_peaks(tracker, getattr(dm, family.blocks_attr)[:family.phase_blocks], family.phase_modules)
        block_bytes, other_bytes = _block_params(dm, family.blocks_attr)
        traits = family.host_traits(host, dm)
    device_peak = _device_total(peak)
    traced_weights = block_bytes * blocks + other_bytes
    weights = block_bytes * arch.blocks + other_bytes
    activations = device_peak - traced_weights
    grid = arch.token_grid(width, height, frames)
    tokens = grid[0] * grid[1] * grid[2]
    rows = 2 if mode in ("dual", "cache") else 1
    extra = weights - traced_weights
    return Trace(model, width, height, frames, mode, execution if rows == 2 else "-", weight_dtype, tokens, rows,
                 weights, activations, weights + activations, {k: v + extra for k, v in phases.items()}, traits,
                 backend)


def _block_tables(flex, unset_fake):
    """The window backend's block tables, computed on the host and allocated on the device with
    their real sizes (the flex kernel stand-in does not read them), once per geometry and kept
    alive through the call, as the backend's own cache keeps them."""
    built = {}

    def build(grid, window, inward, device, block_size=128):
        key = (grid, window, inward, str(device), block_size)
        if key in built:
            return built[key]
        with unset_fake():
            lists = flex.window_block_lists(grid, window, inward=inward, block_size=block_size, device="cpu")
            shapes = [(t.shape, t.dtype) for t in (lists.kv_num_blocks, lists.kv_indices,
                                                    lists.full_kv_num_blocks, lists.full_kv_indices)]
        tensors = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in shapes]
        built[key] = tensors
        return tensors
    return build


def _apply_nodes(host, patcher, arch, mode, execution, backend):
    if mode == "plain":
        return patcher
    native_w, native_h = arch.native
    (m,) = host.run_node("FreeSwimWindowAttentionPatch", model=patcher, native_size="custom",
                         custom_width=native_w, custom_height=native_h, inward=True,
                         attention_scale="reference", backend="auto" if backend == "flex" else backend)
    if mode == "window":
        return m
    (m,) = host.run_node("FreeSwimDualPathOverride", model=m, passes="cond", override_image_cross=False,
                         start_percent=0.0, end_percent=1.0, execution=execution)
    if mode == "dual":
        return m
    (m,) = host.run_node("FreeSwimCrossAttnCache", model=m, guide_interval=2, storage="cpu", precision="bf16")
    return m


def _device_total(snapshot) -> int:
    for dev, cats in snapshot.items():
        if torch.device(dev).type == "cuda":
            return int(cats["Total"])
    return 0


def _phase_peaks(tracker, blocks, modules: dict) -> dict:
    """Device bytes at the peak of each kind of module (self-attention, cross-attention, FFN: the
    planner's phase names; ``modules`` gives a block's attribute for each) over ``blocks``, as the
    tracker saw them."""
    out = {}
    for block in blocks:
        for kind, attr in modules.items():
            module = getattr(block, attr, None)
            stats = tracker.memory_tracking.get(module) if module is not None else None
            if stats is None:
                continue
            peaks = [s for key, snaps in stats.snapshots.items() if getattr(key, "name", "") == "PEAK_FW"
                     for s in snaps]
            if peaks:
                out[kind] = max(out.get(kind, 0), max(_device_total(p) for p in peaks))
    return out
