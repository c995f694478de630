"""Fine-tuning augmentations of the official classification recipe, built from timm's blocks and made reproducible.

timm's RandAugment, random erasing and Mixup/CutMix draw from Python's, NumPy's and torch's global generators. Each
call here runs them with those generators seeded from an explicit source — the sample's `torch.Generator` (seeded by
seed, epoch and sample index) or the step number — and restores their state afterwards, so the augmentation of a
sample is the same for 0 or 2 workers and for 1 or 2 processes, and a resumed run repeats it.

- `ClipRandAugment`: `rand-m7-n4-mstd0.5-inc1` applied identically to every frame of a clip (the same operations,
  magnitudes and signs: each frame is transformed with the generators in the same state), as the official video
  RandAugment does.
- `ClipErasing`: timm's `RandomErasing` on the clip's (T, C, H, W) frames, which (as upstream, whose code passes the
  frames as a batch) draws an erasing box for each frame.
- `ClipMixup`: timm's `Mixup` (Mixup 0.8 / CutMix 1.0, switch 0.5, batch mode, label smoothing) on (B, C, T, H, W)
  clips, cutting the same box from every frame.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "seeded_global_rngs",
    "generator_seed",
    "check_randaugment",
    "ClipRandAugment",
    "ClipErasing",
    "ClipMixup",
    "FinetuneTransform",
]

RAND_AUGMENT = "rand-m7-n4-mstd0.5-inc1"
"""The official fine-tuning RandAugment policy."""


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Run a block with Python's `random`, NumPy's and torch's global CPU generators seeded by `seed` (timm's
    erasing draws its pixels from torch's); restore all three after."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def generator_seed(generator: torch.Generator) -> int:
    """A seed drawn from a sample's generator (advancing it once)."""
    return int(torch.randint(2**62, (1,), generator=generator).item())


def check_randaugment(policy: str) -> None:
    """Raise ValueError unless timm can build `policy` (its parser only asserts, with no hint)."""
    from timm.data.auto_augment import rand_augment_transform

    try:
        rand_augment_transform(policy, {"translate_const": 100})
    except Exception as error:  # timm asserts on an unknown section and fails on a malformed number
        detail = f": {error}" if str(error) else ""
        raise ValueError(f"{policy!r} is not a timm RandAugment policy{detail} (official: {RAND_AUGMENT!r})") from None


class ClipRandAugment:
    """timm's RandAugment on every frame of a clip with the same draws.

    Args:
        size: The crop side the clip is trained at: translations reach 45 % of it (upstream's `translate_const`).
        policy: A timm RandAugment string (default the official `rand-m7-n4-mstd0.5-inc1`).
    """

    def __init__(self, size: int, policy: str = RAND_AUGMENT) -> None:
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        self.policy = policy
        hparams = {"translate_const": int(size * 0.45), "interpolation": Image.Resampling.BICUBIC}
        self.transform = rand_augment_transform(policy, hparams)

    def __call__(self, frames: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """uint8 (T, H, W, C) frames -> the same, every frame transformed with one draw of operations."""
        from PIL import Image

        seed = generator_seed(generator)
        out = []
        for frame in frames:
            with seeded_global_rngs(seed):  # the same state for every frame: the same ops, magnitudes, signs
                out.append(np.asarray(self.transform(Image.fromarray(frame))))
        return np.stack(out)  # (T, H, W, C)


class ClipErasing:
    """timm's `RandomErasing` (official: probability 0.25, `pixel` mode, one box) on a normalised (C, T, H, W) clip."""

    def __init__(self, probability: float = 0.25, mode: str = "pixel", max_count: int = 1) -> None:
        from timm.data.random_erasing import RandomErasing

        self.erase = RandomErasing(probability, mode=mode, max_count=max_count, num_splits=max_count, device="cpu")

    def __call__(self, clip: Tensor, generator: torch.Generator) -> Tensor:
        """(C, T, H, W) float -> the same, erased in place as upstream (the frames passed as timm's batch)."""
        with seeded_global_rngs(generator_seed(generator)):
            frames = self.erase(clip.transpose(0, 1))  # (T, C, H, W): one box per frame
        return frames.transpose(0, 1)


class ClipMixup:
    """timm's `Mixup` for (B, C, T, H, W) clips: each clip is viewed as a (C·T, H, W) image, so CutMix cuts the same
    box from every frame; seeded per step.

    Args:
        num_classes: Classes of the soft targets.
        mixup, cutmix: The Beta parameters (official 0.8 and 1.0); 0 turns one off.
        switch_prob: Chance of CutMix when both are on (0.5). label_smoothing: 0.1 officially.
    """

    def __init__(
        self, num_classes: int, *, mixup: float = 0.8, cutmix: float = 1.0, switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ) -> None:  # fmt: skip
        from timm.data import Mixup

        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=switch_prob, mode="batch",
                         label_smoothing=label_smoothing, num_classes=num_classes)  # fmt: skip

    def __call__(self, video: Tensor, labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """Mix a batch (an even number of clips, as timm requires) -> (mixed clips, soft targets (B, classes))."""
        b, c, t, h, w = video.shape
        with seeded_global_rngs(seed):
            images, targets = self.mix(video.reshape(b, c * t, h, w), labels)
        return images.view(b, c, t, h, w), targets


class FinetuneTransform:
    """The official fine-tuning view of a clip: RandAugment (one draw for the clip) -> random-resized crop (scale
    0.08-1, ratio 3/4-4/3, the same box for every frame) -> flip (off for SSv2) -> normalise -> random erasing; all
    draws from the sample's generator. With `repeats` > 1 (repeated augmentation, official `num_sample = 2`) the
    decoded frames give that many independent views, stacked: (repeats, C, T, size, size).

    Args:
        size: Output side. randaugment: A timm RandAugment policy, or None. scale, ratio: The crop's area fraction
            and aspect-ratio ranges. flip: Random horizontal flip. erasing: Random-erasing probability (0: off).
        mean, std: Normalisation. repeats: Views per clip.
    """

    def __init__(
        self,
        size: int,
        *,
        randaugment: str | None = RAND_AUGMENT,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        erasing: float = 0.25,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        repeats: int = 1,
    ) -> None:
        from umt_cli.data.transforms import TrainTransform

        self.randaugment = ClipRandAugment(size, randaugment) if randaugment else None
        # Official `random_resized_crop`: float frames, bilinear, no antialias.
        self.crop = TrainTransform(size, crop="random_resized_crop", area=scale, ratio=ratio, flip=flip, mean=mean,
                                   std=std, interpolation="bilinear", antialias=False)  # fmt: skip
        self.erasing = ClipErasing(erasing) if erasing > 0 else None
        self.repeats = repeats

    def __call__(self, frames: np.ndarray, generator: torch.Generator) -> Tensor:
        """uint8 (T, H, W, C) -> float32 (C, T, size, size), or (repeats, C, T, size, size) when repeats > 1."""
        views = [self._view(frames, generator) for _ in range(self.repeats)]
        return views[0] if self.repeats == 1 else torch.stack(views)

    def _view(self, frames: np.ndarray, generator: torch.Generator) -> Tensor:
        if self.randaugment is not None:
            frames = self.randaugment(frames, generator)
        clip = self.crop(frames, generator)  # (C, T, size, size)
        return self.erasing(clip, generator) if self.erasing is not None else clip
