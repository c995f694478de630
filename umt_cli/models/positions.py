"""Position tables for another token grid than the one a checkpoint was trained on.

The UMT video ViT (Li et al., "Unmasked Teacher", ICCV 2023, https://arxiv.org/abs/2303.16058) adds a fixed 1-D
sinusoid over all tokens (`umt_cli.models.layers.sinusoid_table`). Two rules carry it to other frame counts or sizes
(docs/pitfalls.md on position tables):

- `extend`: regenerate the 1-D sinusoid for the new N (what `VideoViT` and upstream retrieval do);
- `interpolate`: resample the table of the checkpoint geometry (8 frames x (224 / p)^2 tokens) — bicubic per frame
  when the grid differs, then linear in time when the frame count differs — what upstream classification
  fine-tuning does (`single_modality/models/modeling_finetune.py`, `get_sinusoid_encoding_table`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from umt_cli.models.layers import sinusoid_table

__all__ = ["CHECKPOINT_FRAMES", "checkpoint_grid", "interpolated_table"]

CHECKPOINT_FRAMES = 8
"""Frames (temporal tokens) of the geometry every official ViT was pre-trained at."""

CHECKPOINT_SIZE = 224
"""Pixels per side of that geometry."""


def checkpoint_grid(patch_size: int) -> tuple[int, int, int]:
    """The (T, H, W) token grid of the official pre-training geometry: 8 x 14 x 14 for p = 16 (1568 rows), 8 x 16 x 16
    for p = 14 (2048 rows, upstream's `pre_n_position`)."""
    side = CHECKPOINT_SIZE // patch_size
    return (CHECKPOINT_FRAMES, side, side)


def interpolated_table(dim: int, source: tuple[int, int, int] = (8, 14, 14), *, target: tuple[int, int, int]) -> Tensor:
    """The `interpolate` position table: the sinusoid of the `source` grid resampled onto the `target` grid.

    Float32 throughout after the float64 sinusoid, as upstream: first bicubic interpolation of each frame's (H, W)
    plane when the grids differ (align_corners False), then linear interpolation along time when the frame counts
    differ (align_corners False). Equal grids give the plain sinusoid table. Upstream hard-codes a 14 x 14 source
    plane, so its p = 14 path only works at 16 x 16; here the source plane is whatever `source` says.

    Args:
        dim: D, channels.
        source: (T0, H0, W0) tokens of the table to start from (`checkpoint_grid(p)`).
        target: (T, H, W) tokens of the model that uses the table.

    Returns:
        (1, T·H·W, D) float32, rows in (t, h, w) order.
    """
    t0, h0, w0 = source
    t, h, w = target
    table = sinusoid_table(t0 * h0 * w0, dim)  # (1, T0·H0·W0, D)
    if (h, w) != (h0, w0):
        table = _resize_planes(table, (t0, h0, w0), (h, w))  # (1, T0·H·W, D)
    if t != t0:
        table = _resize_time(table, (t0, h, w), t)  # (1, T·H·W, D)
    return table.contiguous()


def _resize_planes(table: Tensor, grid: tuple[int, int, int], size: tuple[int, int]) -> Tensor:
    """Bicubic resize of every frame's plane: (1, T·H0·W0, D) -> (1, T·H·W, D)."""
    frames, h0, w0 = grid
    dim = table.shape[-1]
    planes = table.reshape(frames, h0, w0, dim).permute(0, 3, 1, 2)  # (T, D, H0, W0)
    planes = F.interpolate(planes, size=size, mode="bicubic", align_corners=False)  # (T, D, H, W)
    return planes.permute(0, 2, 3, 1).reshape(1, -1, dim)


def _resize_time(table: Tensor, grid: tuple[int, int, int], frames: int) -> Tensor:
    """Linear resize along time of every (h, w) position's sequence: (1, T0·H·W, D) -> (1, T·H·W, D)."""
    t0, h, w = grid
    dim = table.shape[-1]
    series = table.reshape(t0, h * w, dim).permute(1, 2, 0)  # (HW, D, T0)
    series = F.interpolate(series, size=frames, mode="linear", align_corners=False)  # (HW, D, T)
    return series.permute(2, 0, 1).reshape(1, -1, dim)
