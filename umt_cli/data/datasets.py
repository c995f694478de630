"""Datasets of video clips: classification lists and video-text annotations.

A bad sample (missing, empty, truncated or undecodable file, too few frames, decode past the deadline) never
crashes an epoch: it is replaced by another index drawn from a generator seeded by (seed, epoch, index, attempt), so
the replacement is the same in every run, and the failure travels with the batch to be counted in the main process.

Indices may be plain ints or `(epoch, index)` pairs (what `ShardedSampler` yields), so per-sample randomness follows
the epoch even with persistent workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from umt_cli.data.decode import ArrayReader, DecodeFailure, FrameCache, ShortRead, open_video, read_image
from umt_cli.data.failures import Failure, deadline
from umt_cli.data.sampling import FrameSampler
from umt_cli.data.text import clean_caption
from umt_cli.data.textfiles import json_records, read_text
from umt_cli.errors import DataError, UsageError
from umt_cli.utils.seed import generator_for

__all__ = [
    "ListEntry",
    "MediaEntry",
    "ClipSample",
    "VideoTextSample",
    "parse_video_list",
    "load_annotations",
    "ClipLoader",
    "VideoListDataset",
    "VideoTextDataset",
    "list_root",
    "build_train_dataset",
]

ClipTransform = Callable[[np.ndarray, torch.Generator], torch.Tensor]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"}


@dataclass(frozen=True)
class ListEntry:
    """A line of a classification list."""

    path: str
    label: int


@dataclass(frozen=True)
class MediaEntry:
    """An entry of a video-text annotation file; images are 1-frame videos."""

    path: str
    is_image: bool
    captions: tuple[str, ...]


@dataclass(frozen=True)
class ClipSample:
    """One training clip: video float32 (C, T, H, W)."""

    video: torch.Tensor
    label: int
    index: int
    failures: tuple[Failure, ...] = ()


@dataclass(frozen=True)
class VideoTextSample:
    """One (clip, caption) pair: video float32 (C, T, H, W); `media_index` identifies the clip (VTC positives)."""

    video: torch.Tensor
    caption: str
    media_index: int
    is_image: bool
    index: int
    failures: tuple[Failure, ...] = ()


def parse_video_list(path: str | Path) -> list[ListEntry]:
    """Read `path,label` lines (or `path label`), as the official loader does: the label is the last field, and a
    path whose basename has no `.` gets `.mp4` appended. Blank lines are skipped; a bad line is a `DataError`."""
    entries = []
    for number, line in enumerate(read_text(path, what="video list").splitlines(), start=1):
        if not line.strip():
            continue
        sep = "," if "," in line else None
        parts = line.strip().rsplit(sep, 1)
        try:
            video, label = parts[0].strip(), int(parts[1])
        except (IndexError, ValueError):
            raise DataError(f"{path} line {number}: expected `path,label`, got {line[:200]!r}") from None
        if "." not in os.path.basename(video):
            video += ".mp4"
        entries.append(ListEntry(video, label))
    if not entries:
        raise DataError(f"{path}: the list is empty")
    return entries


def load_annotations(path: str | Path) -> list[MediaEntry]:
    """Read a video-text annotation file: a JSON list, or JSON lines, of `{"video"|"image": path, "caption": str |
    [str, ...]}`. Captions are cleaned (`clean_caption`); entries without a caption are errors."""
    path = Path(path)
    items = json_records(path, read_text(path, what="annotations"))
    return [_media_entry(item, path, number) for number, item in enumerate(items)]


def _media_entry(item: object, path: Path, number: int) -> MediaEntry:
    if not isinstance(item, dict) or ("video" in item) == ("image" in item):
        raise DataError(f"{path}: entry {number} needs exactly one of `video` or `image`")
    caption = item.get("caption")
    captions = [caption] if isinstance(caption, str) else caption
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise DataError(f"{path}: entry {number} needs `caption` as a string or a non-empty list of strings")
    is_image = "image" in item
    return MediaEntry(str(item["image" if is_image else "video"]), is_image, tuple(clean_caption(c) for c in captions))


@dataclass(frozen=True)
class ClipLoader:
    """Decodes the frames of one sample: opens the reader here (inside the worker), samples indices, retries a
    short read within the frames that really decode, and enforces the per-sample deadline.

    With `cache_mb` > 0, each file is decoded whole once and kept in memory (per process) until that many MiB are
    used; later draws sample from memory and give the same pixels as the file would."""

    sampler: FrameSampler
    backend: str = "auto"
    short_side: int | None = None
    timeout_s: float = 30.0
    min_frames: int = 1
    status_dir: str | Path | None = None
    cache_mb: int = 0
    cache: FrameCache | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.cache_mb and self.cache is None:
            object.__setattr__(self, "cache", FrameCache(self.cache_mb * 2**20))  # frozen: set once, here

    def video(self, path: Path, generator: torch.Generator) -> np.ndarray:
        """uint8 (T, H, W, C) frames of a video."""
        cached = self.cache.get(path) if self.cache is not None else None
        if cached is not None:
            return self._frames(ArrayReader(cached), path, generator)
        self._announce(path)
        with deadline(self.timeout_s, str(path)):
            reader = open_video(path, backend=self.backend, short_side=self.short_side)
            try:
                return self._frames(self._whole(reader, path), path, generator)
            finally:
                reader.close()

    def image(self, path: Path) -> np.ndarray:
        """uint8 (1, H, W, C) frames of an image."""
        cached = self.cache.get(path) if self.cache is not None else None
        if cached is not None:
            return cached.copy()  # the transform may write into it
        self._announce(path)
        with deadline(self.timeout_s, str(path)):
            image = read_image(path, short_side=self.short_side)
        if self.cache is not None and not self.cache.full:
            self.cache.put(path, image.copy())
        return image

    def _whole(self, reader: object, path: Path) -> object:
        """The reader, or, while the cache has room, the whole video decoded into it (an `ArrayReader`); a video
        that does not decode to the end is read from the file as without the cache."""
        if self.cache is None or self.cache.full:
            return reader
        try:
            frames = reader.get_batch(range(reader.num_frames))  # type: ignore[attr-defined]  # (N, H, W, C)
        except ShortRead:
            return reader
        self.cache.put(path, frames)
        return ArrayReader(frames, reader.fps)  # type: ignore[attr-defined]

    def _frames(self, reader: object, path: Path, generator: torch.Generator) -> np.ndarray:
        n = reader.num_frames  # type: ignore[attr-defined]
        if n < self.min_frames:
            raise DecodeFailure("short_video", path, f"{n} frames < {self.min_frames}")
        state = generator.get_state()
        try:
            return reader.get_batch(self.sampler(n, generator))  # type: ignore[attr-defined]
        except ShortRead as short:
            if short.decodable < self.min_frames:
                raise DecodeFailure("short_video", path, f"only {short.decodable} frames decode") from None
            generator.set_state(state)  # resample as if the file had been that long to begin with
            return reader.get_batch(self.sampler(short.decodable, generator))  # type: ignore[attr-defined]

    def _announce(self, path: Path) -> None:
        """Tell the main process which file this worker decodes, so a hung decoder can be named."""
        if self.status_dir is None:
            return
        info = torch.utils.data.get_worker_info()
        name = Path(self.status_dir) / f"worker-{info.id if info else 'main'}"
        name.write_text(str(path), encoding="utf-8")


class _RobustDataset(Dataset):
    """Replacement-on-failure logic shared by the two datasets: `loader` decodes a sample's frames, `transform`
    turns them into a tensor, `seed` drives every random choice, `max_retries` bounds replacements in a row."""

    def __init__(
        self, root: str | Path, *, loader: ClipLoader, transform: ClipTransform, seed: int = 0, max_retries: int = 10
    ) -> None:
        self.root, self.loader, self.transform = Path(root), loader, transform
        self.seed, self.max_retries = seed, max_retries

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, current: int, generator: torch.Generator, *, index: int, failures: tuple) -> object:
        """Build the sample for entry `current`, reported as sample `index` (they differ after a replacement)."""
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> object:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        failures: list[Failure] = []
        current = index
        for attempt in range(self.max_retries + 1):
            generator = generator_for(self.seed, epoch, index, attempt)
            try:
                return self._load(current, generator, index=index, failures=tuple(failures))
            except DecodeFailure as failure:
                failures.append(Failure(current, failure.reason, str(failure.path)))
                replace = generator_for(self.seed, epoch, index, attempt, 1)
                current = int(torch.randint(len(self), (1,), generator=replace))
        raise DataError(
            f"{len(failures)} clips in a row failed to load while replacing sample {index} "
            f"(decode.max_retries = {self.max_retries}); first: {failures[0].reason}: {failures[0].path}"
        )


class VideoListDataset(_RobustDataset):
    """Clips from a classification list (`path,label` lines), for stage 1 and action recognition."""

    def __init__(self, list_file: str | Path, root: str | Path, **options: Any) -> None:
        """`options`: loader, transform, seed, max_retries (see `_RobustDataset`)."""
        super().__init__(root, **options)
        self.entries = parse_video_list(list_file)

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, current: int, generator: torch.Generator, *, index: int, failures: tuple) -> ClipSample:
        entry = self.entries[current]
        frames = self.loader.video(self.root / entry.path, generator)
        return ClipSample(self.transform(frames, generator), entry.label, index, failures)


class VideoTextDataset(_RobustDataset):
    """(clip, caption) pairs from a video-text annotation file; every caption of a clip is its own sample."""

    def __init__(
        self, annotations: str | Path, root: str | Path, *, images: bool | None = None, **options: Any
    ) -> None:
        """`images`: keep only images (True) or only videos (False), as stage 2 batches them apart; None = both.
        `options`: loader, transform, seed, max_retries (see `_RobustDataset`)."""
        super().__init__(root, **options)
        self.media = load_annotations(annotations)
        self.pairs = [
            (m, c)
            for m, entry in enumerate(self.media)
            if images is None or entry.is_image == images
            for c in range(len(entry.captions))
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, current: int, generator: torch.Generator, *, index: int, failures: tuple) -> VideoTextSample:
        media_index, caption_index = self.pairs[current]
        entry = self.media[media_index]
        path = self.root / entry.path
        frames = self.loader.image(path) if entry.is_image else self.loader.video(path, generator)
        video = self.transform(frames, generator)
        return VideoTextSample(video, entry.captions[caption_index], media_index, entry.is_image, index, failures)


def list_root(list_file: str | Path, root: str | Path | None) -> Path:
    """The folder a list's paths are relative to: `root` if given, else the folder named in `videos_root.txt` beside
    the list (what `prepare-data kinetics710` records), else the list's own folder."""
    if root is not None:
        return Path(root)
    recorded = Path(list_file).parent / "videos_root.txt"
    if not recorded.is_file():
        return Path(list_file).parent
    text = read_text(recorded, what="videos_root.txt").strip()
    if not text or "\n" in text:
        # An empty file would silently mean the current folder, and two lines are no single folder.
        raise DataError(f"{recorded}: expected one line naming the folder the list's paths are relative to")
    return Path(text)


