import pytest


@pytest.fixture(scope="session")
def comfy():
    """The real ComfyUI host in this process, with the pack loaded by ComfyUI's loader."""
    import comfy_env
    comfy_env.comfy_ready()
    return comfy_env
