"""FreeSwim on ComfyUI's MultiGPU CFG Split (ComfyUI 0.33+): each device's model its own.

The MultiGPU CFG Split node gives every extra device a fresh copy of the model
(``ModelPatcher.deepclone_multigpu``) and, at each sampling run, a clone of the main
patcher onto that copy (``match_multigpu_clones``). A clone copies the object patches
as they are, and two of FreeSwim's hold modules of the model they were made for: the
token-sliced FFN (:class:`~.ffn_chunks.ChunkedFFN`, which holds the block's layers) and
the token-major patch embedding (:class:`~.patch_embedding.TokenMajorPatchEmbedding`,
which holds the convolution). On a clone they would run the main device's weights (and
loading the clone would move them). ComfyUI calls back after making such a clone; the
callbacks here rebuild those two patches around the clone's own modules.

The rest needs nothing per device: the block replacement and the attention override hold
no module, and a sampling run's planner (``freeswim_core.planner.Run``) is shared by the
devices' threads and made for that (a lock, one feature store per device).
"""
from __future__ import annotations

import logging

import comfy.utils
from comfy.patcher_extension import CallbacksMP

from ..freeswim_core.log import log_once

from .ffn_chunks import ChunkedFFN
from .patch_embedding import TokenMajorPatchEmbedding

CLONE_CALLBACKS = tuple(getattr(CallbacksMP, name) for name in ("ON_DEEPCLONE_MULTIGPU", "ON_MATCH_MULTIGPU_CLONES")
                        if hasattr(CallbacksMP, name))


def _own(module):
    """The module a FreeSwim FFN patch stands in for, where that patch is applied on the model now."""
    return module._original[0] if isinstance(module, ChunkedFFN) else module


def rebind_object_patches(source, clone) -> None:
    """ComfyUI's callback after ``source`` was cloned onto another device's model: FreeSwim's object
    patches of ``clone`` rebuilt around ``clone.model``'s own modules."""
    for key, patch in list(clone.object_patches.items()):
        if isinstance(patch, ChunkedFFN):
            clone.object_patches[key] = ChunkedFFN(_own(comfy.utils.get_attr(clone.model, key)), patch.budget)
        elif isinstance(patch, TokenMajorPatchEmbedding):
            conv = comfy.utils.get_attr(clone.model, key.rsplit(".", 1)[0])
            if patch.previous is not None:       # another node's forward, made for the main device's module
                log_once("multigpu:previous", logging.WARNING,
                         "FreeSwim: another node patched the patch embedding's forward before FreeSwim; on the "
                         "MultiGPU copy FreeSwim runs the copy's own embedding without that patch. Apply that "
                         "node after MultiGPU CFG Split, or remove it.")
            clone.object_patches[key] = TokenMajorPatchEmbedding(conv, None)


def install_clone_callbacks(model, key: str) -> None:
    """Register :func:`rebind_object_patches` on a (cloned) ModelPatcher, where the host has MultiGPU."""
    for kind in CLONE_CALLBACKS:
        model.remove_callbacks_with_key(kind, key)
        model.add_callback_with_key(kind, key, rebind_object_patches)
