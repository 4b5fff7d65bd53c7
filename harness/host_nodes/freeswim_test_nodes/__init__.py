"""Test-only ComfyUI nodes: stand-ins for what cannot be run here at real size.

No text encoder weights (UMT5-XXL, 5.7B parameters) can be downloaded or
sensibly randomised on a CPU machine, so graphs under test take their
conditioning from this node instead: a deterministic random tensor of the shape
a Wan text encoder produces. Everything else in those graphs is real.
Never shipped with the pack: the host loads this folder only when a test or the
demo links it into a throwaway ``custom_nodes`` directory.
"""
import zlib

import torch
from comfy_api.latest import ComfyExtension, io


class FreeSwimTestTextConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FreeSwimTestTextConditioning",
            display_name="Test Text Conditioning (random, stands in for a text encoder)",
            category="FreeSwim/testing",
            inputs=[
                io.String.Input("text", default=""),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1),
                io.Int.Input("tokens", default=512, min=1, max=4096),
                io.Int.Input("dim", default=4096, min=1, max=8192),
                io.Boolean.Input("attention_mask", default=False, optional=True,
                                 tooltip="Add the text's attention mask, as LTX-Video's T5 encoder does: 1 for "
                                         "the prompt's tokens (one a word, and the end token), 0 for the padding."),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, text, seed, tokens, dim, attention_mask=False) -> io.NodeOutput:
        g = torch.Generator().manual_seed((zlib.crc32(text.encode()) ^ seed) & 0x7FFFFFFF)
        extra = {}
        if attention_mask:
            mask = torch.zeros(1, tokens, dtype=torch.long)
            mask[:, :min(tokens, len(text.split()) + 1)] = 1
            extra["attention_mask"] = mask
        return io.NodeOutput([[torch.randn(1, tokens, dim, generator=g), extra]])


class FreeSwimTestClipVision(io.ComfyNode):
    """Stands in for CLIP Vision Loader + CLIP Vision Encode (ViT-H, 257 tokens x 1280)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FreeSwimTestClipVision",
            display_name="Test CLIP Vision Output (random, stands in for CLIP vision)",
            category="FreeSwim/testing",
            inputs=[io.Int.Input("seed", default=0, min=0, max=2**31 - 1),
                    io.Image.Input("image", optional=True)],
            outputs=[io.ClipVisionOutput.Output()],
        )

    @classmethod
    def execute(cls, seed, image=None) -> io.NodeOutput:
        import comfy.clip_vision
        g = torch.Generator().manual_seed(seed)
        out = comfy.clip_vision.Output()
        out["penultimate_hidden_states"] = torch.randn(1, 257, 1280, generator=g)
        out["last_hidden_state"] = torch.randn(1, 257, 1280, generator=g)
        out["image_embeds"] = torch.randn(1, 1024, generator=g)
        return io.NodeOutput(out)


class TestNodes(ComfyExtension):
    async def get_node_list(self):
        return [FreeSwimTestTextConditioning, FreeSwimTestClipVision]


async def comfy_entrypoint():
    return TestNodes()
