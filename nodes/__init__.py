"""ComfyUI nodes of the FreeSwim pack (V3 schema)."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .dual_path import FreeSwimCrossAttnCache, FreeSwimDualPathOverride
from .routes import register as register_routes
from .upscale_refine import FreeSwimLatentUpscaleRefine
from .window_patch import FreeSwimWindowAttentionPatch

NODES = [FreeSwimWindowAttentionPatch, FreeSwimDualPathOverride, FreeSwimCrossAttnCache,
         FreeSwimLatentUpscaleRefine]


class FreeSwimExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_routes()     # every host asks for the node list at load time (not all call on_load)
        return list(NODES)


async def comfy_entrypoint() -> FreeSwimExtension:
    return FreeSwimExtension()
