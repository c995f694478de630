"""Maskers behind one signature, as the registry `umt_cli.variants.MASKERS` names them for `masking.kind`.

A masker gets the token grid (T, H, W), the mask ratio, the teacher's CLS attention and one generator per sample,
and returns which tokens the student sees. Those that ignore the attention (tube, random) still take it, so a stage
never needs to know which kind it runs: adding a masker is one registry entry plus a function of this signature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from umt_cli.masking.functional import attention_visible, invalid_attention_rows, random_visible, tube_visible
from umt_cli.utils.seed import generator_for

__all__ = [
    "MASK_KEY",
    "TokenGrid",
    "MaskDraw",
    "Masker",
    "attention_masker",
    "tube_masker",
    "random_masker",
    "build_masker",
    "build_token_grid",
    "mask_generators",
]

MASK_KEY = 0x6D61736B
"""Extra seed key ("mask") that keeps mask generators apart from the data generators of the same sample."""


class TokenGrid(NamedTuple):
    """The tokens of a clip: T time steps of an H x W grid, in (t, h, w) row-major order."""

    t: int
    h: int
    w: int

    @property
    def hw(self) -> int:
        """Tokens per time step."""
        return self.h * self.w


@dataclass(frozen=True)
class MaskDraw:
    """A batch's visible tokens (B, N) bool, True = kept; and the frames whose attention could not guide the draw
    (non-finite, negative or all-zero rows, sampled uniformly instead; always 0 for maskers that ignore attention)."""

    visible: Tensor
    fallback_rows: int = 0


class Masker(Protocol):
    """The signature every registered masker has."""

    def __call__(
        self, grid: TokenGrid, mask_ratio: float, *, cls_attn: Tensor, generators: Sequence[torch.Generator]
    ) -> MaskDraw:
        """Draw the visible tokens of a batch.

        Args:
            grid: The token grid of one clip.
            mask_ratio: Fraction of tokens hidden from the student, in (0, 1).
            cls_attn: (B, T, HW) the teacher's CLS -> patch attention (the batch's device).
            generators: One generator per sample, on `cls_attn`'s device: a sample's mask depends on it alone.
        """
        ...


def attention_masker(
    grid: TokenGrid, mask_ratio: float, *, cls_attn: Tensor, generators: Sequence[torch.Generator]
) -> MaskDraw:
    """Per frame, `HW - int(HW * mask_ratio)` tokens drawn without replacement in proportion to the attention."""
    fallback = int(invalid_attention_rows(cls_attn).sum())
    return MaskDraw(attention_visible(cls_attn, mask_ratio, generators=generators), fallback)


def tube_masker(
    grid: TokenGrid, mask_ratio: float, *, cls_attn: Tensor, generators: Sequence[torch.Generator]
) -> MaskDraw:
    """One uniform random set of `HW - int(HW * mask_ratio)` positions per sample, kept in every frame."""
    batch = len(generators)
    return MaskDraw(tube_visible(batch, grid.t, grid.hw, mask_ratio, generators=generators, device=cls_attn.device))


def random_masker(
    grid: TokenGrid, mask_ratio: float, *, cls_attn: Tensor, generators: Sequence[torch.Generator]
) -> MaskDraw:
    """A uniform random subset of `N - int(N * mask_ratio)` of the clip's N tokens per sample."""
    batch = len(generators)
    return MaskDraw(random_visible(batch, grid.t, grid.hw, mask_ratio, generators=generators, device=cls_attn.device))


def build_masker(masking: object) -> Callable[..., MaskDraw]:
    """The masker a recipe's `[masking]` table names, with its ratio bound: `(grid, *, cls_attn, generators)`."""
    from umt_cli.variants import MASKERS

    return partial(MASKERS.resolve(masking.kind), mask_ratio=masking.mask_ratio)  # type: ignore[attr-defined]


def build_token_grid(student: object) -> TokenGrid:
    """The token grid masks are drawn on for a recipe's `[student]`: its frames, and its side / its preset's patch
    (the image teacher's grid too, as the recipe checks)."""
    from umt_cli.variants import STUDENT_PRESETS

    side = student.img_size // STUDENT_PRESETS[student.preset]["patch_size"]  # type: ignore[attr-defined]
    return TokenGrid(student.num_frames, side, side)  # type: ignore[attr-defined]


def mask_generators(seed: int, epoch: int, indices: Tensor, device: torch.device) -> list[torch.Generator]:
    """One generator per sample, seeded by (seed, epoch, sample index, `MASK_KEY`): the same sample gets the same
    mask whichever batch or process it lands in."""
    return [generator_for(seed, epoch, int(i), MASK_KEY, device=device) for i in indices]
