"""``python -m freeswim_core.diffusers``: a FreeSwim clip from a local diffusers Wan model.

Example::

    python -m freeswim_core.diffusers --model /models/Wan2.1-T2V-1.3B-Diffusers \\
        --prompt "a red fox running through snow" --native 832x480 --target 1920x1088 \\
        --frames 81 --out clip.mp4

On N GPUs, each holding the tokens of 1/N of the sequence (Ulysses)::

    torchrun --nproc-per-node 4 -m freeswim_core.diffusers --ulysses 4 --model ... --out clip.mp4
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

import torch

from ..attention import BACKENDS
from ..dual import PASSES, PRECISIONS, STORAGE_MODES
from ..native import NATIVE_SIZE_OPTIONS
from ..scale import SCALE_MODES
from ..settings import CacheOptions, DualOptions, RefineOptions, WindowOptions

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1920x1088; got {text!r}") from None
    return w, h


def parser() -> argparse.ArgumentParser:
    W, D, C, R = WindowOptions(), DualOptions(), CacheOptions(), RefineOptions()
    p = argparse.ArgumentParser(prog="python -m freeswim_core.diffusers",
                                description="FreeSwim: a native-size Wan clip, upscaled and refined with "
                                            "window attention, the dual path and the cross-attention cache.")
    p.add_argument("--model", required=True, help="local diffusers Wan folder (e.g. Wan2.1-T2V-1.3B-Diffusers)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--native", type=_size, default=(832, 480), help="first pass WIDTHxHEIGHT (default 832x480)")
    p.add_argument("--target", type=_size, default=(1920, 1088), help="refined WIDTHxHEIGHT (default 1920x1088)")
    p.add_argument("--frames", type=int, default=81, help="4k+1 frames (default 81)")
    p.add_argument("--out", required=True, help="video file to write (.mp4)")
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--native-steps", type=int, default=50)
    p.add_argument("--steps", type=int, default=R.steps, help="refine schedule length (default %(default)s)")
    p.add_argument("--strength", type=float, default=R.strength, help="refine strength (default %(default)s)")
    p.add_argument("--shift", type=float, default=R.shift, help="refine flow shift (default %(default)s)")
    p.add_argument("--cfg", type=float, default=R.cfg, help="refine guidance (default %(default)s)")
    p.add_argument("--native-size", default=W.native_size,
                   help=f"window's native size: {', '.join(o for o in NATIVE_SIZE_OPTIONS if o != 'custom')} "
                        "or WIDTHxHEIGHT (default auto: the model's own)")
    p.add_argument("--no-inward", action="store_true", help="truncate windows at borders instead of shifting")
    p.add_argument("--attention-scale", choices=SCALE_MODES, default=W.scale_mode)
    p.add_argument("--backend", choices=BACKENDS, default=W.backend)
    p.add_argument("--passes", choices=PASSES, default=D.passes)
    p.add_argument("--start-percent", type=float, default=D.start_percent,
                   help="dual path from this point of the whole flow schedule, as in ComfyUI (sigma 1 to 0 "
                        "under --shift; a refine of strength < 1 starts partway in) (default %(default)s)")
    p.add_argument("--end-percent", type=float, default=D.end_percent,
                   help="dual path up to this point of the whole flow schedule (default %(default)s)")
    p.add_argument("--no-dual", action="store_true", help="window attention only")
    p.add_argument("--cache-interval", type=int, default=C.interval, help="guide every N steps; 0: no cache")
    p.add_argument("--cache-storage", choices=STORAGE_MODES, default=C.storage)
    p.add_argument("--cache-precision", choices=PRECISIONS, default=C.precision)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default="bf16" if torch.cuda.is_available() else "fp32")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--ulysses", type=int, default=1,
                   help="split each call's tokens over N processes (diffusers' Ulysses context parallelism); "
                        "run under torchrun --nproc-per-node N (default 1: no parallelism)")
    return p


def request_from(args):
    from .recipe import GenerateRequest
    window = WindowOptions(inward=not args.no_inward, scale_mode=args.attention_scale, backend=args.backend)
    if args.native_size != "auto":
        if args.native_size in NATIVE_SIZE_OPTIONS:
            window = replace(window, native_size=args.native_size)
        else:
            w, h = _size(args.native_size)
            window = replace(window, native_size="custom", custom_width=w, custom_height=h)
    dual = None if args.no_dual else DualOptions(passes=args.passes, start_percent=args.start_percent,
                                                 end_percent=args.end_percent)
    cache = CacheOptions(args.cache_interval, args.cache_storage, args.cache_precision) \
        if dual is not None and args.cache_interval > 0 else None
    refine = RefineOptions(strength=args.strength, steps=args.steps, shift=args.shift, cfg=args.cfg)
    return GenerateRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, native=args.native,
                           target=args.target, frames=args.frames, native_steps=args.native_steps,
                           seed=args.seed, refine=refine, window=window, dual=dual, cache=cache)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("freeswim")
    from .recipe import generate, load_pipeline
    from .ulysses import check_degree, enable_ulysses, leave_process_group, torchrun_device
    from .video import write_video
    rank = 0
    try:
        request = request_from(args)
        device = args.device
        if args.ulysses > 1:
            device, rank = torchrun_device(args.ulysses, args.device)
            if rank:
                log.setLevel(logging.WARNING)           # one rank tells the story
        pipe = load_pipeline(args.model, device, DTYPES[args.dtype])
        pipe.set_progress_bar_config(disable=args.no_progress or rank > 0)
        if args.ulysses > 1:
            check_degree(int(pipe.transformer.config.num_attention_heads), args.ulysses)
            patch = pipe.transformer.config.patch_size
            px = pipe.vae_scale_factor_spatial * patch[1]
            latent_frames = (request.frames - 1) // pipe.vae_scale_factor_temporal + 1
            tokens = [latent_frames * (h // px) * (w // px) for w, h in (request.native, request.target)]
            enable_ulysses(pipe.transformer, args.ulysses, anything=any(n % args.ulysses for n in tokens),
                           device=device)
            log.info("FreeSwim: %d ranks share each model call's tokens (Ulysses).", args.ulysses)
        frames = generate(request, pipe)
    except (ValueError, OSError) as exc:
        log.error("freeswim: %s", exc)
        return 2
    finally:
        if args.ulysses > 1:
            leave_process_group()
    if rank:
        return 0
    path = write_video(frames, args.out, fps=args.fps)
    log.info("FreeSwim: wrote %s (%d frames, %dx%d).", path, len(frames),
                                       frames.shape[2], frames.shape[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
