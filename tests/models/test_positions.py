"""The `interpolate` position table against an independent NumPy re-implementation of upstream's rule: the sinusoid
of the 8-frame checkpoint grid, bicubic per frame (PyTorch's A = -0.75 kernel, half-pixel centres, clamped borders),
then linear in time (half-pixel centres, clamped at 0), written here axis by axis with explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from umt_cli.models.positions import checkpoint_grid, interpolated_table

A = -0.75  # PyTorch's bicubic coefficient


def reference_sinusoid(n: int, dim: int) -> np.ndarray:
    """Upstream's formula row by row in float64: angle = pos / 10000^(2 floor(j/2) / d); sin on even j, cos on odd."""
    table = np.empty((n, dim))
    for pos in range(n):
        for j in range(dim):
            angle = pos / 10000 ** (2 * (j // 2) / dim)
            table[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table.astype(np.float32)


def cubic_weights(t: float) -> list[float]:
    """Weights of the 4 neighbours (i-1, i, i+1, i+2) at fractional offset t (Keys' cubic convolution)."""

    def near(x: float) -> float:  # |x| <= 1
        return ((A + 2) * x - (A + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Resize one axis with the cubic kernel (align_corners False): source = (i + 0.5) * in / out - 0.5."""
    x = np.moveaxis(x, axis, 0).astype(np.float64)
    length = x.shape[0]
    out = np.zeros((size, *x.shape[1:]))
    for i in range(size):
        src = (i + 0.5) * length / size - 0.5
        base = math.floor(src)
        for offset, weight in zip(range(-1, 3), cubic_weights(src - base)):
            out[i] += weight * x[min(max(base + offset, 0), length - 1)]
    return np.moveaxis(out, 0, axis)


def linear_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Resize one axis linearly (align_corners False): source clamped at 0, right neighbour clamped at the end."""
    x = np.moveaxis(x, axis, 0).astype(np.float64)
    length = x.shape[0]
    out = np.zeros((size, *x.shape[1:]))
    for i in range(size):
        src = max((i + 0.5) * length / size - 0.5, 0.0)
        left = int(src)
        right = min(left + 1, length - 1)
        frac = src - left
        out[i] = (1 - frac) * x[left] + frac * x[right]
    return np.moveaxis(out, 0, axis)


def reference_table(dim: int, source: tuple[int, int, int], target: tuple[int, int, int]) -> np.ndarray:
    t0, h0, w0 = source
    t, h, w = target
    grid = reference_sinusoid(t0 * h0 * w0, dim).reshape(t0, h0, w0, dim)
    if (h, w) != (h0, w0):
        grid = bicubic_axis(bicubic_axis(grid, 1, h), 2, w)  # separable: rows, then columns
    if t != t0:
        grid = linear_axis(grid, 0, t)
    return grid.reshape(1, t * h * w, dim)


@pytest.mark.parametrize(
    ("source", "target", "rows"),
    [
        ((8, 14, 14), (16, 14, 14), 3136),  # 16-frame fine-tuning (f16 files)
        ((8, 14, 14), (8, 24, 24), 4608),  # 384 px (res384 files)
        ((8, 14, 14), (16, 24, 24), 9216),  # both at once
        ((8, 14, 14), (16, 16, 16), 4096),  # 256 px and 16 frames (finetune: the table of another geometry)
        ((8, 14, 14), (4, 7, 7), 196),  # downsampling both axes
        ((8, 16, 16), (12, 16, 16), 3072),  # p = 14 source (2048 rows), 12 frames
    ],
)
def test_matches_independent_reimplementation(source, target, rows):
    dim = 32
    table = interpolated_table(dim, source, target=target)
    assert table.shape == (1, rows, dim) and table.dtype == torch.float32
    expected = reference_table(dim, source, target)
    np.testing.assert_allclose(table.numpy(), expected, atol=2e-6, rtol=0)


def test_same_grid_is_the_plain_sinusoid():
    table = interpolated_table(16, target=(8, 14, 14))  # (1, 1568, 16)
    np.testing.assert_allclose(table[0].numpy(), reference_sinusoid(1568, 16), atol=1e-6, rtol=0)


def test_interpolation_is_not_the_extended_table():
    """16 frames by interpolation differ from the first 3136 rows of a longer 1-D sinusoid (the `extend` rule)."""
    interpolated = interpolated_table(16, target=(16, 14, 14))[0].numpy()
    extended = reference_sinusoid(3136, 16)
    assert np.abs(interpolated - extended).max() > 0.1


def test_more_frames_keep_the_first_and_last_source_frames():
    """With half-pixel centres the first and last output frames sit at or beyond the first and last source frames,
    where the clamped linear rule copies them (a property, not the kernel code)."""
    table = interpolated_table(8, target=(16, 14, 14))[0].reshape(16, 196, 8)
    source = interpolated_table(8, target=(8, 14, 14))[0].reshape(8, 196, 8)
    torch.testing.assert_close(table[0], source[0], atol=1e-7, rtol=0)
    torch.testing.assert_close(table[-1], source[-1], atol=1e-7, rtol=0)
    assert not torch.allclose(table[1], source[0])


def test_checkpoint_grid_is_8_frames_at_224_px():
    assert checkpoint_grid(16) == (8, 14, 14)
    assert checkpoint_grid(14) == (8, 16, 16)
