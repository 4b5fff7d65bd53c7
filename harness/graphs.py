"""API-format ComfyUI graphs used by the demo and the server tests."""
from __future__ import annotations

from pathlib import Path

TEST_NODES_NAME = "freeswim_test_nodes"
# Test-only ComfyUI nodes (stand-ins for the text encoder and CLIP vision), linked into test servers.
TEST_NODES = Path(__file__).resolve().parent / "host_nodes" / TEST_NODES_NAME


def window_patch_graph(*, unet_name: str, width: int, height: int, length: int, steps: int,
                       native_width: int, native_height: int, seed: int = 0, cfg: float = 5.0,
                       prefix: str = "freeswim/window", dual_path: bool = False,
                       guide_interval: int = 0) -> dict:
    """Wan loader -> FreeSwim Window Attention Patch [-> Dual-Path Override [-> Cross-Attn Cache]]
    -> KSampler -> SaveLatent.

    Conditioning comes from the test-only stand-in node (no text encoder weights here).
    """
    def cond(text, seed):
        return {"class_type": "FreeSwimTestTextConditioning",
                "inputs": {"text": text, "seed": seed, "tokens": 512, "dim": 4096}}

    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}},
        "2": {"class_type": "FreeSwimWindowAttentionPatch",
              "inputs": {"model": ["1", 0], "native_size": "custom", "custom_width": native_width,
                         "custom_height": native_height, "inward": True, "attention_scale": "reference",
                         "backend": "auto"}},
        "3": cond("a lighthouse on a cliff at dawn, waves, drone shot", 1),
        "4": cond("blurry, low quality, repeated objects", 2),
        "5": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": width, "height": height, "length": length, "batch_size": 1}},
        "6": {"class_type": "KSampler",
              "inputs": {"model": ["2", 0], "seed": seed, "steps": steps, "cfg": cfg,
                         "sampler_name": "euler", "scheduler": "simple", "positive": ["3", 0],
                         "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": prefix}},
    }
    if dual_path:
        graph["8"] = {"class_type": "FreeSwimDualPathOverride",
                      "inputs": {"model": ["2", 0], "passes": "cond", "override_image_cross": False,
                                 "start_percent": 0.0, "end_percent": 1.0, "execution": "batched"}}
        graph["6"]["inputs"]["model"] = ["8", 0]
        if guide_interval:
            graph["9"] = {"class_type": "FreeSwimCrossAttnCache",
                          "inputs": {"model": ["8", 0], "guide_interval": guide_interval,
                                     "storage": "auto", "precision": "model"}}
            graph["6"]["inputs"]["model"] = ["9", 0]
    return graph
