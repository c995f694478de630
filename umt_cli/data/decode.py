"""Video readers behind one small protocol: `num_frames`, `fps`, `get_batch(indices) -> uint8 (T, H, W, C)`.

Backends: `pyav` and `decord` (also covers decord2, which imports as `decord`); `auto` picks PyAV, which
`benchmarks/bench_data.py` measured faster than decord through this pipeline on raw and on re-encoded clips, and
which has wheels everywhere. Readers are opened per sample, inside the DataLoader worker, with one decode thread
(decord deadlocks when a reader crosses a fork: dmlc/decord#294). Failures raise `DecodeFailure` with a reason the
datasets count. A file cut short is recognised from its container before either backend reads it
(`truncation.find_truncation`), so it counts as "truncated" whichever backend is used.
"""

from __future__ import annotations

import bisect
import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from umt_cli.data.truncation import find_truncation

__all__ = [
    "DecodeFailure",
    "ShortRead",
    "FAILURE_REASONS",
    "VideoReader",
    "available_backends",
    "resolve_backend",
    "check_video_file",
    "open_video",
    "read_image",
    "probe_size",
    "scaled_size",
    "clamp_indices",
]

FAILURE_REASONS = ("missing", "empty", "truncated", "open_fail", "decode_fail", "short_video", "timeout")
"""Why a sample can fail; each is counted separately. "truncated": the container declares more bytes than the file
holds (an interrupted download), told apart from "open_fail" (unreadable) and "decode_fail" (damaged data)."""


class DecodeFailure(Exception):
    """A video (or image) that cannot be used; `reason` is one of `FAILURE_REASONS`."""

    def __init__(self, reason: str, path: str | Path, detail: str = "") -> None:
        assert reason in FAILURE_REASONS, reason
        self.reason, self.path, self.detail = reason, str(path), detail
        super().__init__(f"{reason}: {path}" + (f" ({detail})" if detail else ""))


class ShortRead(DecodeFailure):
    """Decoding stopped before a wanted frame; `decodable` frames did decode, so the caller may resample within them."""

    def __init__(self, path: str | Path, decodable: int, detail: str = "") -> None:
        super().__init__("decode_fail", path, detail)
        self.decodable = decodable


class VideoReader(Protocol):
    """An open video. Frame indices are 0-based in presentation order."""

    num_frames: int
    fps: float

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at `indices` (any order, repeats allowed) as uint8 (T, H, W, C) RGB."""

    def close(self) -> None:
        """Release the file."""


class ArrayReader:
    """A `VideoReader` over frames already in memory (`FrameCache`): the same indices give the same pixels as the
    file's reader, since those frames came from it."""

    def __init__(self, frames: np.ndarray, fps: float = 0.0) -> None:
        self.frames, self.fps = frames, fps  # (N, H, W, C) uint8
        self.num_frames = len(frames)

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        return self.frames[clamp_indices(indices, self.num_frames)]  # (T, H, W, C), a copy (fancy indexing)

    def close(self) -> None:
        pass


class FrameCache:
    """Whole decoded videos (or images) kept in memory by path, up to `budget_bytes`; once full it keeps what it
    has and stores nothing more (no eviction: for data sets that fit, such as the quickstart's, each file is decoded
    once per process instead of once per draw)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget, self.used, self._frames = budget_bytes, 0, {}
        self.full = False  # set by the first item that did not fit: no more whole-file decodes after that

    def get(self, path: Path) -> np.ndarray | None:
        return self._frames.get(path)

    def put(self, path: Path, frames: np.ndarray) -> None:
        if self.used + frames.nbytes > self.budget:
            self.full = True
            return
        self._frames[path] = frames
        self.used += frames.nbytes


def available_backends() -> list[str]:
    """Installed backends, in the order `auto` tries them: PyAV (faster here, wheels everywhere), then decord."""
    return [b for b, module in (("pyav", "av"), ("decord", "decord")) if importlib.util.find_spec(module)]


def resolve_backend(name: str) -> str:
    """Map `auto` to the first installed backend; check an explicit one is installed."""
    available = available_backends()
    if name == "auto":
        if not available:
            raise ImportError("no video backend installed: pip install av (or decord on Linux x86_64)")
        return available[0]
    if name not in ("decord", "pyav"):
        raise ValueError(f"unknown video backend {name!r}; expected auto, decord or pyav")
    if name not in available:
        raise ImportError(f"video backend {name!r} is not installed")
    return name


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to `short_side`, keeping the aspect ratio (even sizes)."""
    if not short_side or min(width, height) == short_side:
        return width, height
    scale = short_side / min(width, height)
    w, h = (short_side, round(height * scale)) if width <= height else (round(width * scale), short_side)
    return w + (w % 2), h + (h % 2)


