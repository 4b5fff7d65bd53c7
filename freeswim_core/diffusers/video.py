"""Writing a generated clip to a video file with PyAV."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def to_uint8_frames(frames) -> np.ndarray:
    """``[F, H, W, 3]`` uint8 from what a diffusers pipeline returns for one video: float frames in
    [0, 1] (``output_type="np"``) or a list of PIL images."""
    if isinstance(frames, np.ndarray):
        array = frames
    else:
        array = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected frames [F, H, W, 3], got shape {array.shape}")
    return array


def write_video(frames, path, fps: int = 16, crf: int = 18) -> Path:
    """Write ``frames`` (see :func:`to_uint8_frames`) to ``path`` as H.264 (yuv420p, so width and
    height are rounded down to even numbers), or MPEG-4 part 2 where this PyAV has no H.264 encoder."""
    import av
    array = to_uint8_frames(frames)
    height, width = array.shape[1] // 2 * 2, array.shape[2] // 2 * 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        if "libx264" in av.codecs_available:
            stream = container.add_stream("libx264", rate=fps)
            stream.options = {"crf": str(crf)}
        else:                                   # an FFmpeg build without libx264
            stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in array:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:height, :width]), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
