"""The model files a UI-format workflow loads, and which of them a models folder lacks.

``make demo MODELS=...`` checks this before it starts a server, so a missing file
is reported by name, folder and workflow instead of as the server's refusal.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# loader node -> (its file-name input, which is its first widget; the folders under models/ that
# ComfyUI searches, new name first)
LOADERS = {
    "UNETLoader": ("unet_name", ("diffusion_models", "unet")),
    "CLIPLoader": ("clip_name", ("text_encoders", "clip")),
    "VAELoader": ("vae_name", ("vae",)),
    "CLIPVisionLoader": ("clip_name", ("clip_vision",)),
}


@dataclass(frozen=True)
class ModelFile:
    node_id: str
    loader: str
    name: str
    folders: tuple[str, ...]

    def found_in(self, models: Path) -> Path | None:
        for folder in self.folders:
            if (models / folder / self.name).is_file():
                return models / folder / self.name
        return None


def model_files(workflow: dict) -> list[ModelFile]:
    """The files the loader nodes of a UI-format workflow name (bypassed nodes included)."""
    out = []
    for node in workflow.get("nodes", []):
        spec = LOADERS.get(node.get("type"))
        values = node.get("widgets_values") or []
        if spec is not None and values and isinstance(values[0], str):
            out.append(ModelFile(str(node["id"]), node["type"], values[0], spec[1]))
    return out


def missing_files_report(workflow: dict, models: Path, name: str) -> str | None:
    """None when every file is there; else a message naming each missing file and where it belongs."""
    models = Path(models)
    if not models.is_dir():
        return (f"the models folder {models} does not exist. MODELS must be a ComfyUI models folder "
                f"(with diffusion_models/, text_encoders/, vae/) holding the files {name} loads: "
                + ", ".join(sorted({f.name for f in model_files(workflow)})) + ".")
    missing = [f for f in model_files(workflow) if f.found_in(models) is None]
    if not missing:
        return None
    lines = [f"{name} needs {len(missing)} file(s) that {models} does not have:"]
    for f in missing:
        where = " or ".join(str(models / d / f.name) for d in f.folders)
        lines.append(f"  {f.name} (node {f.node_id}, {f.loader}): expected at {where}")
    return "\n".join(lines)
