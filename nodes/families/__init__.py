"""The model families the FreeSwim nodes run on, each behind :class:`~.base.Family`.

:func:`family_of` finds a MODEL's family or refuses it with a message naming the node and
the families supported. A new family adds a module beside ``wan.py`` and one entry here.
"""
from __future__ import annotations

from ..errors import UnsupportedFamily
from .base import CallInputs, Family, ModelInfo
from .ltxv import LTXV_FAMILY
from .wan import WAN

FAMILIES: tuple[Family, ...] = (WAN, LTXV_FAMILY)


def diffusion_model_of(model):
    """The torch module behind a ComfyUI MODEL (a ModelPatcher)."""
    base = getattr(model, "model", None)
    return getattr(base, "diffusion_model", None)


def family_of(model, node_name: str) -> Family:
    """The family of a MODEL; :class:`UnsupportedFamily` naming ``node_name`` when no family knows it."""
    dm = diffusion_model_of(model)
    for family in FAMILIES:
        if dm is not None and family.recognises(dm):
            refusal = family.refusal(dm)
            if refusal is not None:
                raise UnsupportedFamily(f"{node_name}: {refusal}")
            return family
    kind = type(dm).__name__ if dm is not None else type(model).__name__
    raise UnsupportedFamily(
        f"{node_name}: the connected model is a {kind}, not a "
        f"{' or '.join(f.label for f in FAMILIES)} video model. Connect the MODEL output of a loader of one "
        f"({'; '.join(f.loader_hint for f in FAMILIES)}); other model families are not supported yet.")


def model_info(model, node_name: str) -> ModelInfo:
    """The node-time facts of a MODEL, its family found or refused (see :func:`family_of`)."""
    return family_of(model, node_name).info(model)


def family_named(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def families_payload() -> list[dict]:
    """What the panel needs of each family (served by ``GET /freeswim/families``)."""
    return [{"name": f.name, "label": f.label, "latent_nodes": list(f.latent_nodes)} for f in FAMILIES]


__all__ = ["FAMILIES", "CallInputs", "Family", "ModelInfo", "diffusion_model_of", "families_payload",
           "family_named", "family_of", "model_info"]