def require_file(key: str, path: str | Path, what: str = "file") -> None:
    """A recipe's input file must exist before any model is built: otherwise a usage error named by its key."""
    if not Path(path).is_file():
        raise UsageError(f"{key}: {path} {f'is a folder, not a {what}' if Path(path).is_dir() else 'not found'}")


def recipe_clip_loader(recipe: object, *, num_frames: int, status_dir: str | Path | None) -> ClipLoader:
    """The training `ClipLoader` of a recipe (`[decode]`, `[sampling]`, `data.min_frames`) for `num_frames`."""
    from umt_cli.data.sampling import build_frame_sampler

    decode = recipe.decode  # type: ignore[attr-defined]
    return ClipLoader(
        sampler=build_frame_sampler(recipe.sampling, num_frames, train=True),  # type: ignore[attr-defined]
        backend=decode.backend,
        short_side=decode.short_side,
        timeout_s=decode.sample_timeout_s,
        min_frames=recipe.data.min_frames,  # type: ignore[attr-defined]
        status_dir=status_dir,
        cache_mb=decode.cache_mb,
    )


def build_train_dataset(recipe: object, *, status_dir: str | Path | None = None) -> VideoListDataset:
    """The training clips of a distill recipe (`[data]`, `[decode]`, `[sampling]`, `[augment]`, `[student]`)."""
    from umt_cli.data.transforms import build_train_transform

    data, decode, student = recipe.data, recipe.decode, recipe.student  # type: ignore[attr-defined]
    require_file("data.train_list", data.train_list, "list file")
    loader = recipe_clip_loader(recipe, num_frames=student.num_frames, status_dir=status_dir)
    transform = build_train_transform(recipe.augment, student.img_size)  # type: ignore[attr-defined]
    return VideoListDataset(
        data.train_list,
        list_root(data.train_list, data.root),
        loader=loader,
        transform=transform,
        seed=recipe.run.seed,  # type: ignore[attr-defined]
        max_retries=decode.max_retries,
    )