def clamp_indices(indices: Sequence[int], num_frames: int) -> list[int]:
    """Clamp indices into [0, num_frames - 1] (samplers may round past the end of over-reported videos)."""
    return [min(max(int(i), 0), num_frames - 1) for i in indices]


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DecodeFailure("missing", path)
    if path.stat().st_size == 0:
        raise DecodeFailure("empty", path)


def check_video_file(path: Path) -> None:
    """Raise `DecodeFailure` for a missing, empty or truncated video, before any decoder sees it."""
    _check_file(path)
    try:
        cut = find_truncation(path)
    except OSError as error:
        raise DecodeFailure("open_fail", path, str(error)) from None
    if cut is not None:
        raise DecodeFailure("truncated", path, cut)


def probe_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a video's first stream, read from its header without decoding."""
    import av

    try:
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            return ctx.width, ctx.height
    except (av.FFmpegError, IndexError, OSError) as error:
        raise DecodeFailure("open_fail", path, str(error)) from None


def open_video(path: str | Path, *, backend: str = "auto", short_side: int | None = None) -> VideoReader:
    """Open a video for frame access; `short_side` downscales while decoding (fewer pixels for later transforms).

    Raises:
        DecodeFailure: The file is missing, empty, truncated (whatever the backend), cannot be opened, or has no
            frames.
    """
    path = Path(path)
    check_video_file(path)
    if path.suffix.lower() == ".gif":  # what text-to-video models often write; no video backend needed
        reader: VideoReader = GifReader(path, short_side)
    else:
        name = resolve_backend(backend)
        reader = DecordReader(path, short_side) if name == "decord" else PyAVReader(path, short_side)
    if reader.num_frames <= 0:
        reader.close()
        raise DecodeFailure("short_video", path, "no frames")
    return reader


