"""comfyui-freeswim: ComfyUI entry point (the host imports this folder as a package).

The nodes are imported when ComfyUI asks for them, not at package import, so
that tools importing this folder outside ComfyUI (test collectors, linters)
never need the host.
"""


# The frontend extension (the FreeSwim panel on the nodes): plain JavaScript, no build step.
WEB_DIRECTORY = "./web/js"


async def comfy_entrypoint():
    from .nodes import comfy_entrypoint as nodes_entrypoint
    return await nodes_entrypoint()
