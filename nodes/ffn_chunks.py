"""Token-chunked feed-forward for Wan blocks: the same layers, a bounded hidden state.

A Wan block's FFN holds its input, a hidden state ``ffn_dim`` wide (5.8x the model
width for 1.3B, 2.7x for 14B, and GELU's output beside it on 0.3.x) and its output
at once: at 4K the largest single activation of 1.3B. The FFN works token by
token, so running it on slices of tokens gives the same result with a hidden state
of one slice. :class:`ChunkedFFN` is installed as an object patch on each block's
``ffn``: it holds the original layers under their original names (weights,
LoRA patches and offloading see the same modules) and calls the original module's
own forward on each slice, writing into one output tensor. Below the budget it
calls it once, unchanged.
"""
from __future__ import annotations

import torch

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
        hidden = self._original[0][0].out_features
        step = ffn_chunk_tokens(hidden, x.element_size(), self.budget)
        tokens = x.shape[1]
        if tokens <= step:
            return ffn(x)
        first = ffn(x[:, :step])
        out = torch.empty(x.shape[:2] + first.shape[2:], dtype=first.dtype, device=first.device)
        out[:, :step] = first
        del first
        for start in range(step, tokens, step):
            out[:, start:start + step] = ffn(x[:, start:start + step])
        return out


def install_chunked_ffn(model, dm) -> None:
    """Object-patch the FFN of every block (VACE blocks too) of a (cloned) ModelPatcher; idempotent."""
    for group in ("blocks", "vace_blocks"):
        for i in range(len(getattr(dm, group, None) or [])):
            key = f"diffusion_model.{group}.{i}.ffn"
            if not isinstance(model.object_patches.get(key), ChunkedFFN):
                model.add_object_patch(key, ChunkedFFN(model.get_model_object(key)))
