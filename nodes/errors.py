"""Errors the FreeSwim nodes raise, under a name a user can read.

ComfyUI reports a failed node's exception type as ``module.qualname``, and it
imports a pack's modules under their install path, so a plain class defined here
would reach the UI as ``/home/.../custom_nodes/comfyui-freeswim.nodes.errors.UnsupportedFamily``.
These classes give ``freeswim`` as their module: the UI shows ``freeswim.UnsupportedFamily``.
They are ValueErrors, as ComfyUI's own input errors are.
"""
from __future__ import annotations


class FreeSwimError(ValueError):
    """A FreeSwim node refused its inputs; the message names the node and the fix."""

    __module__ = "freeswim"


class InvalidInput(FreeSwimError):
    """An input value the node cannot use (out of range, not a number, unknown choice)."""

    __module__ = "freeswim"


class UnsupportedFamily(FreeSwimError):
    """The connected MODEL is not of a model family FreeSwim supports (Wan 2.1/2.2, LTX-Video 0.9.x)."""

    __module__ = "freeswim"


class UnsupportedModel(FreeSwimError):
    """A Wan variant the node does not support (yet)."""

    __module__ = "freeswim"
