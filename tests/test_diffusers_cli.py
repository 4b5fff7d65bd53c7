"""The diffusers recipe and its CLI on a tiny random Wan pipeline saved to disk
(harness/tiny_diffusers.py: loaded back by diffusers' own from_pretrained, nothing downloaded)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
av = pytest.importorskip("av")

from harness.tiny_diffusers import save_tiny_wan_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# 96x64 px native: a 5 x 7 token window on the 8 x 12 token grid of the 192x128 target
ARGS = ["--prompt", "a red fox running through snow", "--native", "96x64", "--target", "192x128",
        "--frames", "5", "--native-steps", "2", "--steps", "4", "--native-size", "96x64",
        "--device", "cpu", "--dtype", "fp32", "--backend", "chunked", "--no-progress"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_wan_pipeline(tmp_path_factory.mktemp("tiny_wan"), seed=3)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "freeswim_core.diffusers", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clip(model_dir, tmp_path_factory):
    """The CLI's clip of ARGS, in one process: (its path, the finished process)."""
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return out, cli("--model", str(model_dir), *ARGS, "--out", str(out))


def test_cli_writes_the_refined_clip(clip):
    out, done = clip
    assert done.returncode == 0, done.stderr[-3000:]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert (stream.width, stream.height, len(frames)) == (192, 128, 5)
    assert np.std(np.stack(frames)) > 1.0                       # not a blank clip
    # strength 0.7 of 4 steps: 2 refine steps, cond calls guide then reuse; uncond is window-only
    assert "4 model calls (1 guide, 1 reuse, 0 dual)" in done.stderr, done.stderr[-3000:]
    assert "backends chunked" in done.stderr


def test_cli_refuses_sizes_the_model_cannot_make(model_dir, tmp_path):
    done = cli("--model", str(model_dir), *ARGS[:4], "--target", "192x120", "--out", str(tmp_path / "x.mp4"))
    assert done.returncode == 2
    assert "192x120" in done.stderr and "multiple of 16" in done.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_recipe_is_deterministic_and_leaves_the_transformer_stock(model_dir):
    import torch
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    from freeswim_core.diffusers import GenerateRequest, WindowOptions, generate
    from freeswim_core.diffusers.recipe import load_pipeline
    pipe = load_pipeline(str(model_dir), "cpu", torch.float32)
    pipe.set_progress_bar_config(disable=True)
    request = GenerateRequest(prompt="a fox", native=(96, 64), target=(192, 128), frames=5, native_steps=2,
                              window=WindowOptions(native_size="custom", custom_width=96, custom_height=64,
                                                   backend="chunked"))
    request.refine = type(request.refine)(steps=4)
    first, second = generate(request, pipe), generate(request, pipe)
    assert first.shape == (5, 128, 192, 3) and np.array_equal(first, second)
    assert all(isinstance(b.attn1.processor, WanAttnProcessor) for b in pipe.transformer.blocks)
    assert getattr(pipe.transformer, "_freeswim", None) is None


def test_freeswim_follows_a_pipelines_steps_and_passes(model_dir):
    """On WanPipeline (which names each call's pass and step): 5 steps with cfg, guide every 2 steps,
    so the conditional calls guide at steps 0, 2, 4 and reuse at 1, 3, and the unconditional ones
    are window-only; the pipeline's end drops the cached features."""
    import torch

    from freeswim_core.diffusers import FreeSwim, WindowOptions
    from freeswim_core.diffusers.recipe import load_pipeline
    pipe = load_pipeline(str(model_dir), "cpu", torch.float32)
    pipe.set_progress_bar_config(disable=True)
    fs = FreeSwim(pipe.transformer, window=WindowOptions(native_size="custom", custom_width=96, custom_height=64,
                                                         backend="chunked"), vae_scale_factor=8)
    try:
        pipe(prompt="a fox", width=192, height=128, num_frames=5, num_inference_steps=5, guidance_scale=5.0,
             output_type="np")
        r = fs.report
        assert (r.model_calls, r.windowed_calls, r.guide_calls, r.reuse_calls, r.dual_calls) == (10, 10, 3, 2, 0)
        assert fs.run.store is None
        # a second pipeline call is a run of its own, with a report of its own
        pipe(prompt="a fox", width=192, height=128, num_frames=5, num_inference_steps=3, guidance_scale=5.0,
             output_type="np")
        assert [(x.model_calls, x.guide_calls, x.reuse_calls) for x in fs.reports] == [(10, 3, 2), (6, 2, 1)]
        assert fs.report is fs.reports[-1]
    finally:
        fs.remove()


