"""The tiny diffusers Wan of a parity set, loaded into ComfyUI's own WanModel.

The set is ``$FREESWIM_PARITY_DIR``, by default public set A, kept in this
repository (``tests/data/parity_a``, a copy of ``../shared/parity``) so that a
clone without ``../shared`` runs every parity test.

The parity weights use diffusers' ``WanTransformer3DModel`` names; ComfyUI's Wan
uses the original Wan names. The mapping below is written from the two module
layouts (diffusers attn1/attn2/norm2/ffn.net/scale_shift_table/condition_embedder
versus ComfyUI self_attn/cross_attn/norm3/ffn/modulation/time_* and text_*).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

PARITY_A = Path(__file__).resolve().parent / "data" / "parity_a"
PARITY = Path(os.environ.get("FREESWIM_PARITY_DIR") or PARITY_A)

_BLOCK_RULES = [
    (r"attn1\.to_q\.", "self_attn.q."), (r"attn1\.to_k\.", "self_attn.k."),
    (r"attn1\.to_v\.", "self_attn.v."), (r"attn1\.to_out\.0\.", "self_attn.o."),
    (r"attn1\.norm_q\.", "self_attn.norm_q."), (r"attn1\.norm_k\.", "self_attn.norm_k."),
    (r"attn2\.to_q\.", "cross_attn.q."), (r"attn2\.to_k\.", "cross_attn.k."),
    (r"attn2\.to_v\.", "cross_attn.v."), (r"attn2\.to_out\.0\.", "cross_attn.o."),
    (r"attn2\.norm_q\.", "cross_attn.norm_q."), (r"attn2\.norm_k\.", "cross_attn.norm_k."),
    (r"norm2\.", "norm3."),                      # the affine norm before cross-attention
    (r"ffn\.net\.0\.proj\.", "ffn.0."), (r"ffn\.net\.2\.", "ffn.2."),
    (r"scale_shift_table$", "modulation"),
]
_TOP_RULES = {
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "proj_out.": "head.head.",
    "patch_embedding.": "patch_embedding.",
}


def diffusers_to_comfy_key(key: str) -> str:
    m = re.match(r"blocks\.(\d+)\.(.*)$", key)
    if m:
        rest = m.group(2)
        for pattern, repl in _BLOCK_RULES:
            new, n = re.subn("^" + pattern, repl, rest)
            if n:
                return f"blocks.{m.group(1)}.{new}"
        raise KeyError(f"no ComfyUI name for diffusers key {key}")
    if key == "scale_shift_table":
        return "head.modulation"
    for prefix, repl in _TOP_RULES.items():
        if key.startswith(prefix):
            return repl + key[len(prefix):]
    raise KeyError(f"no ComfyUI name for diffusers key {key}")


def parity_config() -> dict:
    return json.loads((PARITY / "config.json").read_text())


def load_parity_model():
    """A ComfyUI ModelPatcher around ComfyUI's WanModel holding the parity weights.

    ComfyUI's Wan detection assumes head_dim 128 and the released freq/text widths;
    the tiny model's values come from its config instead.
    """
    import comfy.model_detection
    import comfy.model_patcher
    cfg = parity_config()
    sd = {diffusers_to_comfy_key(k): v for k, v in load_file(str(PARITY / "model.safetensors")).items()}
    model_config = comfy.model_detection.model_config_from_unet(sd, "")
    model_config.unet_config.update(num_heads=cfg["num_attention_heads"], freq_dim=cfg["freq_dim"],
                                    text_dim=cfg["text_dim"], eps=cfg["eps"])
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(sd, "")
    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=True), None
    del missing, unexpected
    device = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def parity_tensors():
    return load_file(str(PARITY / "inputs.safetensors")), load_file(str(PARITY / "outputs.safetensors"))


class ParitySet:
    """Everything the parity tests need about a set, from its ``manifest.json`` and ``config.json``
    (set A and any other set in the same layout run unchanged)."""

    def __init__(self, folder: Path = PARITY):
        self.folder = Path(folder)
        m = json.loads((self.folder / "manifest.json").read_text())
        cfg = json.loads((self.folder / "config.json").read_text())
        g, w = m["grid"], m["window"]
        self.grid = (int(g["F"]), int(g["Ht"]), int(g["Wt"]))
        self.tokens = int(g["L"])
        self.half = (int(w["d_h"]), int(w["d_w"]))
        self.window = (int(w["window_rows"]), int(w["window_cols"]))
        self.keys_per_query = int(w["keys_per_query"])
        self.heads, self.head_dim = int(cfg["num_attention_heads"]), int(m["head_dim"])
        self.scale = float(m["attention_scale_float64"])
        patch = cfg["patch_size"][1]
        self.vae_factor = 8                                # the Wan2.1 VAE's spatial factor
        self.px_per_token = self.vae_factor * patch       # pixels per token: VAE factor x spatial patch
        # the native size whose window is the set's: 2 * (px // px_per_token // 2) + 1 = 2 * d + 1
        self.native_px = (2 * self.half[1] * self.px_per_token, 2 * self.half[0] * self.px_per_token)
        t = m["timesteps"]
        self.sigma_guide, self.sigma_reuse = float(t["guide"]) / 1000, float(t["reuse"]) / 1000
        self.schedule = [self.sigma_guide, self.sigma_reuse, 0.0]   # guide step, then reuse step
        check = m["observed_tolerances"]["recommended_check"]
        self.tol = float(re.search(r"<=\s*([0-9.eE+-]+)", check).group(1))
        self.blocks = int(cfg["num_layers"])
