"""Evaluation features of videos and texts, sharded over processes with results that do not depend on how many.

Work is cut into blocks of `batch_size` items over the whole set, and blocks are dealt to processes in turn; a block
is always computed as one batch, so every item's numbers are the same whether one process or eight ran
(batch composition can change the last bits of a matrix product). Results are assembled on every process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from umt_cli.data.decode import DecodeFailure, open_video
from umt_cli.data.failures import deadline
from umt_cli.data.sampling import interval_indices, linspace_indices
from umt_cli.data.text import tokenize
from umt_cli.data.transforms import normalize, resize_square, to_tchw
from umt_cli.models.config import Preprocess
from umt_cli.utils.dist import gather_objects, gather_rows
from umt_cli.utils.progress import Progress

__all__ = [
    "Shard",
    "ClipReader",
    "ClipBlocks",
    "blocks_loader",
    "clip_batch",
    "finishing_on",
    "VideoFeatures",
    "TextFeatures",
    "encode_videos",
    "encode_texts",
    "frame_similarity",
]

TRIM_SECONDS = 30.0
"""`trimmed30` keeps the first 30 s of a video (official DiDeMo protocol)."""


@dataclass(frozen=True)
class Shard:
    """This process's part of the work: blocks of `batch_size` items dealt round-robin over `world` processes."""

    rank: int = 0
    world: int = 1

    def blocks(self, total: int, batch_size: int) -> list[list[int]]:
        """The item indices of this process's blocks, in order: block b covers items [b·batch_size, (b+1)·batch_size)
        and goes to process b mod world, so the blocks themselves never depend on `world`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(self.rank * batch_size, total, self.world * batch_size)
        return [list(range(start, min(start + batch_size, total))) for start in starts]


@dataclass(frozen=True)
class ClipReader:
    """Decodes one evaluation clip: `num_frames` frames sampled as `preprocess.sampling` says (optionally within the
    first 30 s), resized as `preprocess` says (`antialias`ed if asked), normalised. Returns float32 (C, T, S, S).

    With `defer_resize` it returns the sampled frames as decoded, uint8 (T, C, H, W), and `finish` does the rest
    where the model runs (`clip_batch`): on a GPU the bicubic resize in the decode workers, about 50 ms a 12-frame
    clip on one core, would otherwise bound the throughput. On one device the numbers are the same either way (the
    same operations: the resize in float32, rounded to uint8); a GPU's resize may differ from the CPU's in the last
    float bits, enough to move a rare pixel that lies on a rounding boundary by one level.
    """

    preprocess: Preprocess
    backend: str = "auto"
    trimmed30: bool = False
    timeout_s: float = 60.0
    antialias: bool = False
    defer_resize: bool = False

    def __call__(self, path: Path) -> Tensor:
        video = self.decode(path)  # (T, C, H, W) uint8
        return video if self.defer_resize else self.finish(video)

    def decode(self, path: Path) -> Tensor:
        """The sampled frames, uint8 (T, C, H, W) at the video's own size."""
        with deadline(self.timeout_s, str(path)):
            reader = open_video(path, backend=self.backend)
            try:
                n = reader.num_frames
                if self.trimmed30 and reader.fps > 0 and n / reader.fps > TRIM_SECONDS:
                    n = int(TRIM_SECONDS * reader.fps)
                frames = reader.get_batch(self.indices(n))  # (T, H, W, C)
            finally:
                reader.close()
        return to_tchw(np.ascontiguousarray(frames))  # (T, C, H, W) uint8

    def finish(self, video: Tensor) -> Tensor:
        """uint8 (T, C, H, W), on any device -> the model's input, float32 (C, T, S, S) on that device."""
        p = self.preprocess
        if p.resize != "square":
            raise ValueError(f"retrieval clips are resized square, got preprocess.resize = {p.resize!r}")
        return normalize(resize_square(video, p.size, antialias=self.antialias), p.mean, p.std)  # (C, T, S, S)

    def indices(self, n: int) -> list[int]:
        """The frames read from a video of `n` frames."""
        if self.preprocess.sampling == "linspace":
            return linspace_indices(n, self.preprocess.num_frames)
        return interval_indices(n, self.preprocess.num_frames, generator=None)


class ClipBlocks(Dataset):
    """Dataset of one process's blocks: item i is block i, decoded (failures reported, not raised)."""

    def __init__(self, paths: Sequence[Path], blocks: list[list[int]], reader: ClipReader) -> None:
        self.paths, self.blocks, self.reader = paths, blocks, reader

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> tuple[list[int], list[Tensor | None], list[str | None]]:
        videos: list[Tensor | None] = []
        reasons: list[str | None] = []
        for index in self.blocks[i]:
            try:
                videos.append(self.reader(self.paths[index]))
                reasons.append(None)
            except DecodeFailure as failure:  # missing, damaged, too slow: skipped and named, not fatal
                videos.append(None)
                reasons.append(str(failure))  # `reason: path (detail)`
        return self.blocks[i], videos, reasons


@dataclass(frozen=True)
class VideoFeatures:
    """Per video: `tokens` (Nv, N, D) for the fusion layers, `frames` (Nv, T, E) normalised per-frame embeddings;
    `failed` maps an undecodable video's index to why (its rows are zeros)."""

    tokens: Tensor
    frames: Tensor
    failed: dict[int, str]


