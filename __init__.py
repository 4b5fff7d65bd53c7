"""comfyui-freeswim: ComfyUI entry point (the host imports this folder as a package)."""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
