"""FreeSwim's self-attention under diffusers' Ulysses context parallelism.

With ``transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))``
diffusers splits each model call's token sequence into N contiguous shards, one per
rank (``torch.tensor_split`` sizes: equal where N divides the tokens, the first ranks
one token more under ``ulysses_anything``), and gathers the output after the last
block. Its own attention then exchanges q, k and v so that each rank attends over
*every* token for heads/N of the heads, and exchanges the output back: that is
Ulysses.

FreeSwim's self-attention processor does the same exchange itself, once per call,
around everything it runs on those heads: the window kernel over the whole grid and
the full-attention twins. The window rule is per head, so each rank's head shard gets
exactly the single-process result. Cross-attention needs no exchange (each token
attends to the text on its own), so the dual path's hand-off and the cache's stored
features are per rank: each rank keeps its own tokens' features.

Why ``torch.distributed.all_to_all_single`` and not diffusers' templated Ulysses: that
one runs inside diffusers' attention dispatch, one kernel per exchange, through private
helpers that change between releases; FreeSwim needs one exchange shared by the window
kernel and the twins' attention, and the shard sizes follow from the grid the model hook
already knows. The collective is public, works on NCCL and on gloo (the CPU tests), and
takes uneven split sizes.

Ring attention (``ring_degree > 1``) is refused: each rank would hold only its own
queries' keys in turn, and the window would have to be cut per ring step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


def check_degree(heads: int, degree: int) -> None:
    """Each rank windows heads/N whole heads: ``degree`` must divide the model's heads."""
    if degree > 1 and heads % degree:
        divisors = [d for d in range(2, heads + 1) if heads % d == 0]
        raise ValueError(f"FreeSwim: ulysses_degree {degree} does not divide the model's {heads} attention heads; "
                         f"each rank windows heads/N whole heads. Use one of {', '.join(map(str, divisors))}.")


def shard_sizes(tokens: int, degree: int) -> list[int]:
    """Tokens per rank as diffusers splits a sequence (``tensor_split``: the first ``tokens % degree``
    ranks hold one more; equal where ``degree`` divides ``tokens``)."""
    base, extra = divmod(tokens, degree)
    return [base + (1 if r < extra else 0) for r in range(degree)]


@dataclass(frozen=True)
class Ulysses:
    """One Ulysses group: ``degree`` ranks, this one ``rank``, ``group`` their process group."""

    group: object
    degree: int
    rank: int

    def check_heads(self, heads: int) -> None:
        check_degree(heads, self.degree)

    def least(self, value: Optional[int], device: torch.device) -> Optional[int]:
        """The smallest of every rank's ``value``: what the ranks decide from it (whether the cache
        fits, and where) they must decide alike, or their exchanges would carry different rows."""
        import torch.distributed as dist
        if value is None:
            return None
        t = torch.tensor([int(value)], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.group)
        return int(t.item())

    def gather_tokens(self, x: torch.Tensor, heads: int, tokens: int) -> torch.Tensor:
        """``[B, local tokens, heads * D]`` on each rank -> ``[B, tokens, heads/N * D]``: every token of
        the sequence, for this rank's heads (the ``rank``-th group of heads/N)."""
        import torch.distributed as dist
        n, sizes = self.degree, shard_sizes(tokens, self.degree)
        b, local, width = x.shape
        if local != sizes[self.rank]:
            raise ValueError(f"FreeSwim: rank {self.rank} holds {local} tokens of {tokens}, where diffusers' "
                             f"context-parallel split gives it {sizes[self.rank]}: a custom cp_plan splits the "
                             f"sequence another way. Use the transformer's own _cp_plan.")
        head_dim = width // heads
        group = heads // n * head_dim
        # to each rank its head group of this rank's tokens: [N, B, local, group], contiguous per rank
        send = x.reshape(b, local, n, group).permute(2, 0, 1, 3).contiguous()
        recv = x.new_empty(b * tokens * group)
        dist.all_to_all_single(recv, send.reshape(-1), [b * s * group for s in sizes],
                               [b * local * group] * n, group=self.group)
        del send
        parts = recv.split([b * s * group for s in sizes])
        return torch.cat([p.view(b, s, group) for p, s in zip(parts, sizes)], dim=1)

    def scatter_tokens(self, out: torch.Tensor, heads: int) -> torch.Tensor:
        """The inverse of :meth:`gather_tokens`: ``[B, tokens, heads/N * D]`` -> ``[B, local tokens,
        heads * D]``."""
        import torch.distributed as dist
        n = self.degree
        b, tokens, group = out.shape
        sizes = shard_sizes(tokens, n)
        local = sizes[self.rank]
        send = torch.cat([p.reshape(-1) for p in out.split(sizes, dim=1)])      # rank r's tokens, in rank order
        recv = out.new_empty(n * b * local * group)
        dist.all_to_all_single(recv, send, [b * local * group] * n, [b * s * group for s in sizes],
                               group=self.group)
        del send
        return recv.view(n, b, local, group).permute(1, 2, 0, 3).reshape(b, local, n * group)