@dataclass(frozen=True)
class TextFeatures:
    """Per text: `hidden` (Nt, L, Dtxt) text-only states, `mask` (Nt, L), `embeds` (Nt, E) normalised."""

    hidden: Tensor
    mask: Tensor
    embeds: Tensor


def finishing_on(reader: ClipReader, device: torch.device) -> ClipReader:
    """The reader as the decode workers should run it for a model on `device`: on an accelerator the resize and
    normalisation move to it (`clip_batch`); on the CPU they stay in the workers, which run beside the model."""
    if reader.defer_resize or device.type == "cpu":
        return reader
    return replace(reader, defer_resize=True)


def clip_batch(reader: ClipReader, clips: Sequence[Tensor], device: torch.device) -> Tensor:
    """A block's decoded clips as the model's input (b, C, T, S, S) on `device`, finished there if deferred."""
    if reader.defer_resize:
        return torch.stack([reader.finish(clip.to(device, non_blocking=True)) for clip in clips])
    return torch.stack(list(clips)).to(device)


def _as_is(block: object) -> object:
    """A block is collated by `ClipBlocks` itself (a module-level function: workers may be spawned)."""
    return block


def blocks_loader(dataset: Dataset, num_workers: int) -> Iterator:
    """Iterate `ClipBlocks` (decoded in `num_workers` processes): (indices, videos or None, failure reasons)."""
    return iter(DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_as_is))


@torch.no_grad()
def encode_videos(
    model: torch.nn.Module,
    paths: Sequence[Path],
    reader: ClipReader,
    *,
    batch_size: int,
    shard: Shard,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    bar: Progress | None = None,
    num_workers: int = 0,
) -> VideoFeatures:
    """`model.encode_video` over every clip (on CPU afterwards), this process's blocks only, assembled everywhere."""
    blocks = shard.blocks(len(paths), batch_size)
    reader = finishing_on(reader, device)
    rows: list[int] = []
    tokens: list[Tensor] = []
    frames: list[Tensor] = []
    failed: dict[int, str] = {}
    for block, videos, reasons in blocks_loader(ClipBlocks(paths, blocks, reader), num_workers):
        good = [v for v in videos if v is not None]
        failed.update({i: r for i, r in zip(block, reasons) if r is not None})
        if good:
            with autocast():
                out_tokens, out_frames = model.encode_video(clip_batch(reader, good, device))  # (b, N, D), (b, T, E)
            rows += [i for i, v in zip(block, videos) if v is not None]
            tokens.append(out_tokens.float().cpu())
            frames.append(out_frames.float().cpu())
        if bar is not None:
            bar.advance(len(block))
    shapes = _feature_shapes(model, reader.preprocess)
    local_tokens = torch.cat(tokens) if tokens else torch.zeros((0, *shapes[0]))
    local_frames = torch.cat(frames) if frames else torch.zeros((0, *shapes[1]))
    index = torch.tensor(rows, dtype=torch.long)
    all_failed: dict[int, str] = {}
    for part in gather_objects(failed):
        all_failed.update(part)
    return VideoFeatures(
        tokens=_assemble(local_tokens, index, len(paths), device),
        frames=_assemble(local_frames, index, len(paths), device),
        failed=dict(sorted(all_failed.items())),
    )


def _feature_shapes(model: torch.nn.Module, p: Preprocess) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(N, D) and (T, E) of one clip's features, for a process that decoded none."""
    encoder = model.vision_encoder.encoder
    return (encoder.num_tokens, encoder.norm.normalized_shape[0]), (p.num_frames, model.vision_proj.out_features)


def _assemble(local: Tensor, rows: Tensor, total: int, device: torch.device) -> Tensor:
    """Gather rows computed on every process into (total, ...) on the CPU (collectives run on `device`)."""
    return gather_rows(local.to(device), rows.to(device), total).cpu()


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    max_len: int,
    add_sep: bool,
    batch_size: int,
    shard: Shard,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    bar: Progress | None = None,
) -> TextFeatures:
    """`model.encode_text` over every text, this process's blocks only, assembled everywhere (CPU)."""
    rows: list[int] = []
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for block in shard.blocks(len(texts), batch_size):
        batch = tokenize(tokenizer, [texts[i] for i in block], max_len=max_len, add_sep=add_sep).to(device)
        with autocast():
            hidden, embeds = model.encode_text(batch.ids, batch.attention_mask)  # (b, L, Dtxt), (b, E)
        parts.append((hidden.float().cpu(), batch.attention_mask.cpu(), embeds.float().cpu()))
        rows += block
        if bar is not None:
            bar.advance(len(block))
    width, embed = model.text_encoder.hidden_size, model.text_proj.out_features
    hidden = torch.cat([p[0] for p in parts]) if parts else torch.zeros((0, max_len, width))
    mask = torch.cat([p[1] for p in parts]) if parts else torch.zeros((0, max_len), dtype=torch.long)
    embeds = torch.cat([p[2] for p in parts]) if parts else torch.zeros((0, embed))
    index = torch.tensor(rows, dtype=torch.long)
    total = len(texts)
    return TextFeatures(
        hidden=_assemble(hidden, index, total, device),
        mask=_assemble(mask, index, total, device),
        embeds=_assemble(embeds, index, total, device),
    )


def frame_similarity(frames: Tensor, embeds: Tensor) -> Tensor:
    """ITC scores (Nv, Nt): the mean over frames of the cosine of each frame embedding with each text embedding
    (both already l2-normalised; temperature 1, as the official evaluation)."""
    return torch.einsum("vte,ne->vtn", frames, embeds).mean(1)
