"""FreeSwim's diffusers adapter under Ulysses context parallelism, on CPUs (gloo).

``python -m harness.ulysses_run --world 2 --out F`` spawns ``world`` processes that each
build the same tiny ``WanTransformer3DModel`` (seeded random weights), enable diffusers'
context parallelism (``ulysses_degree=world``) with FreeSwim installed, and run the
:func:`scenario`: four denoising steps with guidance, where the dual path's cache guides and
reuses. Each rank saves its outputs and run report to ``F.rank<r>``. The tests run the
same scenario in one process, without parallelism, and compare.

Cases (:data:`CASES`): FreeSwim installed after the parallelism (``enable_ulysses``), cond and
uncond in separate calls; FreeSwim installed first, then diffusers' own ``enable_parallelism``
(its device resolution told of one accelerator, as a GPU machine has), the ``ulysses_anything``
path, both passes in one call; one rank with no host RAM for the cache (the ranks must agree to
run without it). diffusers gathers an uneven split's output with an all-gather of unequal sizes, which
gloo refuses, so the model-level cases have token counts the degree divides; FreeSwim's own
exchange is checked on an odd token count directly (:func:`exchange_errors`). Two refusals: ring
attention and a degree that does not divide the heads.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import traceback

import torch

HEADS, HEAD_DIM = 4, 16            # two heads per rank at degree 2
NATIVE_PX = (96, 64)               # the window's native size: 7 x 5 tokens (px per token 16)
TIMESTEPS = (900.0, 700.0, 500.0, 300.0)
CFG = 5.0

# name -> (latent [frames, height, width], ulysses_anything, FreeSwim installed before parallelism,
#          cond and uncond in one call)
CASES = {
    "even": ((3, 20, 28), False, False, False),          # 3 x 10 x 14 = 420 tokens: 210 per rank
    "anything": ((3, 18, 28), True, True, True),         # 3 x 9 x 14 = 378 tokens: 189 per rank
}
ODD_TOKENS = 351                                          # 3 x 9 x 13: 176 + 175 at degree 2


def tiny_transformer(heads: int = HEADS, seed: int = 0):
    """A 2-block diffusers Wan transformer with visible random weights (the same on every rank)."""
    import diffusers

    from .tiny_diffusers import visible_weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = visible_weights(diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=HEAD_DIM, in_channels=16,
            out_channels=16, text_dim=32, freq_dim=32, ffn_dim=128, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024))
    return model.eval()


def install(model, cache: bool = True):
    from freeswim_core.diffusers import CacheOptions, DualOptions, FreeSwim, WindowOptions
    window = WindowOptions(native_size="custom", custom_width=NATIVE_PX[0], custom_height=NATIVE_PX[1],
                           backend="chunked")
    return FreeSwim(model, window=window, dual=DualOptions(passes="cond_and_uncond"),
                    cache=CacheOptions(interval=2) if cache else None, vae_scale_factor=8, guidance_scale=CFG)


def scenario(model, latent: tuple, together: bool, seed: int = 1) -> torch.Tensor:
    """Guided flow steps on ``model`` (FreeSwim installed): the guided velocity of every step,
    ``[steps, 1, 16, T, H, W]``. ``together``: both passes in one call, rows named."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, *latent, generator=g)
    cond, uncond = torch.randn(2, 1, 512, 32, generator=g)
    velocities = []
    with torch.no_grad():
        for t in TIMESTEPS:
            if together:
                out = model(torch.cat([x, x]), torch.full((2,), t), torch.cat([uncond, cond]), return_dict=False,
                            attention_kwargs={"freeswim_rows": ["uncond", "cond"]})[0]
                u, c = out[:1], out[1:]
            else:
                c = model(x, torch.full((1,), t), cond, return_dict=False)[0]
                u = model(x, torch.full((1,), t), uncond, return_dict=False)[0]
            v = u + CFG * (c - u)
            velocities.append(v)
            x = x - 0.2 * v
    return torch.stack(velocities)


def single(case: str, cache: bool = True) -> tuple[torch.Tensor, dict]:
    """The case in this process, without parallelism: (velocities, run report)."""
    latent, _, _, together = CASES[case]
    model = tiny_transformer()
    fs = install(model, cache)
    try:
        out = scenario(model, latent, together)
        return out, fs.report.as_dict()
    finally:
        fs.remove()


