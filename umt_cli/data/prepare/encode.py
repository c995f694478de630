"""H.264 writing with PyAV (bundled libx264, no system FFmpeg needed); files appear atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from umt_cli.utils.files import atomic_path

__all__ = ["CODEC", "PIXEL_FORMAT", "h264_options", "write_h264"]

CODEC, PIXEL_FORMAT = "libx264", "yuv420p"


def h264_options(
    *, keyframe_interval: int | None, crf: int, preset: str, x264_options: dict[str, str] | None
) -> dict[str, str]:
    """The encoder options `write_h264` passes to libx264 (so a re-encoded copy can record exactly what made it)."""
    # One thread, and no macroblock-tree rate control: its float SIMD sums depend on buffer alignment, so with it the
    # same frames encode to different bytes from run to run. Without it, the bytes are a function of the input.
    options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": "mbtree=0"}
    if keyframe_interval is not None:
        options.update({"g": str(keyframe_interval), "keyint_min": str(keyframe_interval), "sc_threshold": "0"})
    options.update(x264_options or {})
    return options


def write_h264(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: int,
    width: int,
    height: int,
    keyframe_interval: int | None = None,
    crf: int = 23,
    preset: str = "veryfast",
    x264_options: dict[str, str] | None = None,
) -> int:
    """Encode uint8 (H, W, 3) RGB frames to an H.264 mp4 (yuv420p) and return the number of frames written.

    `keyframe_interval` caps the GOP length (None = the encoder's default, 250, as in raw Kinetics files); scene-cut
    keyframes are off so the interval is exact. The output is identical from run to run (see the options below).
    `x264_options` adds or overrides encoder options (e.g. `{"tune": "fastdecode", "bf": "0"}`).
    """
    import av

    path = Path(path)
    options = h264_options(keyframe_interval=keyframe_interval, crf=crf, preset=preset, x264_options=x264_options)
    count = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(CODEC, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, PIXEL_FORMAT
            for frame in frames:
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                # Convert to yuv420p ourselves: the encoder's implicit conversion made outputs differ between runs.
                video_frame = video_frame.reformat(format=PIXEL_FORMAT)
                video_frame.pts = count
                container.mux(stream.encode(video_frame))
                count += 1
            container.mux(stream.encode(None))
    return count
