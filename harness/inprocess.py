"""A real ComfyUI host, in process, with small random-weight models.

The hosts are the ones ``make setup`` built (``scripts/hosts.py``); the test
session runs each host's tests in its own process (``conftest.py``), since one
process can import only one ComfyUI. The host's directory goes first on
``sys.path``: ComfyUI's top-level ``nodes`` module must win over this
repository's ``nodes/`` package, which ComfyUI itself always loads under the
pack's folder name.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Optional

import torch

from harness.hosts import Host, newest

REPO = Path(__file__).resolve().parents[1]

loaded: Optional[Host] = None      # the host imported in this process


class HostConflict(RuntimeError):
    """A second ComfyUI was asked for in a process that already imported one."""


def comfy_ready(host: Optional[Host] = None) -> Host:
    """Import ``host`` (default: the newest built) in CPU mode and load this pack through
    ComfyUI's own loader. Returns the host in use."""
    global loaded
    host = host or loaded or newest()
    if loaded is not None:
        if loaded.path != host.path:
            raise HostConflict(
                f"this process already imported {loaded.id}; {host.id} needs its own process "
                "(`make test` runs one pytest worker per host)")
        return loaded
    if not host.path.is_dir():
        raise RuntimeError(f"no ComfyUI host at {host.path}; run `make setup`")
    if "comfy" in sys.modules:
        raise HostConflict(f"ComfyUI was imported before comfy_ready({host.id}) in this process")
    sys.path.insert(0, str(host.path))
    import comfy.cli_args
    # Tests run on the CPU; benchmarks on a CUDA machine set FREESWIM_COMFY_CPU=0.
    comfy.cli_args.args.cpu = os.environ.get("FREESWIM_COMFY_CPU", "1") == "1"
    import nodes  # ComfyUI's
    pack_link = host.path / "custom_nodes" / "comfyui-freeswim"
    if not pack_link.exists():
        pack_link.symlink_to(REPO)
    asyncio.run(nodes.load_custom_node(str(pack_link)))
    if "FreeSwimWindowAttentionPatch" not in nodes.NODE_CLASS_MAPPINGS:
        raise RuntimeError(f"{host.id} did not register the FreeSwim nodes")
    loaded = host
    return host


def node_class(name: str):
    import nodes
    return nodes.NODE_CLASS_MAPPINGS[name]


def run_node(name: str, **inputs):
    """Execute a node the way the executor does for V3 nodes (class-level execute, under
    ``torch.inference_mode()`` like every node the host's executor runs)."""
    cls = node_class(name)
    with torch.inference_mode():
        out = cls.execute(**inputs)
    return out.result if hasattr(out, "result") else out


def load_tiny_wan(**kwargs):
    """A ComfyUI MODEL (ModelPatcher) detected and built by comfy.sd from a tiny state dict."""
    comfy_ready()
    import comfy.sd
    from harness.tiny_wan import tiny_wan_state_dict
    model = comfy.sd.load_diffusion_model_state_dict(tiny_wan_state_dict(**kwargs))
    if model is None:
        raise RuntimeError("ComfyUI did not recognise the tiny Wan state dict")
    return model


def load_tiny_ltxv(config: Optional[dict] = None, **kwargs):
    """A ComfyUI LTX-Video MODEL detected and built by comfy.sd from a tiny state dict (float32);
    ``config``: LTXVModel arguments, in the state dict and in its metadata (as a file carries them)."""
    comfy_ready()
    import json

    import comfy.sd
    from harness.tiny_ltxv import tiny_ltxv_state_dict
    metadata = {"config": json.dumps({"transformer": config})} if config else None
    model = comfy.sd.load_diffusion_model_state_dict(tiny_ltxv_state_dict(**kwargs, **(config or {})),
                                                     model_options={"dtype": torch.float32}, metadata=metadata)
    if model is None:
        raise RuntimeError("ComfyUI did not recognise the tiny LTXV state dict")
    return model


def load_tiny_ltxv_vae(seed: int = 0):
    """ComfyUI's VAE built from a tiny LTX VideoVAE (its configuration in the metadata, as the loader reads it)."""
    comfy_ready()
    import comfy.sd
    from harness.tiny_ltxv import tiny_ltxv_vae_state_dict, vae_metadata
    return comfy.sd.VAE(sd=tiny_ltxv_vae_state_dict(seed=seed), metadata=vae_metadata())


def load_tiny_hunyuan_video():
    """ComfyUI's HunyuanVideo DiT, tiny, as comfy.sd loads it: a video model family FreeSwim does not
    support, for the refusals."""
    comfy_ready()
    import dataclasses

    from comfy.ldm.hunyuan_video.model import HunyuanVideo, HunyuanVideoParams
    from comfy.ops import disable_weight_init
    from comfy.sd import load_diffusion_model_state_dict
    newer = {"byt5": False, "meanflow": False, "use_cond_type_embedding": False, "vision_in_dim": None,
             "meanflow_sum": False}      # fields later ComfyUIs added; this host's subset
    extra = {f.name: newer[f.name] for f in dataclasses.fields(HunyuanVideoParams) if f.name in newer}
    dit = HunyuanVideo(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768,
                       context_in_dim=4096, hidden_size=256, mlp_ratio=4.0, num_heads=2, depth=1,
                       depth_single_blocks=1, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2], qkv_bias=True,
                       guidance_embed=False, operations=disable_weight_init, device="cpu", dtype=torch.float32,
                       **extra)
    return load_diffusion_model_state_dict({k: torch.randn(v.shape) * 0.02 for k, v in dit.state_dict().items()})


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


def pack_module(suffix: str):
    """A module of this pack as ComfyUI loaded it (its package name is the pack's folder path)."""
    comfy_ready()
    for name, mod in list(sys.modules.items()):
        if name.endswith("." + suffix) and "comfyui-freeswim" in name:
            return mod
    raise LookupError(f"pack module {suffix!r} is not loaded")


def sampling_options(patched, *, cond_or_uncond, uuids, sigma, sample_sigmas, run=None, **extra):
    """transformer_options as ComfyUI's calc_cond_batch hands them to the model for one call,
    with a sampling run's FreeSwim planner (normally created by the OUTER_SAMPLE wrapper)."""
    options = pack_module("nodes.options")
    to = {**patched.model_options["transformer_options"], "wrappers": patched.wrappers,
          "cond_or_uncond": list(cond_or_uncond), "uuids": list(uuids),
          "sigmas": torch.tensor([sigma]), "sample_sigmas": torch.tensor(sample_sigmas)}
    to[options.RUN_KEY] = run if run is not None else new_run()
    to.update(extra)
    return to


def new_run():
    """A sampling run's FreeSwim planner, as the OUTER_SAMPLE wrapper creates it (its settings and
    the model's facts are read at its first model call)."""
    return pack_module("nodes.planning").new_run()


def last_report() -> dict:
    """The report of the most recent sampling run in this process."""
    return pack_module("nodes.run_state").recent_reports()[-1]