def _rank_case(case: str) -> tuple[torch.Tensor, dict]:
    from freeswim_core.diffusers.ulysses import enable_ulysses
    latent, anything, first, together = CASES[case]
    model = tiny_transformer()
    world = torch.distributed.get_world_size()
    if first:
        import unittest.mock

        from diffusers import ContextParallelConfig
        fs = install(model)
        # diffusers resolves the rank's device as rank % accelerator count: one, as on a GPU machine
        with unittest.mock.patch.object(torch.accelerator, "device_count", lambda: 1):
            model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world, ulysses_anything=anything))
    else:
        enable_ulysses(model, world, anything=anything, device=torch.device("cpu"))
        fs = install(model)
    out = scenario(model, latent, together)
    return out, fs.report.as_dict()


def exchange_errors(tokens: int = ODD_TOKENS, rows: int = 3) -> dict:
    """FreeSwim's token exchange on this rank against slicing one seeded tensor: the gathered q has
    every token for this rank's heads, and scattering it back gives this rank's tokens again."""
    import torch.distributed as dist

    from freeswim_core.diffusers.ulysses import Ulysses, shard_sizes
    world, rank = dist.get_world_size(), dist.get_rank()
    full = torch.randn(rows, tokens, HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(5))
    sizes = shard_sizes(tokens, world)
    start = sum(sizes[:rank])
    local = full[:, start:start + sizes[rank]]
    u = Ulysses(group=dist.group.WORLD, degree=world, rank=rank)
    group = HEADS // world * HEAD_DIM
    gathered = u.gather_tokens(local, HEADS, tokens)
    back = u.scatter_tokens(gathered, HEADS // world)
    return {"gather": (gathered - full[..., rank * group:(rank + 1) * group]).abs().max().item(),
            "scatter": (back - local).abs().max().item(), "shapes": [list(gathered.shape), list(back.shape)]}


def short_of_host_ram() -> tuple[torch.Tensor, dict]:
    """The "even" case where the last rank has no host RAM for the cache: every rank runs without it."""
    import torch.distributed as dist

    import freeswim_core.diffusers.install as adapter
    from freeswim_core.diffusers.ulysses import enable_ulysses
    if dist.get_rank() == dist.get_world_size() - 1:
        adapter._free_host_bytes = lambda: 0
    latent, _, _, together = CASES["even"]
    model = tiny_transformer()
    enable_ulysses(model, dist.get_world_size(), device=torch.device("cpu"))
    fs = install(model)
    return scenario(model, latent, together), fs.report.as_dict()


def _refusal(kind: str) -> str:
    """The adapter's message for an unsupported parallel setup (empty: none was raised)."""
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    from freeswim_core.diffusers.ulysses import apply_parallel_config, enable_ulysses, parallel_config
    world = dist.get_world_size()
    if kind == "heads":               # refused when parallelism is enabled, before any call
        try:
            enable_ulysses(tiny_transformer(heads=world + 1), world, anything=True, device=torch.device("cpu"))
        except ValueError as exc:
            return str(exc)
        return ""
    else:
        model = tiny_transformer()
        apply_parallel_config(model, parallel_config(ContextParallelConfig(ring_degree=world), dist.get_rank(),
                                                     world, torch.device("cpu")))
    fs = install(model)
    try:
        scenario(model, CASES["even"][0], False)
    except ValueError as exc:
        return str(exc)
    finally:
        fs.remove()
    return ""


def _rank_main(rank: int, world: int, port: int, out: str, cases: list) -> None:
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("cpu:gloo", rank=rank, world_size=world)   # "cpu:" as diffusers reads it
    try:
        result = {}
        for case in cases:
            result[case] = _rank_case(case)
        result["exchange"] = exchange_errors()
        result["short"] = short_of_host_ram()
        result["refusals"] = {kind: _refusal(kind) for kind in ("ring", "heads")}
        torch.save(result, f"{out}.rank{rank}")
    except Exception:
        traceback.print_exc()
        raise
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--out", required=True, help="results go to OUT.rank<r>")
    p.add_argument("--cases", default=",".join(CASES))
    a = p.parse_args(argv)
    import torch.multiprocessing as mp
    mp.spawn(_rank_main, args=(a.world, free_port(), a.out, a.cases.split(",")), nprocs=a.world, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
