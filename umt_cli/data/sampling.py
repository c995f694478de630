"""Pure frame-index samplers. Randomness comes only from the `torch.Generator` passed in (None = evaluation).

All functions take the video length `n` and the number of frames to draw `t`, and return `t` 0-based indices in
[0, n - 1], ascending (readers decode in one forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "sparse_indices",
    "dense_indices",
    "interval_indices",
    "linspace_indices",
    "segment_view_indices",
    "FrameSampler",
    "build_frame_sampler",
]


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=generator).item())


def sparse_indices(
    n: int, t: int, *, generator: torch.Generator | None, short_video: Literal["faithful", "pad"] = "faithful"
) -> list[int]:
    """TSN sampling (official stage 1): segment `i` of length `n // t` gives frame `i * avg + U{0..avg-1}` in
    training, the segment middle `int(n / t * (i + 0.5))` in evaluation (`generator=None`).

    Videos shorter than `t`: `faithful` returns `t` zeros, as the official loader does (its sorted-random branch is
    unreachable); `pad` spreads the available frames evenly instead.
    """
    if n <= 0 or t <= 0:
        raise ValueError(f"need n > 0 and t > 0, got n={n}, t={t}")
    if generator is None:
        tick = n / t
        return [min(int(tick / 2 + tick * i), n - 1) for i in range(t)]
    average = n // t
    if average > 0:
        return [i * average + _randint(average, generator) for i in range(t)]
    if short_video == "pad":
        return [i * n // t for i in range(t)]
    return [0] * t


def dense_indices(n: int, t: int, stride: int, *, generator: torch.Generator | None) -> list[int]:
    """`t` frames `stride` apart from a random start (training) or centred (evaluation); clamped for short videos."""
    if n <= 0 or t <= 0 or stride <= 0:
        raise ValueError(f"need n, t, stride > 0, got n={n}, t={t}, stride={stride}")
    span = (t - 1) * stride + 1
    room = n - span
    if room <= 0:
        start = 0
    else:
        start = _randint(room + 1, generator) if generator is not None else room // 2
    return [min(start + i * stride, n - 1) for i in range(t)]


def interval_indices(n: int, t: int, *, generator: torch.Generator | None) -> list[int]:
    """Stage-2 sampling (official `get_frame_indices`): `edges = linspace(0, n, min(t, n) + 1)` truncated to int.

    Training draws uniformly in `[edges_i, edges_{i+1} - 2]`, so an interval's last frame is never drawn (kept for
    parity); if an interval holds one frame, the first `t` of a sorted random permutation are used instead.
    Evaluation takes `(edges_i + edges_{i+1} - 1) // 2`. Fewer than `t` frames are padded with the last index.
    """
    if n <= 0 or t <= 0:
        raise ValueError(f"need n > 0 and t > 0, got n={n}, t={t}")
    count = min(t, n)
    step = n / count  # as numpy.linspace computes it (i * step, last edge exact), so the int edges match upstream
    edges = [int(i * step) for i in range(count)] + [n]
    ranges = list(zip(edges[:-1], edges[1:], strict=True))
    if generator is None:
        indices = [(lo + hi - 1) // 2 for lo, hi in ranges]
    elif all(hi - lo >= 2 for lo, hi in ranges):
        indices = [lo + _randint(hi - 1 - lo, generator) for lo, hi in ranges]
    else:
        indices = sorted(torch.randperm(n, generator=generator)[:count].tolist())
    return indices + [indices[-1]] * (t - len(indices))


def linspace_indices(n: int, t: int) -> list[int]:
    """Evenly spaced frames with the first and the last included (t2v_metrics' UMT scores):
    `int(linspace(0, n - 1, min(t, n)))`, padded with the last index when the video has fewer than `t` frames
    (upstream stacks fewer frames than the model takes and fails; padding is what the other protocols do)."""
    if n <= 0 or t <= 0:
        raise ValueError(f"need n > 0 and t > 0, got n={n}, t={t}")
    count = min(t, n)
    if count == 1:
        indices = [0]
    else:  # as numpy.linspace computes it: i * step, the last point exact, truncated toward zero
        step = (n - 1) / (count - 1)
        indices = [int(i * step) for i in range(count - 1)] + [n - 1]
    return indices + [indices[-1]] * (t - count)


def segment_view_indices(n: int, t: int, *, num_clips: int = 1, generator: torch.Generator | None) -> list[list[int]]:
    """Classification sampling (official fine-tuning): `seg = (n - 1) / t`.

    Training (one clip): frame `i` is uniform in `[round(seg * i), round(seg * (i + 1))]`, clamped to `n - 1`.
    Evaluation: clip `c` of `num_clips` takes `round(seg * i) + int(seg / (num_clips + 1) * (c + 1))`.
    Returns `num_clips` lists of `t` indices.
    """
    if n <= 0 or t <= 0 or num_clips <= 0:
        raise ValueError(f"need n, t, num_clips > 0, got n={n}, t={t}, num_clips={num_clips}")
    seg = max(0.0, (n - 1) / t)
    starts = [int(round(seg * i)) for i in range(t + 1)]
    if generator is not None:
        return [[min(lo + _randint(hi - lo + 1, generator), n - 1) for lo, hi in zip(starts, starts[1:])]]
    step = seg / (num_clips + 1)
    return [[min(starts[i] + int(step * (c + 1)), n - 1) for i in range(t)] for c in range(num_clips)]


@dataclass(frozen=True)
class FrameSampler:
    """Frame indices for a video of `n` frames: a recipe's `[sampling]` table bound to a frame count and a mode."""

    kind: Literal["sparse", "dense", "interval", "segment"]
    num_frames: int
    train: bool
    stride: int = 1
    short_video: Literal["faithful", "pad"] = "faithful"

    def __call__(self, n: int, generator: torch.Generator | None) -> list[int]:
        """Indices for one clip; `generator` is used only in training."""
        gen = generator if self.train else None
        if self.kind == "sparse":
            return sparse_indices(n, self.num_frames, generator=gen, short_video=self.short_video)
        if self.kind == "dense":
            return dense_indices(n, self.num_frames, self.stride, generator=gen)
        if self.kind == "segment":  # classification fine-tuning: one clip (evaluation: the first of one view)
            return segment_view_indices(n, self.num_frames, generator=gen)[0]
        return interval_indices(n, self.num_frames, generator=gen)


def build_frame_sampler(sampling: object, num_frames: int, *, train: bool) -> FrameSampler:
    """A `FrameSampler` from a recipe `[sampling]` table (sparse, dense, interval or segment sampling)."""
    return FrameSampler(
        kind=sampling.kind,  # type: ignore[attr-defined]
        num_frames=num_frames,
        train=train,
        stride=getattr(sampling, "stride", 1),
        short_video=getattr(sampling, "short_video", "faithful"),
    )
