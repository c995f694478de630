"""Re-encode videos smaller and with short GOPs (`prepare-data --resize-short-side`), in parallel worker processes.

Raw Kinetics files are up to full HD with keyframes every ~250 frames, so sparse sampling decodes most of a file for
eight frames. A copy with a 256-pixel short side and a keyframe every few frames decodes several times faster.
Only the video stream is kept (training never reads audio); the frame rate and frame count are kept. Copies appear
atomically, so an existing destination is complete and `reencode_many` skips it: an interrupted run resumes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from umt_cli.data.decode import DecodeFailure, scaled_size
from umt_cli.data.prepare.encode import write_h264
from umt_cli.data.prepare.verify import run_isolated
from umt_cli.utils.progress import progress

__all__ = ["reencode_video", "reencode_many"]


FAST_DECODE = {"tune": "fastdecode", "bf": "0"}
"""x264 settings for copies that decode about twice as fast (CAVLC, no deblocking, no B-frames) for ~25 % more bytes."""


def reencode_video(
    src: Path, dst: Path, *, short_side: int, keyframe_interval: int, crf: int, fast_decode: bool = True
) -> None:
    """Write `src` as H.264 to `dst` with its shorter side scaled to `short_side` (sizes rounded up to even).

    Args:
        src: The source video.
        dst: The copy to write (atomically; parent folders are created).
        short_side: Pixels of the shorter side of the copy.
        keyframe_interval: Frames between keyframes of the copy.
        crf: x264 quality (lower = better, larger).
        fast_decode: Encode for decoding speed (`FAST_DECODE`).

    Raises:
        DecodeFailure: `src` is missing, cannot be opened or decoded, or has no frames. Encoding errors (a full
            disk, say) are not decode failures and propagate unchanged.
    """
    import av

    if not src.is_file():
        raise DecodeFailure("missing", src)
    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError) as error:
        raise DecodeFailure("open_fail", src, str(error)) from None
    with container:
        if not container.streams.video:
            raise DecodeFailure("open_fail", src, "no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        ctx = stream.codec_context
        width, height = (side + side % 2 for side in scaled_size(ctx.width, ctx.height, short_side))
        rate = stream.average_rate or stream.guessed_rate or 30
        frames = _decoded(container, stream, src, width, height)
        first = next(frames, None)
        if first is None:
            raise DecodeFailure("short_video", src, "no frames")
        options = {
            "keyframe_interval": keyframe_interval,
            "crf": crf,
            "x264_options": FAST_DECODE if fast_decode else None,
        }
        write_h264(dst, itertools.chain([first], frames), fps=rate, width=width, height=height, **options)


def _decoded(container: object, stream: object, src: Path, width: int, height: int) -> Iterator[np.ndarray]:
    """RGB frames scaled to (width, height); a decoding error becomes a `DecodeFailure`."""
    import av

    try:
        for frame in container.decode(stream):  # type: ignore[attr-defined]
            yield frame.to_ndarray(format="rgb24", width=width, height=height)
    except av.FFmpegError as error:
        raise DecodeFailure("decode_fail", src, str(error)) from None


def _reencode_pair(pair: tuple[Path, Path], **settings: int | bool) -> str | None:
    """Worker task: None when `pair`'s copy was written, else the reason it could not be."""
    src, dst = pair
    try:
        reencode_video(src, dst, **settings)
    except DecodeFailure as failure:
        return failure.reason
    return None


def reencode_many(
    pairs: Sequence[tuple[Path, Path]],
    *,
    short_side: int,
    keyframe_interval: int,
    crf: int,
    workers: int,
    fast_decode: bool = True,
) -> dict[Path, str | None]:
    """Re-encode (src, dst) pairs in parallel processes, skipping pairs whose dst already exists.

    Args:
        pairs: (source, destination) paths.
        short_side: Pixels of the shorter side of the copies.
        keyframe_interval: Frames between keyframes of the copies.
        crf: x264 quality.
        fast_decode: Encode for decoding speed (`FAST_DECODE`).
        workers: Worker processes; 0 = one per core.

    Returns:
        Every source mapped to None (its copy exists) or the reason it could not be re-encoded; a worker that
        crashes reports "decode_fail".
    """
    todo = [(src, dst) for src, dst in pairs if not dst.exists()]
    results: dict[Path, str | None] = {src: None for src, _ in pairs}
    settings = {
        "short_side": short_side,
        "keyframe_interval": keyframe_interval,
        "crf": crf,
        "fast_decode": fast_decode,
    }
    task = partial(_reencode_pair, **settings)
    with progress("re-encode videos", len(todo)) as bar:
        done = run_isolated(task, todo, workers=workers, on_result=lambda _pair, _result: bar.advance())
    results.update({src: reason for (src, _dst), reason in done.items()})
    return results
