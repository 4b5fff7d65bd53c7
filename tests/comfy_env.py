"""The real ComfyUI host, in process, with small random-weight models.

ComfyUI is the one built by ``make setup`` under ``.host/ComfyUI`` (0.3.75).
Its directory goes first on ``sys.path``: ComfyUI's top-level ``nodes`` module
must win over this repository's ``nodes/`` package, which ComfyUI itself always
loads under the pack's folder name.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("FREESWIM_COMFYUI", REPO / ".host" / "ComfyUI")).resolve()
PACK_LINK = COMFY_DIR / "custom_nodes" / "comfyui-freeswim"

_loaded = False


def comfy_ready():
    """Import ComfyUI in CPU mode and load this pack through ComfyUI's own loader."""
    global _loaded
    if _loaded:
        return
    if not COMFY_DIR.is_dir():
        raise RuntimeError(f"no ComfyUI host at {COMFY_DIR}; run `make setup`")
    sys.path.insert(0, str(COMFY_DIR))
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import nodes  # ComfyUI's
    if not PACK_LINK.exists():
        PACK_LINK.symlink_to(REPO)
    asyncio.run(nodes.load_custom_node(str(PACK_LINK)))
    if "FreeSwimWindowAttentionPatch" not in nodes.NODE_CLASS_MAPPINGS:
        raise RuntimeError("ComfyUI did not register the FreeSwim nodes")
    _loaded = True


def node_class(name: str):
    import nodes
    return nodes.NODE_CLASS_MAPPINGS[name]


def run_node(name: str, **inputs):
    """Execute a node the way the executor does for V3 nodes (class-level execute)."""
    cls = node_class(name)
    out = cls.execute(**inputs)
    return out.result if hasattr(out, "result") else out


def tiny_wan_state_dict(dim=256, layers=2, ffn_dim=512, in_dim=16, out_dim=16, text_dim=4096,
                        i2v=False, ref_conv_dim=None, vace_layers=None, seed=0) -> dict[str, torch.Tensor]:
    """Random weights in the original Wan key layout, as Wan files ComfyUI loads use.

    Built by instantiating ComfyUI's own WanModel (so every key and shape is
    right) and filling it from a seeded generator: matrices N(0, 1/fan_in),
    biases N(0, 0.02^2), modulations N(0, 0.1^2), norm weights 1.
    """
    import comfy.ops
    from comfy.ldm.wan.model import VaceWanModel, WanModel
    common = dict(dim=dim, ffn_dim=ffn_dim, num_layers=layers, num_heads=dim // 128, in_dim=in_dim,
                  out_dim=out_dim, text_dim=text_dim, operations=comfy.ops.disable_weight_init,
                  device="cpu", dtype=torch.float32)
    if vace_layers:
        model = VaceWanModel(vace_layers=vace_layers, vace_in_dim=96, **common)
    else:
        model = WanModel(model_type="i2v" if i2v else "t2v", in_dim_ref_conv=ref_conv_dim, **common)
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in sorted(model.state_dict().items()):
        if "norm" in name and name.endswith("weight") and p.dim() == 1:
            t = torch.ones_like(p)
        elif "modulation" in name or "emb_pos" in name:
            t = torch.randn(p.shape, generator=gen) * 0.1
        elif p.dim() >= 2:
            fan_in = p[0].numel()
            t = torch.randn(p.shape, generator=gen) / fan_in ** 0.5
        else:
            t = torch.randn(p.shape, generator=gen) * 0.02
        sd[name] = t.to(torch.float32)
    return sd


def load_tiny_wan(**kwargs):
    """A ComfyUI MODEL (ModelPatcher) detected and built by comfy.sd from a tiny state dict."""
    comfy_ready()
    import comfy.sd
    model = comfy.sd.load_diffusion_model_state_dict(tiny_wan_state_dict(**kwargs))
    if model is None:
        raise RuntimeError("ComfyUI did not recognise the tiny Wan state dict")
    return model


def text_conditioning(seed: int, batch=1, tokens=512, text_dim=4096):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, text_dim, generator=g), {}]]


def ksample(model, latent, *, seed=0, steps=3, cfg=5.0, sampler="euler", scheduler="simple",
            positive=None, negative=None, denoise=1.0):
    """ComfyUI's own KSampler path (nodes.common_ksampler)."""
    import nodes
    positive = positive if positive is not None else text_conditioning(1)
    negative = negative if negative is not None else text_conditioning(2)
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                   {"samples": latent}, denoise=denoise)
    return out["samples"]
