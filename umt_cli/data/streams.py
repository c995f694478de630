"""Several corpora at once, as stage 2 trains: whole batches of one corpus and media type, in a seeded order.

Each (corpus, media type) pair is a *stream* with its own dataset, batch size, sampler and loader. An epoch draws
every stream's batches once, in an order that is a seeded permutation of `[stream] x its batch count` — the same on
every process without any communication (upstream shuffles with Python's global RNG and broadcasts it). Resuming
at step s of an epoch restarts each stream after the batches it had given before s, so nothing is decoded twice.

`StreamMixer` is both the sampler and the loader the training engine drives: `set_epoch(epoch, start_step)`, then
iterate the batches from that step on.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from umt_cli.data.datasets import VideoTextDataset
from umt_cli.data.loaders import ShardedSampler, VideoTextBatch
from umt_cli.errors import DataError
from umt_cli.utils.seed import generator_for

__all__ = ["Stream", "StreamBatch", "stream_order", "StreamMixer", "build_streams"]

ORDER_KEY = 0x0DE5
"""Extra seed key that keeps the stream order apart from the samplers' permutations."""


@dataclass(frozen=True)
class Stream:
    """One corpus and media type: its samples, this process's sampler and loader, and where its ids start.

    Attributes:
        name: `corpus/video` or `corpus/image`, for logs and errors.
        dataset: The (clip, caption) pairs of this media type.
        sampler: This process's slice of each global batch.
        loader: Batches of `sampler.batch_size`.
        id_offset: Added to a batch's media indices to give ids unique across corpora (VTC positives).
    """

    name: str
    dataset: VideoTextDataset
    sampler: ShardedSampler
    loader: DataLoader
    id_offset: int

    @property
    def steps_per_epoch(self) -> int:
        """Batches this stream gives in an epoch (the last partial global batch is dropped)."""
        return self.sampler.steps_per_epoch()


@dataclass(frozen=True)
class StreamBatch:
    """A batch and the stream it came from (the engine reads `index` and `failures` as from any batch)."""

    stream: Stream
    batch: VideoTextBatch

    @property
    def index(self) -> torch.Tensor:
        """(B,) sample indices within the stream's dataset."""
        return self.batch.index

    @property
    def failures(self) -> list:
        """Samples replaced while building the batch."""
        return self.batch.failures


def stream_order(steps: Sequence[int], *, seed: int, epoch: int) -> list[int]:
    """The stream of every step of an epoch: stream i appears `steps[i]` times, in a seeded random order.

    Args:
        steps: Batches per epoch of each stream.
        seed: The run's seed.
        epoch: The epoch (each has its own order).
    """
    slots = torch.tensor([i for i, count in enumerate(steps) for _ in range(count)], dtype=torch.long)
    if not len(slots):
        raise DataError("no stream fills one batch: every corpus has fewer samples than its global batch")
    order = torch.randperm(len(slots), generator=generator_for(seed, epoch, ORDER_KEY))
    return slots[order].tolist()


class StreamMixer:
    """Interleaves the streams' batches in `stream_order`, resumable at any step of an epoch."""

    def __init__(self, streams: Sequence[Stream], *, seed: int) -> None:
        if not streams:
            raise DataError("no corpus to train on")
        self.streams, self.seed = list(streams), seed
        self.epoch, self.start_step = 0, 0

    def steps_per_epoch(self) -> int:
        """Batches per epoch over all streams."""
        return sum(stream.steps_per_epoch for stream in self.streams)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch and the step (batch) to start from; every stream skips the batches already given."""
        self.epoch, self.start_step = epoch, start_step
        done = self._order()[:start_step]
        for index, stream in enumerate(self.streams):
            stream.sampler.set_epoch(epoch, done.count(index))

    def _order(self) -> list[int]:
        return stream_order([s.steps_per_epoch for s in self.streams], seed=self.seed, epoch=self.epoch)

    def __iter__(self) -> Iterator[StreamBatch]:
        """The batches from the start step to the end of the epoch; a stream's workers start when first used."""
        iterators: dict[int, Iterator[VideoTextBatch]] = {}
        for index in self._order()[self.start_step :]:
            if index not in iterators:
                iterators[index] = iter(self.streams[index].loader)
            yield StreamBatch(self.streams[index], next(iterators[index]))

    def __len__(self) -> int:
        return self.steps_per_epoch() - self.start_step


def build_streams(
    recipe: object, *, rank: int, world_size: int, status_dir: str | None, pin_memory: bool
) -> list[Stream]:
    """The streams of a pretrain recipe's `[data.corpora]`: one per corpus and media type present in it.

    Ids for VTC start at a different offset per corpus (`loss.vtc.idx_mode = "global"`), so equal ids always mean
    the same media item; each stream's samples are seeded from the run seed and the stream's name.

    Raises:
        UsageError: An annotation file that does not exist or is a folder, named by its recipe key.
    """
    from umt_cli.data.datasets import load_annotations, recipe_clip_loader
    from umt_cli.data.loaders import build_loader
    from umt_cli.data.transforms import build_train_transform
    from umt_cli.errors import UsageError
    from umt_cli.utils.seed import derive_seed

    data, decode, seed = recipe.data, recipe.decode, recipe.run.seed  # type: ignore[attr-defined]
    clips = recipe_clip_loader(recipe, num_frames=recipe.student.num_frames, status_dir=status_dir)
    transform = build_train_transform(recipe.augment, recipe.student.img_size)  # type: ignore[attr-defined]
    streams, offset = [], 0
    for name, corpus in data.corpora.items():
        if not corpus.annotations.is_file():
            problem = "is a folder, not an annotation file" if corpus.annotations.is_dir() else "not found"
            raise UsageError(f"data.corpora.{name}.annotations: {corpus.annotations} {problem}")
        media = load_annotations(corpus.annotations)
        for images in (False, True):
            if not any(entry.is_image == images for entry in media):
                continue
            label = f"{name}/{'image' if images else 'video'}"
            stream_seed = derive_seed(seed, zlib.crc32(label.encode()))
            dataset = VideoTextDataset(
                corpus.annotations,
                corpus.root,
                images=images,
                loader=clips,
                transform=transform,
                seed=stream_seed,
                max_retries=decode.max_retries,
            )
            sampler = ShardedSampler(
                len(dataset), batch_size=corpus.batch_size, seed=stream_seed, rank=rank, world_size=world_size
            )
            loader = build_loader(
                dataset,
                sampler,
                num_workers=data.num_workers,
                prefetch_factor=data.prefetch_factor,
                pin_memory=pin_memory,
                timeout_s=decode.loader_timeout_s,
                persistent=decode.cache_mb > 0,
            )
            streams.append(Stream(label, dataset, sampler, loader, offset))
        offset += len(media)
    return streams