def test_active_range_is_the_same_schedule_points_as_in_comfyui(model_dir):
    """start/end percent 0.5/0.9 on a video-to-video refine (strength 0.5 of 20 steps, flow shift 3;
    the pipeline gives integer timesteps only): the dual path runs on the conditional calls whose
    schedule sigma lies between the shifted times 0.5 and 0.1 (ComfyUI's percent_to_sigma for flow
    models, worked by hand here), which are not the steps that t / 1000, unshifted percents or a
    count of the refine's steps would pick; without a scheduler the range is refused."""
    import torch
    from diffusers import UniPCMultistepScheduler, WanVideoToVideoPipeline
    from PIL import Image

    from freeswim_core.diffusers import DualOptions, FreeSwim, WindowOptions
    from freeswim_core.diffusers.recipe import load_pipeline
    pipe = load_pipeline(str(model_dir), "cpu", torch.float32)
    refine = WanVideoToVideoPipeline(**{k: v for k, v in pipe.components.items()
                                        if k in ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")})
    shift = 3.0
    refine.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=shift)
    refine.set_progress_bar_config(disable=True)
    window = WindowOptions(native_size="custom", custom_width=96, custom_height=64, backend="chunked")
    dual = DualOptions(passes="cond", start_percent=0.5, end_percent=0.9)
    with pytest.raises(ValueError, match="scheduler=pipe.scheduler"):
        FreeSwim(refine.transformer, window=window, dual=dual, cache=None)
    fs = FreeSwim(refine.transformer, window=window, dual=dual, cache=None, vae_scale_factor=8,
                  scheduler=refine.scheduler)
    from freeswim_core import probes
    modes = []
    probe = probes.Probe(on_call=lambda call: modes.append(call.mode.value))
    prompt, negative = pipe.encode_prompt("a fox", negative_prompt="", device="cpu")   # (no ftfy here)
    video = [Image.new("RGB", (192, 128), (40 * i, 90, 160)) for i in range(5)]
    try:
        with probes.probing(probe):
            refine(video=video, prompt_embeds=prompt, negative_prompt_embeds=negative, width=192, height=128,
                   num_inference_steps=20, strength=0.5, guidance_scale=5.0, output_type="np")
    finally:
        fs.remove()
    timesteps = refine.scheduler.timesteps.tolist()[10:]                 # the refine's 10 steps
    sigmas = refine.scheduler.sigmas.tolist()[10:20]

    def at(percent, s):                                                  # ComfyUI's flow percent_to_sigma
        return s * (1 - percent) / (1 + (s - 1) * (1 - percent))

    def steps(values, s):
        return [i for i, v in enumerate(values) if at(0.9, s) <= v <= at(0.5, s)]

    expected = steps(sigmas, shift)
    assert expected == list(range(1, 9))
    assert expected != steps([t / 1000 for t in timesteps], shift) and expected != steps(sigmas, 1.0)
    assert expected != [i for i in range(10) if 0.5 <= i / 10 <= 0.9]
    assert len(modes) == 20 and modes[1::2] == ["off"] * 10                # uncond: window only
    assert [i for i, m in enumerate(modes[0::2]) if m == "dual"] == expected


@pytest.mark.parametrize("start, end", [(0.8, 0.2), (-0.1, 0.5), (0.5, 1.5)])
def test_a_bad_active_range_is_refused_before_any_pass(start, end):
    from freeswim_core.diffusers import DualOptions, GenerateRequest
    request = GenerateRequest(prompt="a fox", dual=DualOptions(start_percent=start, end_percent=end))
    with pytest.raises(ValueError, match=r"dual path: start_percent .* must be below end_percent"):
        request.check(16, 4)


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_cli_under_torchrun_with_two_ulysses_ranks_writes_the_same_clip(model_dir, clip, tmp_path):
    """``torchrun --nproc-per-node 2 ... --ulysses 2`` on CPUs (gloo): the clip of one process."""
    one, done = clip
    two = tmp_path / "two.mp4"
    assert done.returncode == 0, done.stderr[-3000:]
    parallel = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                               "--master-port", str(_free_port()), "-m", "freeswim_core.diffusers",
                               "--model", str(model_dir), *ARGS, "--out", str(two), "--ulysses", "2"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert "2 ranks share each model call's tokens" in parallel.stderr
    assert "4 model calls (1 guide, 1 reuse, 0 dual)" in parallel.stderr
    assert np.array_equal(_frames(two), _frames(one))


def test_cli_ulysses_outside_torchrun_says_how_to_start_it(model_dir, tmp_path):
    done = cli("--model", str(model_dir), *ARGS, "--out", str(tmp_path / "x.mp4"), "--ulysses", "2")
    assert done.returncode == 2
    assert "torchrun --nproc-per-node 2" in done.stderr


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