def read_image(path: str | Path, *, short_side: int | None = None) -> np.ndarray:
    """An image as a 1-frame video: uint8 (1, H, W, C) RGB."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            size = scaled_size(*image.size, short_side)
            if size != image.size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            return np.array(image)[None]  # a writable copy (torch refuses read-only arrays)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DecodeFailure("decode_fail", path, str(error)) from None


class GifReader:
    """An animated GIF read with Pillow: each frame as Pillow composes it (disposal applied), RGBA with the alpha
    channel dropped (the FETV protocol's RGBA -> RGB). `fps` comes from the first frame's duration (0 if none)."""

    def __init__(self, path: Path, short_side: int | None = None) -> None:
        from PIL import Image, UnidentifiedImageError

        self.path, self.short_side = path, short_side
        try:
            self._image = Image.open(path)
            self.num_frames = int(getattr(self._image, "n_frames", 1))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DecodeFailure("open_fail", path, str(error)) from None
        duration = self._image.info.get("duration") or 0
        self.fps = 1000.0 / duration if duration > 0 else 0.0

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        wanted = clamp_indices(indices, self.num_frames)
        frames = {}
        try:
            for index in sorted(set(wanted)):  # Pillow composes GIF frames in order: seek forward only
                self._image.seek(index)
                frames[index] = self._to_array(self._image.convert("RGBA"))
        except (OSError, ValueError, EOFError) as error:
            raise DecodeFailure("decode_fail", self.path, str(error)) from None
        return np.stack([frames[i] for i in wanted])  # (T, H, W, 3)

    def _to_array(self, frame: object) -> np.ndarray:
        from PIL import Image

        size = scaled_size(*frame.size, self.short_side)  # type: ignore[attr-defined]
        if size != frame.size:  # type: ignore[attr-defined]
            frame = frame.resize(size, Image.Resampling.BILINEAR)  # type: ignore[attr-defined]
        return np.asarray(frame)[..., :3]

    def close(self) -> None:
        self._image.close()


class DecordReader:
    """decord reader with one thread; a failing read is retried with PyAV, which knows the decodable count."""

    def __init__(self, path: Path, short_side: int | None = None) -> None:
        import decord

        self.path, self.short_side = path, short_side
        size = {}
        if short_side:
            w, h = scaled_size(*probe_size(path), short_side)
            size = {"width": w, "height": h}
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **size)
        except (decord.DECORDError, RuntimeError) as error:
            raise DecodeFailure("open_fail", path, str(error).splitlines()[0][:200]) from None
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps() or 0.0)

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        import decord

        try:
            return self._vr.get_batch(clamp_indices(indices, self.num_frames)).asnumpy()
        except (decord.DECORDError, RuntimeError):
            # Over-reported length or a damaged tail: PyAV indexes the packets really there.
            with PyAVReader(self.path, self.short_side) as fallback:
                if max(indices) >= fallback.num_frames:
                    raise ShortRead(self.path, fallback.num_frames, "the header over-reports frames") from None
                return fallback.get_batch(indices)

    def close(self) -> None:
        self._vr = None

    def __enter__(self) -> DecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PyAVReader:
    """PyAV reader: demuxes the packet index once, then seeks to the keyframe before each wanted frame only when
    that skips decoding, so sparse sampling costs about one GOP per frame instead of the whole file."""

    def __init__(self, path: Path, short_side: int | None = None) -> None:
        import av

        self.path = path
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "SLICE"
            self._stream.codec_context.thread_count = 1
            self._pts, keyframe_pts = self._index_packets()
        except (av.FFmpegError, IndexError, OSError) as error:
            self.close()
            raise DecodeFailure("open_fail", path, str(error)) from None
        self._keyframes = sorted(self._rank(p) for p in keyframe_pts) or [0]
        self._frames, self._position = None, 0  # decode generator and index of the next frame it yields
        self._wanted: set[int] = set()
        self.num_frames = len(self._pts)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        ctx = self._stream.codec_context
        self._size = scaled_size(ctx.width, ctx.height, short_side) if short_side else None

    def _index_packets(self) -> tuple[list[int], list[int]]:
        """Presentation timestamps of all frames (sorted) and of the keyframes, from packets, without decoding."""
        pts, keys = [], []
        for packet in self._container.demux(self._stream):
            if packet.size and packet.pts is not None:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        self._container.seek(0, stream=self._stream)
        return sorted(pts), keys

    def _rank(self, pts: int) -> int:
        """Frame index of a timestamp (its position in presentation order)."""
        return bisect.bisect_left(self._pts, pts)

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        import av

        wanted = clamp_indices(indices, self.num_frames)
        frames = self._decode(sorted(set(wanted)), av)  # sorted: a single forward pass over the file
        return np.stack([frames[i] for i in wanted])

    def _decode(self, targets: list[int], av: object) -> dict[int, np.ndarray]:
        wanted, out = set(targets), {}
        self._wanted.clear()
        self._wanted.update(wanted)  # in place: a paused frame generator holds this very set
        for target in targets:
            keyframe = self._keyframes[bisect.bisect_right(self._keyframes, target) - 1]
            # Seek only when it skips frames we would otherwise decode and drop, or to go back in the file.
            if self._frames is None or keyframe > self._position or target < self._position:
                if keyframe > 0 or self._frames is not None:
                    self._container.seek(self._pts[keyframe], stream=self._stream, backward=True, any_frame=False)
                # A paused generator keeps its buffered frames.
                self._frames = _decoded_frames(self._container, self._stream, self._pts, self._wanted)
                self._position = keyframe
            try:
                for frame in self._frames:
                    index = self._rank(frame.pts) if frame.pts is not None else self._position
                    self._position = index + 1
                    if index in wanted and index not in out:
                        out[index] = self._to_array(frame)
                    if index >= target:
                        break
            except av.FFmpegError as error:  # type: ignore[attr-defined]
                raise ShortRead(self.path, self._position, str(error)) from None
            if target not in out:  # the stream ended early: truncated, or the header over-reports frames
                raise ShortRead(self.path, self._position, f"frame {target} of {self.num_frames} not decodable")
        return out

    def _to_array(self, frame: object) -> np.ndarray:
        if self._size is None:
            return frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]
        w, h = self._size
        return frame.to_ndarray(format="rgb24", width=w, height=h)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Free the decoder and file now. A paused frame generator holds the codec context, and FFmpeg state left
        for the garbage collector can be freed in a forked DataLoader worker, where its threads do not exist: the
        worker then hangs or crashes."""
        frames = getattr(self, "_frames", None)
        if frames is not None:
            frames.close()
            self._frames = None
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None
        self._stream = None

    def __enter__(self) -> PyAVReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decoded_frames(container: object, stream: object, pts: list[int], wanted: set[int]) -> Iterator[object]:
    """Frames from the container's current position. Packets of frames nobody wants are decoded with
    `skip_frame=NONREF`: the decoder then drops them when no other frame refers to them (most B-frames), which saves
    about a quarter of the work in long GOPs and never changes a frame that is kept.

    A function, not a method: a generator holding its reader would make a reference cycle, leaving the FFmpeg state
    of an unclosed reader to the garbage collector instead of freeing it when the reader goes (see `close`).
    """
    ctx = stream.codec_context  # type: ignore[attr-defined]
    for packet in container.demux(stream):  # type: ignore[attr-defined]
        index = bisect.bisect_left(pts, packet.pts) if packet.pts is not None else None
        ctx.skip_frame = "NONREF" if index is not None and index not in wanted else "DEFAULT"
        yield from packet.decode()


def default_workers() -> int:
    """One process per available core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
