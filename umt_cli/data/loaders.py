"""DataLoaders with a resumable, rank-aware sampler, batch collation, and per-epoch failure accounting."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from umt_cli.data.datasets import ClipSample, VideoTextSample
from umt_cli.data.failures import DataHealth, Failure
from umt_cli.errors import DataError
from umt_cli.utils.seed import generator_for

__all__ = ["ShardedSampler", "ClipBatch", "VideoTextBatch", "collate", "build_loader", "iterate_epoch"]


class ShardedSampler(Sampler):
    """Yields `(epoch, index)` for this rank: each epoch is one seeded permutation cut into global batches of
    `batch_size * world_size`, and rank r takes the r-th slice of every global batch. So the global batch at every
    step is the same whatever the number of processes, and `start_step` resumes mid-epoch without decoding skipped
    samples."""

    def __init__(
        self,
        length: int,
        *,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if length <= 0:
            raise DataError("the data set is empty")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.rank, self.world_size, self.shuffle, self.drop_last = rank, world_size, shuffle, drop_last
        self.epoch, self.start_step = 0, 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def steps_per_epoch(self) -> int:
        """Batches per epoch on each rank."""
        steps = self.length / self.global_batch
        return math.floor(steps) if self.drop_last else math.ceil(steps)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch (its permutation) and the step to start from."""
        self.epoch, self.start_step = epoch, start_step

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start_step": self.start_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(int(state["epoch"]), int(state["start_step"]))

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        return torch.randperm(self.length, generator=generator_for(self.seed, self.epoch, 0x5A3)).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        for step in range(self.start_step, self.steps_per_epoch()):
            first = step * self.global_batch + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                if position < self.length:
                    yield self.epoch, order[position]
                elif not self.drop_last:  # pad the last batch by wrapping, so every rank has equal batches
                    yield self.epoch, order[position % self.length]

    def __len__(self) -> int:
        return (self.steps_per_epoch() - self.start_step) * self.batch_size


@dataclass(frozen=True)
class ClipBatch:
    """Clips: video (B, C, T, H, W), label (B,), index (B,); `failures` replaced while building the batch."""

    video: torch.Tensor
    label: torch.Tensor
    index: torch.Tensor
    failures: list[Failure] = field(default_factory=list)

    def pin_memory(self) -> ClipBatch:
        return ClipBatch(self.video.pin_memory(), self.label, self.index, self.failures)


@dataclass(frozen=True)
class VideoTextBatch:
    """Clip-caption pairs: video (B, C, T, H, W), captions (B strings), media_index (B,), is_image (B,)."""

    video: torch.Tensor
    captions: list[str]
    media_index: torch.Tensor
    is_image: torch.Tensor
    index: torch.Tensor
    failures: list[Failure] = field(default_factory=list)

    def pin_memory(self) -> VideoTextBatch:
        return VideoTextBatch(
            self.video.pin_memory(), self.captions, self.media_index, self.is_image, self.index, self.failures
        )


def collate(samples: list[ClipSample] | list[VideoTextSample]) -> ClipBatch | VideoTextBatch:
    """Stack samples into a batch and gather their failures."""
    failures = [f for s in samples for f in s.failures]
    video = torch.stack([s.video for s in samples])
    index = torch.tensor([s.index for s in samples])
    if isinstance(samples[0], ClipSample):
        return ClipBatch(video, torch.tensor([s.label for s in samples]), index, failures)
    media = torch.tensor([s.media_index for s in samples])
    is_image = torch.tensor([s.is_image for s in samples])
    return VideoTextBatch(video, [s.caption for s in samples], media, is_image, index, failures)


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # decode and transforms are per-sample; more threads only oversubscribe the cores


def build_loader(
    dataset: Dataset,
    sampler: ShardedSampler,
    *,
    num_workers: int = 0,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
    timeout_s: float = 0.0,
    persistent: bool = False,
) -> DataLoader:
    """A DataLoader over `dataset` in `sampler`'s order (batches of `sampler.batch_size`); `persistent` keeps the
    workers (and what they hold, such as a decode cache) from one epoch to the next."""
    extra = {
        "prefetch_factor": prefetch_factor,
        "timeout": timeout_s,
        "worker_init_fn": _worker_init,
        "persistent_workers": persistent,
    }
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=False,
        # Its own generator: each new iterator draws a base seed, which would otherwise advance the global RNG
        # (drop path) and make a resumed run differ from an uninterrupted one.
        generator=torch.Generator().manual_seed(sampler.seed),
        **(extra if num_workers > 0 else {}),
    )


def iterate_epoch(
    loader: DataLoader, health: DataHealth, *, status_dir: str | Path | None = None
) -> Iterator[ClipBatch | VideoTextBatch]:
    """Yield the batches of one epoch, counting bad samples; checks the failure ratio as it goes and at the end."""
    try:
        for batch in loader:
            health.update(len(batch.index), batch.failures)
            health.check()
            yield batch
    except RuntimeError as error:
        if "timed out" not in str(error):
            raise
        raise DataError(f"a data loader worker hung: {_decoding(status_dir)}", hint=_HANG_HINT) from None
    health.check(final=True)


_HANG_HINT = "the file likely hangs the decoder; drop it from the list (`umt prepare-data --verify` finds such files)"


def _decoding(status_dir: str | Path | None) -> str:
    """What each worker was decoding (from the files `ClipLoader` writes), or a generic message."""
    if status_dir is None or not Path(status_dir).is_dir():
        return "no file information (set a status directory to name the file)"
    names = [f"{p.name}: {p.read_text(encoding='utf-8')}" for p in sorted(Path(status_dir).glob("worker-*"))]
    return "; ".join(names) or "no file information"
