"""Evaluation clips of a classification list: one `middle` clip per video, or the official clips x crops views.

Unlike training, a video that cannot be decoded is never replaced by another one: that would quietly score a
different test set. The dataset returns a marker instead (`ViewSample.video is None` with the failure reason), and
`iterate_views` drops it from the batch, counts it and names it in `skipped`, so the report can say which videos
the numbers leave out (docs/official-behaviour.md, Classification testing).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from umt_cli.data.datasets import ListEntry
from umt_cli.data.decode import DecodeFailure, ShortRead, open_video
from umt_cli.data.failures import DataHealth, Failure, deadline
from umt_cli.data.sampling import interval_indices, segment_view_indices
from umt_cli.data.transforms import EvalTransform
from umt_cli.errors import UsageError

__all__ = ["SAMPLINGS", "ViewSample", "ViewBatch", "EvalClipDataset", "collate_views", "ViewIterator", "iterate_views"]

SAMPLINGS = ("middle", "segments")
"""`middle`: one clip, the middle frame of `num_frames` equal intervals (the retrieval and stage-2 test sampling).
`segments`: `num_clips` clips offset inside `(n - 1) / num_frames` segments (the official classification test)."""


@dataclass(frozen=True)
class ViewSample:
    """One video's views, or the reason it has none.

    Attributes:
        video: (V, C, T, S, S) float32 views, V = clips x crops in clip-major order; None when the file failed.
        label: The class from the list.
        index: The video's position in the list.
        path: The file that was read.
        reason: Why the file failed (one of `umt_cli.data.decode.FAILURE_REASONS`), None when it did not.
    """

    video: Tensor | None
    label: int
    index: int
    path: str
    reason: str | None = None


@dataclass(frozen=True)
class ViewBatch:
    """The videos of a batch that decoded, and the ones that did not.

    Attributes:
        video: (B, V, C, T, S, S) float32, or None when no video of the batch decoded.
        labels: (B,) long.
        indices: (B,) long positions in the list.
        skipped: (path, reason) of each video left out of the batch.
        failures: The same, as `Failure` records for `DataHealth`.
    """

    video: Tensor | None
    labels: Tensor
    indices: Tensor
    skipped: tuple[tuple[str, str], ...]
    failures: tuple[Failure, ...]


class EvalClipDataset(Dataset):
    """Test views of the videos in a classification list.

    Args:
        entries: `ListEntry`s or `(path, label)` pairs; relative paths are taken under `root`.
        root: Folder the paths are relative to.
        num_frames: T, frames per clip.
        size: S, side of the square crops after resizing the short side to it.
        mean, std: Pixel statistics: a frame is fed as `(x / 255 - mean) / std`.
        sampling: One of `SAMPLINGS`.
        num_clips: Clips per video (`segments` only; `middle` has one).
        num_crops: Crops along the long side per clip (1 = the centre crop).
        backend: Video backend (`auto`, `pyav`, `decord`).
        timeout_s: A video still decoding after this long counts as failed (`timeout`).
    """

    def __init__(
        self,
        entries: Sequence[ListEntry | tuple[str, int]],
        root: str | Path,
        *,
        num_frames: int,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        sampling: str = "middle",
        num_clips: int = 1,
        num_crops: int = 1,
        backend: str = "auto",
        timeout_s: float = 30.0,
    ) -> None:
        _check_views(sampling, num_clips, num_crops, num_frames)
        self.entries = [e if isinstance(e, ListEntry) else ListEntry(str(e[0]), int(e[1])) for e in entries]
        self.root = Path(root)
        self.num_frames, self.sampling, self.num_clips = num_frames, sampling, num_clips
        self.backend, self.timeout_s = backend, timeout_s
        self.transform = EvalTransform(size, num_crops, tuple(mean), tuple(std))

    @property
    def num_views(self) -> int:
        """V = clips x crops."""
        return self.num_clips * self.transform.num_crops

    def __len__(self) -> int:
        return len(self.entries)

    def clip_indices(self, n: int) -> list[list[int]]:
        """The frame indices of each clip of a video of `n` frames: `num_clips` lists of `num_frames`."""
        if self.sampling == "middle":
            return [interval_indices(n, self.num_frames, generator=None)]
        return segment_view_indices(n, self.num_frames, num_clips=self.num_clips, generator=None)

    def __getitem__(self, index: int) -> ViewSample:
        entry = self.entries[index]
        path = self.root / entry.path
        try:
            frames = self._decode(path)  # (clips * T, H, W, C) uint8
        except DecodeFailure as failure:
            return ViewSample(None, entry.label, index, str(path), failure.reason)
        return ViewSample(self._views(frames), entry.label, index, str(path))

    def _decode(self, path: Path) -> np.ndarray:
        """All clips' frames in one read, clip after clip; a file shorter than its header says is resampled within
        the frames that really decode, as training does."""
        with deadline(self.timeout_s, str(path)):
            reader = open_video(path, backend=self.backend)
            try:
                try:
                    return reader.get_batch(_flat(self.clip_indices(reader.num_frames)))
                except ShortRead as short:
                    if short.decodable < 1:
                        raise DecodeFailure("short_video", path, "no frame decodes") from None
                    return reader.get_batch(_flat(self.clip_indices(short.decodable)))
            finally:
                reader.close()

    def _views(self, frames: np.ndarray) -> Tensor:
        """(clips * T, H, W, C) uint8 -> (clips * crops, C, T, S, S) float32, clip-major."""
        clips = []
        for clip in np.split(frames, self.num_clips):
            views = self.transform(clip)  # (C, T, S, S), or (crops, C, T, S, S)
            clips.append(views if views.dim() == 5 else views.unsqueeze(0))
        return torch.cat(clips)  # (V, C, T, S, S)


def _check_views(sampling: str, num_clips: int, num_crops: int, num_frames: int) -> None:
    if sampling not in SAMPLINGS:
        raise UsageError(f"sampling {sampling!r}: expected one of {', '.join(SAMPLINGS)}")
    if sampling == "middle" and num_clips != 1:
        raise UsageError(f"num_clips = {num_clips}: `middle` sampling has one clip; use `segments` for more")
    for name, value in (("num_clips", num_clips), ("num_crops", num_crops), ("num_frames", num_frames)):
        if value < 1:
            raise UsageError(f"{name} = {value}: must be at least 1")


def _flat(clips: list[list[int]]) -> list[int]:
    return [i for clip in clips for i in clip]


def collate_views(samples: list[ViewSample]) -> ViewBatch:
    """Stack the samples that decoded; list the ones that did not."""
    good = [s for s in samples if s.video is not None]
    bad = [s for s in samples if s.video is None]
    return ViewBatch(
        video=torch.stack([s.video for s in good]) if good else None,  # (B, V, C, T, S, S)
        labels=torch.tensor([s.label for s in good], dtype=torch.long),
        indices=torch.tensor([s.index for s in good], dtype=torch.long),
        skipped=tuple((s.path, str(s.reason)) for s in bad),
        failures=tuple(Failure(s.index, str(s.reason), s.path) for s in bad),
    )


class ViewIterator:
    """Iterates `(video (B, V, C, T, S, S), labels (B,), indices (B,))` over a dataset in list order, leaving out the
    videos that fail; after (or during) the loop, `skipped` names them and `health` counts them.

    Args:
        dataset: The evaluation views.
        batch_size: Videos per batch (fewer when some fail).
        num_workers: DataLoader worker processes (0 = decode in this process).
        health: Counters to update (a fresh `DataHealth` by default); nothing here stops the run, the caller
            decides with `health.check(final=True)`.
    """

    def __init__(
        self, dataset: EvalClipDataset, batch_size: int, num_workers: int = 0, *, health: DataHealth | None = None
    ) -> None:
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.health = health if health is not None else DataHealth()
        self.skipped: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        self.skipped = []  # of this pass (`health` keeps counting across passes)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,  # list order: results line up with the list, and runs compare file by file
            num_workers=self.num_workers,
            collate_fn=collate_views,
        )
        for batch in loader:
            self.skipped.extend(batch.skipped)
            self.health.update(len(batch.labels), list(batch.failures))
            if batch.video is not None:
                yield batch.video, batch.labels, batch.indices


def iterate_views(dataset: EvalClipDataset, batch_size: int, num_workers: int = 0) -> ViewIterator:
    """Batches of test views in list order; read `.skipped` (path, reason) and `.health` for the videos left out.

    Example:
        views = iterate_views(dataset, batch_size=8, num_workers=4)
        for video, labels, indices in views:  # video (B, V, C, T, S, S)
            ...
        report(views.skipped)
    """
    return ViewIterator(dataset, batch_size, num_workers)
