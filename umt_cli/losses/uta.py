"""Unmasked token alignment (UTA): student tokens regress the teacher's features on the visible tokens.

The distances are registered in `umt_cli.variants.UTA_LOSSES` under the recipe's `loss.kind`; their keyword options
are the other keys of the recipe's `[loss]` table (except `weight`).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

__all__ = ["uta_loss", "cosine_distance", "mean_squared_error", "smooth_l1"]


def uta_loss(
    student: Tensor, teacher: Tensor, *, kind: str = "cosine", normalize: bool = False, **options: Any
) -> Tensor:
    """UTA loss between aligned student and teacher tokens, with the distance registered as `kind`.

    Stage 1 normalises in the student head and the teacher (`normalize=False`); stage 2 l2-normalises both sides
    here (`normalize=True`).

    Args:
        student: (K, B, Nv, Ct) student head outputs (any leading shape works).
        teacher: same shape, the teacher targets of the same tokens.
        kind: A name in `UTA_LOSSES`: cosine (official `l2`), mse or smooth_l1.
        normalize: l2-normalise both sides over the last dim first.
        **options: The distance's own options (smooth_l1: `beta`).

    Returns:
        A 0-D tensor.
    """
    from umt_cli.variants import UTA_LOSSES

    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher shapes differ: {tuple(student.shape)} vs {tuple(teacher.shape)}")
    if normalize:
        student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    return UTA_LOSSES.resolve(kind)(student, teacher, **options)


def cosine_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """`mean(2 - 2 <s, t>)` over all leading dims, as upstream computes it; on unit vectors the squared distance."""
    return (2 - 2 * (student * teacher).sum(dim=-1)).mean()


def mean_squared_error(student: Tensor, teacher: Tensor) -> Tensor:
    """Element-wise mean of `(s - t)^2` (equal to the cosine distance / Ct on unit vectors)."""
    return F.mse_loss(student, teacher)


def smooth_l1(student: Tensor, teacher: Tensor, *, beta: float = 1.0) -> Tensor:
    """Element-wise smooth L1 with threshold `beta`."""
    return F.smooth_l1_loss(student, teacher, beta=beta)
