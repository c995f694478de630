"""Re-encode videos smaller and with short GOPs (`prepare-data --resize-short-side`), in parallel worker processes.

Raw Kinetics files are up to full HD with keyframes every ~250 frames, so sparse sampling decodes most of a file for
eight frames. A copy with a 256-pixel short side and a keyframe every few frames decodes several times faster.
Only the video stream is kept (training never reads audio); the frame rate and frame count are kept.

A copy's identity is every setting that shapes its bytes (`CopySettings`): the copies of one setting live in a folder
named after them (`short256-gop16-crf23-fastdecode-<hash>`, the hash covering the full encoder options and
`COPY_FORMAT`), with an `encoding.json` that spells the settings out. Changing any setting therefore means a new
folder and fresh copies, never an old copy taken for a new one. Copies appear atomically, so an existing destination
is complete and `reencode_many` skips it: an unchanged re-run encodes nothing and an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from umt_cli.data.decode import DecodeFailure, check_video_file, scaled_size
from umt_cli.data.prepare.encode import CODEC, PIXEL_FORMAT, h264_options, write_h264
from umt_cli.data.prepare.verify import run_isolated
from umt_cli.utils.files import atomic_path
from umt_cli.utils.progress import progress

__all__ = ["COPY_FORMAT", "CopySettings", "copies_folder", "reencode_video", "reencode_many"]


FAST_DECODE = {"tune": "fastdecode", "bf": "0"}
"""x264 settings for copies that decode about twice as fast (CAVLC, no deblocking, no B-frames) for ~25 % more bytes."""
PRESET = "veryfast"
COPY_FORMAT = 1
"""Bump when `reencode_video` writes different bytes for the same settings (scaling, size rounding, kept streams):
the folder name changes with it, so copies of an older umt are not taken for new ones."""
SETTINGS_FILE = "encoding.json"


@dataclass(frozen=True)
class CopySettings:
    """Every setting that shapes the bytes of a re-encoded copy."""

    short_side: int
    keyframe_interval: int
    crf: int
    fast_decode: bool = True

    def encoder_kwargs(self) -> dict[str, object]:
        """The keyword arguments of `write_h264` that these settings fix."""
        x264 = FAST_DECODE if self.fast_decode else None
        return {"keyframe_interval": self.keyframe_interval, "crf": self.crf, "preset": PRESET, "x264_options": x264}

    def record(self) -> dict[str, object]:
        """Everything that shapes a copy, as plain data: the short side and the exact libx264 options."""
        options = h264_options(**self.encoder_kwargs())  # type: ignore[arg-type]
        return {"format": COPY_FORMAT, "short_side": self.short_side, "codec": CODEC, "pixel_format": PIXEL_FORMAT,
                "encoder_options": options}  # fmt: skip

    def folder_name(self) -> str:
        """`short<N>-gop<K>-crf<C>[-fastdecode]-<hash>`: readable, and the hash of `record()` covers the rest."""
        digest = hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:8]
        speed = "-fastdecode" if self.fast_decode else ""
        return f"short{self.short_side}-gop{self.keyframe_interval}-crf{self.crf}{speed}-{digest}"


def copies_folder(parent: Path, settings: CopySettings) -> Path:
    """The folder for copies made with `settings` under `parent`, created with its `encoding.json`."""
    folder = parent / settings.folder_name()
    record = json.dumps(settings.record(), indent=2, sort_keys=True) + "\n"
    path = folder / SETTINGS_FILE
    if not path.is_file() or path.read_text(encoding="utf-8") != record:
        with atomic_path(path) as tmp:
            tmp.write_text(record, encoding="utf-8")
    return folder


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
        DecodeFailure: `src` is missing, empty, truncated, cannot be opened or decoded, or has no frames. Encoding
            errors (a full disk, say) are not decode failures and propagate unchanged.
    """
    import av

    check_video_file(src)  # a truncated source must fail here, not become a complete-looking shorter copy
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
        options = CopySettings(short_side, keyframe_interval, crf, fast_decode).encoder_kwargs()
        frames = itertools.chain([first], frames)
        write_h264(dst, frames, fps=rate, width=width, height=height, **options)  # type: ignore[arg-type]


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
