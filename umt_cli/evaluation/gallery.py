"""The retrieval test set: which texts and videos are compared and what counts as a correct match.

Ground truth (docs/official-behaviour.md, Retrieval protocol): in `standard` mode every caption is its own text and
a video's correct texts are all of its captions; in `paragraph` mode (DiDeMo, ActivityNet) a video's captions are
joined into one text; with `merge_identical` (SSv2-label / template) identical caption texts become one text whose
correct videos are all the videos that carry it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from umt_cli.data.datasets import MediaEntry
from umt_cli.errors import DataError

__all__ = ["Mode", "MODES", "Gallery", "build_gallery"]

Mode = Literal["standard", "paragraph"]
MODES: tuple[str, ...] = ("standard", "paragraph")


@dataclass(frozen=True)
class Gallery:
    """Texts and videos of a retrieval test.

    Attributes:
        videos: Video paths (relative to the data root), in annotation order.
        texts: Cleaned texts.
        text_videos: For each text, the indices of its correct videos (one, or several with `merge_identical`).
    """

    videos: tuple[str, ...]
    texts: tuple[str, ...]
    text_videos: tuple[tuple[int, ...], ...]

    def t2v_truth(self) -> torch.Tensor:
        """(Nt, Nv) bool: text t's correct videos."""
        truth = torch.zeros((len(self.texts), len(self.videos)), dtype=torch.bool)
        for t, videos in enumerate(self.text_videos):
            truth[t, list(videos)] = True
        return truth

    def without_videos(self, dropped: Sequence[int]) -> tuple[Gallery, int]:
        """The gallery without the videos `dropped` (e.g. undecodable), and how many texts lost every correct
        video and were dropped with them."""
        gone = set(dropped)
        keep = [v for v in range(len(self.videos)) if v not in gone]
        new_index = {old: new for new, old in enumerate(keep)}
        texts, text_videos = [], []
        for text, videos in zip(self.texts, self.text_videos):
            kept = tuple(new_index[v] for v in videos if v in new_index)
            if kept:
                texts.append(text)
                text_videos.append(kept)
        gallery = Gallery(tuple(self.videos[v] for v in keep), tuple(texts), tuple(text_videos))
        return gallery, len(self.texts) - len(texts)


def build_gallery(entries: Sequence[MediaEntry], *, mode: Mode, merge_identical: bool, source: str) -> Gallery:
    """The gallery of an annotation file's entries (videos only).

    Args:
        entries: The annotation file's entries (`load_annotations`: captions already cleaned).
        mode: `standard` (one text per caption) or `paragraph` (a video's captions joined into one text).
        merge_identical: Identical texts become one text whose correct videos are all that carry it.
        source: The annotation file, for messages.

    Raises:
        DataError: No entries, an image entry, a caption that is empty (after cleaning), or the same video listed
            twice (its ground truth would be split); named by entry number (0-based, in file order).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not entries:
        raise DataError(f"{source}: no entries to evaluate")
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries):
        _check_entry(entry, number, seen, source)
        seen[entry.path] = number
    videos = tuple(entry.path for entry in entries)
    if mode == "paragraph":
        pairs = [(" ".join(entry.captions), v) for v, entry in enumerate(entries)]
    else:
        pairs = [(caption, v) for v, entry in enumerate(entries) for caption in entry.captions]
    if not merge_identical:
        return Gallery(videos, tuple(t for t, _ in pairs), tuple((v,) for _, v in pairs))
    merged: dict[str, list[int]] = {}
    for text, v in pairs:
        owners = merged.setdefault(text, [])
        if v not in owners:
            owners.append(v)
    return Gallery(videos, tuple(merged), tuple(tuple(owners) for owners in merged.values()))


def _check_entry(entry: MediaEntry, number: int, seen: dict[str, int], source: str) -> None:
    """An entry must be a video seen for the first time, with no caption that cleans to nothing (an empty query
    would match every video alike)."""
    if entry.is_image:
        raise DataError(f"{source}: entry {number} is an image ({entry.path}); retrieval evaluation takes videos")
    if entry.path in seen:
        raise DataError(
            f"{source}: entry {number} repeats the video {entry.path} (entry {seen[entry.path]}); "
            "list each video once, with all of its captions"
        )
    empty = [i for i, caption in enumerate(entry.captions) if not caption]
    if empty:
        raise DataError(f"{source}: entry {number} ({entry.path}): caption {empty[0]} is empty (after cleaning)")
