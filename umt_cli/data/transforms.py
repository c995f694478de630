"""Video transforms on uint8 `(T, C, H, W)` tensors: one crop and one flip decision for all frames of a clip.

Crops and resizes stay in uint8 (torch's antialiased uint8 resize matches PIL's bilinear resize of the official
pipeline to within one grey level and is several times faster than per-frame PIL); the single float conversion
happens last, fused with normalisation, on the already-small clip. Randomness only from a `torch.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "Normalization",
    "NORMALIZATION",
    "renormalize",
    "to_tchw",
    "resize_square",
    "multiscale_crop_box",
    "random_resized_crop_box",
    "crop_resize",
    "hflip",
    "normalize",
    "resize_short_side",
    "spatial_crops",
    "TrainTransform",
    "EvalTransform",
    "build_train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Normalization(NamedTuple):
    """Per-channel pixel statistics: a frame is fed as `(x / 255 - mean) / std`."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


NORMALIZATION = {"imagenet": Normalization(IMAGENET_MEAN, IMAGENET_STD), "clip": Normalization(CLIP_MEAN, CLIP_STD)}
"""The statistics a recipe can name (`augment.normalize`, `teacher.input_norm`)."""

Box = tuple[int, int, int, int]  # (left, top, width, height)


def to_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) frames -> (T, C, H, W) view (channels-last memory, which the uint8 resize prefers)."""
    video = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    return video.permute(0, 3, 1, 2)


def _choice(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator).item())


def multiscale_crop_box(
    width: int,
    height: int,
    size: int,
    *,
    generator: torch.Generator,
    scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
    max_distort: int = 1,
    fixed_offsets: bool = True,
) -> Box:
    """The official `GroupMultiScaleCrop` box: side lengths `int(min(w, h) * s)` (snapped to `size` within 3 px),
    a (w, h) pair whose scale indices differ by at most `max_distort`, and one of 13 fixed offsets."""
    base = min(width, height)
    sides = [int(base * s) for s in scales]
    snapped = [size if abs(s - size) < 3 else s for s in sides]
    pairs = [(w, h) for i, h in enumerate(snapped) for j, w in enumerate(snapped) if abs(i - j) <= max_distort]
    crop_w, crop_h = pairs[_choice(len(pairs), generator)]
    if not fixed_offsets:
        return _choice(width - crop_w + 1, generator), _choice(height - crop_h + 1, generator), crop_w, crop_h
    w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    i, j = grid[_choice(len(grid), generator)]  # corners, centre, edge midpoints, quarter points (official order)
    return i * w_step, j * h_step, crop_w, crop_h


def random_resized_crop_box(
    width: int,
    height: int,
    *,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """torchvision's `RandomResizedCrop` box: up to 10 draws of area and log-uniform aspect, else a centre crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _choice(width - w + 1, generator), _choice(height - h + 1, generator), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def crop_resize(
    video: torch.Tensor,
    box: Box,
    size: tuple[int, int],
    *,
    mode: Literal["bilinear", "bicubic"] = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Crop `box` from every frame of (T, C, H, W) and resize to `size` (h, w), antialiased unless asked not to (the
    official fine-tuning crop interpolates float frames without it); dtype kept."""
    left, top, w, h = box
    region = video[:, :, top : top + h, left : left + w]  # (T, C, h, w)
    if (h, w) == tuple(size):
        return region
    # uint8: bicubic overshoots, and bilinear without antialias has no uint8 kernel: resize in float, round back
    if video.dtype == torch.uint8 and (mode == "bicubic" or not antialias):
        out = F.interpolate(region.float(), size=size, mode=mode, antialias=antialias, align_corners=False)
        return out.clamp_(0, 255).round_().to(torch.uint8)
    return F.interpolate(region, size=size, mode=mode, antialias=antialias, align_corners=False)


def renormalize(video: torch.Tensor, source: Normalization, target: Normalization) -> torch.Tensor:
    """A (B, 3, T, H, W) clip normalised with `source` -> the same clip normalised with `target`:
    `(x σ_s + μ_s − μ_t) / σ_t` per channel; the clip itself when the two are equal."""
    if source == target:
        return video

    def channels(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=video.dtype, device=video.device).view(1, 3, 1, 1, 1)

    shift = channels(source.mean) - channels(target.mean)
    return (video * channels(source.std) + shift) / channels(target.std)  # (B, 3, T, H, W)


def hflip(video: torch.Tensor) -> torch.Tensor:
    """Mirror every frame of (T, C, H, W) left-right."""
    return video.flip(-1)


def normalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (T, C, H, W) -> float32 (C, T, H, W) `(x / 255 - mean) / std`, laid out for the model, on the input's
    device.

    One channel at a time: each pass reads a strided uint8 plane and writes a contiguous float plane, about four
    times faster than permuting the whole clip to float first.
    """
    out = torch.empty((video.shape[1], video.shape[0], *video.shape[2:]), dtype=torch.float32, device=video.device)
    for c, (m, s) in enumerate(zip(mean, std, strict=True)):
        torch.mul(video[:, c], 1 / (255 * s), out=out[c]).sub_(m / s)
    return out


