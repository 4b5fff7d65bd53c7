"""Token-chunked feed-forward for transformer blocks (Wan's): the same layers, a bounded hidden state.

A Wan block's FFN holds its input, a hidden state ``ffn_dim`` wide (5.8x the model
width for 1.3B, 2.7x for 14B, and GELU's output beside it on 0.3.x) and its output
at once: at 4K the largest single activation of 1.3B. The FFN works token by
token, so running it on slices of tokens gives the same result with a hidden state
of one slice. :class:`ChunkedFFN` is installed as an object patch on each block's
``ffn``: it holds the original layers under their original names (weights,
LoRA patches and offloading see the same modules) and calls the original module's
own forward on each slice, writing into one output tensor. Below the budget it
calls it once, unchanged.

Where ComfyUI keeps a layer's weights off the compute device (lowvram and partial
loads, LoRA patches on offloaded weights), its ``Linear`` casts them on every call:
per slice, that would move a 14B block's 283 MB FFN weights about 35 times at 4K.
There the slices share one cast per layer and block, made by ComfyUI's own
``cast_bias_weight`` (device, dtype and patches applied as the layer would), and
run the layer's own arithmetic (``F.linear``) on it. Only layers whose forward is
ComfyUI's plain ``Linear`` are cast ahead; any other (quantised matmuls, dynamic
VRAM's virtual weights, which ComfyUI streams itself) is called per slice.
"""
from __future__ import annotations

import comfy.ops
import torch
import torch.nn.functional as F

from ..freeswim_core.memory.phases import FFN_HIDDEN_BUDGET, ffn_slice_tokens


def ffn_chunk_tokens(ffn_dim: int, element_bytes: int, budget: int | None = None) -> int:
    """Tokens per slice (the memory planner's own rule); ``budget`` defaults to this module's
    ``FFN_HIDDEN_BUDGET``."""
    return ffn_slice_tokens(ffn_dim, element_bytes, FFN_HIDDEN_BUDGET if budget is None else budget)


class ChunkedFFN(torch.nn.Module):
    """A Wan block's FFN run on slices of tokens; numerically the original (a token-wise map)."""

    def __init__(self, ffn: torch.nn.Module, budget: int | None = None):
        super().__init__()
        for name, child in ffn.named_children():   # same modules, same names: "0", "1", "2"
            self.add_module(name, child)
        self._original = (ffn,)                     # not registered: no second copy of the weights
        self.budget = budget

    def __getitem__(self, index):
        return self._original[0][index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ffn = self._original[0]
        hidden = hidden_width(ffn)
        step = ffn_chunk_tokens(hidden, x.element_size(), self.budget)
        tokens = x.shape[1]
        if tokens <= step:
            return ffn(x)
        run = _slice_runner(ffn, x[:, :step])
        first = run(x[:, :step])
        out = torch.empty(x.shape[:2] + first.shape[2:], dtype=first.dtype, device=first.device)
        out[:, :step] = first
        del first
        for start in range(step, tokens, step):
            out[:, start:start + step] = run(x[:, start:start + step])
        return out


def hidden_width(ffn: torch.nn.Module) -> int:
    """The FFN's hidden width: the output width of its first linear layer (Wan: ``ffn.0``; LTX:
    ``ff.net.0.proj``)."""
    return next(m.out_features for m in ffn.modules() if isinstance(m, torch.nn.Linear))


def _casts_every_call(layer: torch.nn.Module) -> bool:
    """Does ComfyUI cast this layer's weights at each call (weights kept elsewhere, or patched on
    the fly) rather than use them in place?"""
    return bool(getattr(layer, "comfy_cast_weights", False) or getattr(layer, "weight_function", None)
                or getattr(layer, "bias_function", None))


def _plain_linear(layer: torch.nn.Module) -> bool:
    """ComfyUI's own ``Linear`` (``disable_weight_init`` / ``manual_cast``): a cast of its weights,
    then ``F.linear``. Not a subclass with arithmetic of its own, nor a dynamic-VRAM layer."""
    plain = comfy.ops.disable_weight_init.Linear
    kind = type(layer)
    return (isinstance(layer, plain) and kind.forward is plain.forward
            and kind.forward_comfy_cast_weights is plain.forward_comfy_cast_weights
            and not hasattr(layer, "_v"))


def _slice_runner(ffn: torch.nn.Module, sample: torch.Tensor):
    """A function that runs ``ffn`` on one slice of tokens. For a sequence of layers whose plain
    ``Linear`` layers ComfyUI casts at each call, the weights are cast once here (for ``sample``'s
    device and dtype) and every slice uses them; otherwise the module itself."""
    if not isinstance(ffn, torch.nn.Sequential):
        return ffn
    layers = list(ffn)
    linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
    # every Linear ComfyUI's plain one (a quantised layer keeps the module's own forward, which may fold
    # the activation into its kernel), and at least one cast at each call
    if not linears or not all(_plain_linear(m) for m in linears) or not any(_casts_every_call(m) for m in linears):
        return ffn
    steps = []
    for m in layers:
        if isinstance(m, torch.nn.Linear) and _casts_every_call(m):      # plain, checked above
            weight, bias = comfy.ops.cast_bias_weight(m, sample)
            steps.append(lambda h, w=weight, b=bias: F.linear(h, w, b))
        else:
            steps.append(m)

    def run(h: torch.Tensor) -> torch.Tensor:
        for f in steps:
            h = f(h)
        return h
    return run


def install_chunked_ffn(model, dm, groups, attr: str = "ffn") -> None:
    """Object-patch the FFN (``attr``: Wan's ``ffn``, LTX's ``ff``) of every block of the block
    lists ``groups`` (Wan: ``blocks``, ``vace_blocks``; LTX: ``transformer_blocks``) of a (cloned)
    ModelPatcher; idempotent."""
    for group in groups:
        for i in range(len(getattr(dm, group, None) or [])):
            key = f"diffusion_model.{group}.{i}.{attr}"
            if not isinstance(model.object_patches.get(key), ChunkedFFN):
                model.add_object_patch(key, ChunkedFFN(model.get_model_object(key)))