def ulysses_of(transformer) -> Optional[Ulysses]:
    """The transformer's Ulysses group under diffusers' context parallelism, None without it; ring
    attention is refused (see the module doc)."""
    config = getattr(transformer, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    if cp is None:
        return None
    if (cp.ring_degree or 1) > 1:
        raise ValueError(f"FreeSwim: context parallelism with ring_degree {cp.ring_degree} is not supported: ring "
                         "attention hands each rank the keys in turns and the window cannot be kept exact. Use "
                         "ContextParallelConfig(ulysses_degree=N) (ring_degree 1).")
    if (cp.ulysses_degree or 1) == 1:
        return None
    return Ulysses(group=cp._ulysses_mesh.get_group(), degree=int(cp.ulysses_degree),
                   rank=int(cp._ulysses_mesh.get_local_rank()))


def enable_ulysses(transformer, degree: int, anything: bool = False, device: Optional[torch.device] = None):
    """``transformer.enable_parallelism`` with ``ContextParallelConfig(ulysses_degree=degree)``
    (``anything``: diffusers' ``ulysses_anything``, for token counts that ``degree`` does not divide).
    torch.distributed must be initialised (``torchrun``).

    On a CPU (gloo, the tests) diffusers' own resolution would take the rank's device from the
    accelerator count, which is 0 there; the same steps then run with the explicit CPU device."""
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    check_degree(int(transformer.config.num_attention_heads), degree)
    cp = ContextParallelConfig(ulysses_degree=degree, ulysses_anything=anything)
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cpu":
        transformer.enable_parallelism(config=cp)
        return transformer
    if getattr(transformer, "_parallel_config", None) is not None:
        raise RuntimeError("FreeSwim: parallelism is already enabled on this transformer.")
    apply_parallel_config(transformer, parallel_config(cp, dist.get_rank(), dist.get_world_size(), device))
    return transformer


def parallel_config(cp, rank: int, world: int, device: torch.device):
    """diffusers' ``ParallelConfig`` of ``cp`` set up for ``rank`` of ``world`` on ``device``, its mesh
    made on the CPU (what ``enable_parallelism`` resolves from the accelerator, given explicitly).
    Made outside fake-tensor mode: building the mesh reads values."""
    from diffusers.models._modeling_parallel import ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh
    config = ParallelConfig(context_parallel_config=cp)
    config.setup(rank, world, device, mesh=init_device_mesh("cpu", cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names))
    return config


def apply_parallel_config(transformer, config) -> None:
    """What ``enable_parallelism`` does with a resolved ``config``: it is recorded on the transformer and
    its attention processors, and the model's context-parallel plan is applied."""
    from diffusers.hooks.context_parallel import apply_context_parallel
    transformer._parallel_config = config
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = config
    apply_context_parallel(transformer, config.context_parallel_config, transformer._cp_plan)


def torchrun_device(degree: int, device: str) -> tuple[torch.device, int]:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): NCCL with
    one GPU per process, or gloo on CPUs. Returns (this process's device, its rank)."""
    import os

    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ or world != degree:
        raise ValueError(f"--ulysses {degree} runs as {degree} processes: start it with "
                         f"torchrun --nproc-per-node {degree} -m freeswim_core.diffusers --ulysses {degree} ... "
                         f"(this process sees WORLD_SIZE {world}).")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.device(device).type == "cuda":
        target = torch.device("cuda", local)
        torch.cuda.set_device(target)
        backend = "nccl"
    else:
        target, backend = torch.device(device), "cpu:gloo"      # "cpu:" is how diffusers tells gloo apart
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return target, dist.get_rank()


def leave_process_group() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