def resize_short_side(video: torch.Tensor, size: int, *, antialias: bool = False) -> torch.Tensor:
    """Resize (T, C, H, W) so its shorter side is `size` (longer side truncated as the official `Resize` does).

    The official test transform resizes decord arrays with OpenCV's bilinear filter, which does not antialias;
    `antialias=False` keeps that behaviour.
    """
    h, w = video.shape[-2:]
    if min(h, w) == size:
        return video
    oh, ow = (int(size * h / w), size) if w < h else (size, int(size * w / h))
    if video.dtype == torch.uint8 and not antialias:  # uint8 bilinear without antialias is not implemented on CPU
        out = F.interpolate(video.float(), size=(oh, ow), mode="bilinear", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return F.interpolate(video, size=(oh, ow), mode="bilinear", antialias=antialias, align_corners=False)


def resize_square(video: torch.Tensor, size: int, *, antialias: bool = False) -> torch.Tensor:
    """Resize uint8 (T, C, H, W) to exactly `size` x `size`, bicubic, rounded back to uint8: the official retrieval
    test transform (`Resize((size, size), BICUBIC)` on uint8 frames; no antialias in the torchvision it ran with)."""
    if tuple(video.shape[-2:]) == (size, size):
        return video
    out = F.interpolate(video.float(), size=(size, size), mode="bicubic", antialias=antialias, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def spatial_crops(video: torch.Tensor, size: int, num_crops: int) -> list[torch.Tensor]:
    """`num_crops` square crops of side `size` evenly spaced along the longer side (official test views); one crop
    is the centre crop. Input (T, C, H, W) already resized so its shorter side is `size`."""
    h, w = video.shape[-2:]
    long_side = max(h, w)
    if num_crops == 1:
        starts = [(long_side - size) // 2]
    else:
        step = (long_side - size) / (num_crops - 1)
        starts = [int(k * step) for k in range(num_crops)]
    if h >= w:
        return [video[:, :, s : s + size, :size] for s in starts]
    return [video[:, :, :size, s : s + size] for s in starts]


@dataclass(frozen=True)
class TrainTransform:
    """Training clip transform: crop (multi-scale or random-resized) -> flip -> normalise, uint8 until the end."""

    size: int
    crop: Literal["multiscale_crop", "random_resized_crop"] = "multiscale_crop"
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_distort: int = 1
    fixed_offsets: bool = True
    area: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    antialias: bool = True
    flip: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, frames: np.ndarray | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (T, H, W, C) frames -> float32 (C, T, size, size)."""
        video = to_tchw(frames)
        height, width = video.shape[-2:]
        box = self._box(width, height, generator)
        video = crop_resize(video, box, (self.size, self.size), mode=self.interpolation, antialias=self.antialias)
        if self.flip and torch.rand(1, generator=generator).item() < 0.5:
            video = hflip(video)
        return normalize(video, self.mean, self.std)

    def _box(self, width: int, height: int, generator: torch.Generator) -> Box:
        if self.crop == "multiscale_crop":
            return multiscale_crop_box(
                width,
                height,
                self.size,
                generator=generator,
                scales=self.scales,
                max_distort=self.max_distort,
                fixed_offsets=self.fixed_offsets,
            )
        return random_resized_crop_box(width, height, generator=generator, scale=self.area, ratio=self.ratio)


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation transform: short-side resize, centre crop (or `num_crops` views), normalise."""

    size: int
    num_crops: int = 1
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, frames: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (T, H, W, C) -> float32 (C, T, size, size), or (num_crops, C, T, size, size) when num_crops > 1."""
        video = resize_short_side(to_tchw(frames), self.size)
        views = [normalize(v, self.mean, self.std) for v in spatial_crops(video, self.size, self.num_crops)]
        return views[0] if self.num_crops == 1 else torch.stack(views)


def build_train_transform(augment: object, size: int) -> TrainTransform:
    """A `TrainTransform` from a recipe `[augment]` table."""
    crop = augment.crop  # type: ignore[attr-defined]
    mean, std = NORMALIZATION[augment.normalize]  # type: ignore[attr-defined]
    common = {"size": size, "flip": augment.flip, "mean": mean, "std": std}  # type: ignore[attr-defined]
    if crop.kind == "multiscale_crop":
        return TrainTransform(
            crop="multiscale_crop",
            scales=tuple(crop.scales),
            max_distort=crop.max_distort,
            fixed_offsets=crop.fixed_offsets,
            **common,
        )
    return TrainTransform(
        crop="random_resized_crop", area=crop.scale, ratio=crop.ratio, interpolation=crop.interpolation, **common
    )
